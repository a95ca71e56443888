"""Shared fixtures and helpers for plainnet's tests."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import FP32, potato_subset  # noqa: E402  (after the path is set)

# Under pytest-xdist (./dev test runs one worker per core), each worker and the CLI processes it starts
# get an equal share of the cores, instead of every one of them claiming all of them.
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ["OMP_NUM_THREADS"] = _threads
    torch.set_num_threads(int(_threads))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.fail(f"shared datasets not found at {DATASETS}: CI must check out ../shared beside the project")
    return DATASETS


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, datasets_dir):
    """The suite's one trained model: RepVGG-A0 on a small real subset of the potato leaves (60 images
    per class split 48/12, 48 px, 10 epochs; ~90% held-out accuracy in ~25 s), as a TrainResult. Every
    test that needs a trained model or a finished run directory shares it; tests must not modify it."""
    import plainnet

    data = potato_subset(tmp_path_factory.mktemp("potato"), datasets_dir, 60)
    runs = tmp_path_factory.mktemp("runs")
    return plainnet.train(data=str(data), model="repvgg_a0", epochs=10, overrides={
        **FP32, "train.runs_dir": str(runs), "train.name": "tiny", "data.image_size": "48",
        "model.output_stride": "16", "augment.preset": "rot", "data.cache_dir": str(runs / "cache")})


@pytest.fixture(scope="session")
def tiny_run(tiny) -> Path:
    """The run directory of :func:`tiny`."""
    return tiny.run_dir
