"""plainnet doctor: measured speeds and the choices they explain."""

from __future__ import annotations

import re

from _util import run_cli
from plainnet.cpu import int8_pairs_saturate
from plainnet.doctor import diagnose


def test_diagnosis_measures_every_form_and_matches_the_automatic_choices():
    d = diagnose(seconds=0.02, rounds=1)
    names = [s.name for s in d.speeds]
    assert len(names) == 5 and any("int8" in n for n in names) and sum("backward" in n for n in names) == 2
    assert all(s.gflops > 0 and s.ms > 0 for s in d.speeds)
    choices = {what: choice for what, choice, _ in d.choices}
    speed = {s.name.split(" (")[0]: s.gflops for s in d.speeds}
    faster = "bf16" if speed["bf16 forward+backward"] > speed["fp32 forward+backward"] else "fp32"
    assert choices["training precision"] == faster
    assert choices["int8 weights"] == ("7-bit" if int8_pairs_saturate() else "8-bit")
    assert dict(d.versions)["torch"][0].isdigit()


def test_doctor_command_prints_one_screen():
    proc = run_cli("doctor", "--seconds", "0.02")
    assert proc.code == 0, proc.stderr
    assert "GFLOP/s" in proc.stdout and "what plainnet uses here" in proc.stdout and "versions" in proc.stdout
    rates = [float(x) for x in re.findall(r"│\s+([0-9.]+)\s+│\s+[0-9.]+\s+│", proc.stdout)]
    assert len(rates) == 5 and all(r > 0 for r in rates)
