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
    from plainnet.engine.recipe import cpu_supports_bf16

    native = cpu_supports_bf16()
    assert choices["native bf16"] == ("yes" if native else "no")
    assert choices["training precision"] == (faster if native else "fp32")  # emulated bf16 is never picked
    assert choices["int8 weights"] == ("7-bit" if int8_pairs_saturate() else "8-bit")
    assert dict(d.versions)["torch"][0].isdigit()


def test_doctor_command_prints_one_screen():
    proc = run_cli("doctor", "--seconds", "0.02")
    assert proc.code == 0, proc.stderr
    assert "GFLOP/s" in proc.stdout and "what plainnet uses here" in proc.stdout and "versions" in proc.stdout
    rates = [float(x) for x in re.findall(r"│\s+([0-9.]+)\s+│\s+[0-9.]+\s+│", proc.stdout)]
    assert len(rates) == 5 and all(r > 0 for r in rates)


def test_doctor_under_an_avx2_cap_reports_no_native_bf16():
    """As ../shared/tools/slow-cpu runs it: oneDNN and ATen capped at AVX2, whatever the CPU has."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "DNNL_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2"}
    proc = subprocess.run([sys.executable, "-m", "plainnet", "doctor", "--seconds", "0.02"], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert re.search(r"native bf16\s*│\s*no", proc.stdout), proc.stdout
    assert re.search(r"training precision\s*│\s*fp32", proc.stdout)
