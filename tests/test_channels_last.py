"""Regression for the hazard in docs/architecture.md ("Known hazards"): torch 2.14.1 segfaults in the backward of a strided 1x1 conv on
3 input channels in channels_last (RepVGG's stem). plainnet must train with channels_last on anyway.

Run in a subprocess: a segfault would otherwise take the whole test session down.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

TRAIN_STEP = textwrap.dedent(
    """
    import torch, plainnet
    model = plainnet.create_model("repvgg_a0", num_classes=3).to(memory_format=torch.channels_last)
    x = torch.randn(32, 3, 96, 96).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled={bf16}):
        loss = model(x).float().logsumexp(1).mean()
    loss.backward()
    assert model.stage0.rbr_1x1.conv.weight.grad is not None
    print("ok")
    """
)


def run_step(bf16: bool) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TRAIN_STEP.format(bf16=bf16)], capture_output=True, text=True)


def test_repvgg_trains_in_channels_last_fp32():
    proc = run_step(False)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
    assert proc.stdout.strip() == "ok"


def test_repvgg_trains_in_channels_last_bf16():
    proc = run_step(True)
    assert proc.returncode == 0, f"exit {proc.returncode}: {proc.stderr[-500:]}"
