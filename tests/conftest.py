"""Shared fixtures and helpers for plainnet's tests."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
DATASETS = SHARED / "datasets"

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _util import shared_tiny  # noqa: E402  (after the path is set)

# Under pytest-xdist (./dev test runs one worker per core), each worker and the CLI processes it starts
# get an equal share of the cores, instead of every one of them claiming all of them. MKL's own count
# too: with OMP_NUM_THREADS=1 beside an inherited MKL_NUM_THREADS=2 (slow-cpu --cores 2 exports both),
# MKL's second thread made two single-threaded trainings on two cores 2.3x slower each (the README demo
# test took 451 s instead of ~60).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = str(max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"])))
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = _threads
    torch.set_num_threads(int(_threads))


def pytest_collection_modifyitems(config, items):
    """The order pytest-xdist hands tests out in: the long ones first, so the workers end together, and
    those needing the shared trained model (``tiny``) last, so its background build is done by then."""
    items.sort(key=lambda item: ("tiny" in item.fixturenames, item.get_closest_marker("long") is None))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def datasets_dir() -> Path:
    if not DATASETS.is_dir():
        pytest.fail(f"shared datasets not found at {DATASETS}: CI must check out ../shared beside the project")
    return DATASETS


def _xdist_worker() -> str | None:
    return os.environ.get("PYTEST_XDIST_WORKER")


def _tiny_dir(tmp_path_factory) -> Path:
    """Where the shared model lives: the run's base temporary directory, which pytest-xdist's workers
    share (each worker's own base is a subdirectory of it)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if _xdist_worker() else base) / "tiny-model"


@pytest.fixture(scope="session", autouse=True)
def _tiny_in_background(request, tmp_path_factory):
    """Under pytest-xdist, the first worker starts building :func:`tiny` in a subprocess at once, so the
    workers share one build (instead of one each) and the build overlaps their other tests."""
    proc = None
    wanted = any("tiny" in item.fixturenames for item in request.session.items)
    if _xdist_worker() == "gw0" and wanted and DATASETS.is_dir():
        where = _tiny_dir(tmp_path_factory)
        where.mkdir(exist_ok=True)
        with open(where / "build.log", "wb") as log:
            proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("_util.py")), str(where),
                                     str(DATASETS)], stdout=log, stderr=subprocess.STDOUT)
    yield
    if proc is not None:
        proc.wait()


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, datasets_dir):
    """The suite's one trained model: RepVGG-A0 on a small real subset of the potato leaves (60 images
    per class split 48/12, 48 px, 10 epochs; ~90% held-out accuracy in ~25 s), as a TrainResult. Every
    test that needs a trained model or a finished run directory shares it (built once per test run, see
    ``_util.shared_tiny``); tests must not modify it."""
    return shared_tiny(_tiny_dir(tmp_path_factory), datasets_dir)


@pytest.fixture(scope="session")
def tiny_run(tiny) -> Path:
    """The run directory of :func:`tiny`."""
    return tiny.run_dir
