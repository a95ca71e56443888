"""Shared fixtures and helpers for plainnet's tests."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"

sys.path.insert(0, str(Path(__file__).resolve().parent))


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
def tiny_run(tmp_path_factory, datasets_dir):
    """A 3-class potato model trained on a small real subset (60 images per class, 48 px, 10 epochs,
    ~90%+ held-out accuracy in ~20 s): the run directory."""
    import plainnet

    data = tmp_path_factory.mktemp("potato")
    for cls in sorted((datasets_dir / "potato").iterdir()):
        (data / cls.name).mkdir()
        for f in sorted(cls.iterdir())[:60]:
            (data / cls.name / f.name).symlink_to(f)
    runs = tmp_path_factory.mktemp("runs")
    result = plainnet.train(data=str(data), model="repvgg_a0", epochs=10, overrides={
        "train.progress": "false", "train.runs_dir": str(runs), "train.name": "tiny", "data.image_size": "48",
        "model.output_stride": "16", "augment.preset": "rot", "data.cache_dir": str(runs / "cache")})
    return result.run_dir
