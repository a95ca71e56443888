"""Test helpers (imported by test modules)."""

from __future__ import annotations

import contextlib
import io
import pickle
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

#: Tests train in fp32 whatever the CPU, so a CI machine without native bf16 (AVX2) computes what a
#: developer's AVX-512 machine computes; bf16-mixed training has its own test.
#: fp32 and channels_last fixed: tests compare runs, and a measured layout could differ between two runs.
FP32 = {"train.precision": "fp32", "train.channels_last": "true", "train.progress": "false"}


def potato_subset(root: Path, datasets_dir: Path, per_class: int, start: int = 0) -> Path:
    """A real subset of the potato leaves as class folders of symlinks (nothing is copied)."""
    for cls in sorted((datasets_dir / "potato").iterdir()):
        (root / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[start : start + per_class]:
            (root / cls.name / f.name).symlink_to(f)
    return root


def digits_folder(root: Path, per_class: int) -> Path:
    """The first ``per_class`` training digits of each class (scikit-learn's bundled 8x8 images) as a
    class-folder dataset of PNGs: a real dataset small enough for a few-second training run."""
    from PIL import Image

    from plainnet.data.digits import load_digits_arrays

    d = load_digits_arrays()
    for c, name in enumerate(d.classes):
        (root / name).mkdir(parents=True)
        for i, image in enumerate(d.train_images[d.train_labels == c][:per_class]):
            Image.fromarray(image).save(root / name / f"{i}.png")
    return root


@torch.no_grad()
def randomize_bn_(model: nn.Module, x: torch.Tensor | None = None, seed: int = 0) -> nn.Module:
    """Give every BatchNorm non-trivial affine parameters and running statistics, so fusion is tested
    for real (fresh BNs are the identity: mean 0, var 1, gamma 1, beta 0).

    gamma and beta are drawn at random; the running statistics are then measured on random inputs in
    training mode (and the variances widened at random), so they are far from (0, 1) yet keep a deep
    network's activations in range. Purely random statistics make a 40-layer net chaotic, and any two
    float summation orders then disagree by more than the values themselves.
    """
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for m in bns:
        n = m.num_features
        m.weight.copy_((torch.rand(n, generator=g) * 0.7 + 0.3).to(m.weight))
        m.bias.copy_(((torch.rand(n, generator=g) - 0.5) * 0.4).to(m.bias))
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the calibration batches
    if x is None:
        in_chans = getattr(model, "arch", None) and model.arch.get("in_chans") or 3
        x = torch.randn(8, in_chans, 32, 32, generator=g) * 2 + 0.5
    was_training = model.training
    model.train()
    model(x.to(next(model.parameters())))
    model.train(was_training)
    for m in bns:
        m.momentum = 0.1
        # Dead (all-zero after ReLU) channels measure a variance near 0, which in eval mode would divide
        # any later deviation by sqrt(eps); widen every variance a little, at random.
        m.running_var.mul_(1 + torch.rand(m.num_features, generator=g).to(m.running_var)).add_(0.05)
    return model


def rel_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).abs().max() / ref.float().abs().max()).item()


@dataclass(frozen=True)
class CliResult:
    code: int
    stdout: str
    stderr: str


def run_cli(*args) -> CliResult:
    """``plainnet ARGS`` in this process, through the console script's own error boundary
    (``run_app``): the exit code, stdout and stderr a user would see, without paying ~6 s to start a
    new interpreter and import torch and Lightning again. An unexpected exception propagates (and fails
    the test) where the console script would print a traceback. Tests that need a real process (start-up
    imports, kill -9, DDP, a segfault) use ``subprocess``."""
    from plainnet.cli import app
    from plainnet.cli._app import run_app

    out, err = io.StringIO(), io.StringIO()
    argv, sys.argv = sys.argv, ["plainnet", *map(str, args)]
    code = 0
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            run_app(app)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else int(e.code is not None)
    finally:
        sys.argv = argv
    return CliResult(code, out.getvalue(), err.getvalue())


def shared_tiny(where: Path, datasets_dir: Path):
    """Train the suite's shared model (see conftest's ``tiny``) into ``where``, or load it if another
    process of this test run did: a file lock makes the first caller build it and the others wait for
    its result, so pytest-xdist's workers train it once between them."""
    from filelock import FileLock

    import plainnet

    where.mkdir(parents=True, exist_ok=True)
    done = where / "result.pickle"
    with FileLock(where / "build.lock"):
        if done.is_file():
            return pickle.loads(done.read_bytes())  # written below by this test run
        for partial in (where / "potato", where / "runs"):  # left by a build that failed
            shutil.rmtree(partial, ignore_errors=True)
        data = potato_subset(where / "potato", datasets_dir, 60)
        runs = where / "runs"
        result = plainnet.train(data=str(data), model="repvgg_a0", epochs=10, overrides={
            **FP32, "train.runs_dir": str(runs), "train.name": "tiny", "data.image_size": "48",
            "model.output_stride": "16", "augment.preset": "rot", "data.cache_dir": str(runs / "cache")})
        done.with_suffix(".part").write_bytes(pickle.dumps(result))
        done.with_suffix(".part").rename(done)
        return result


if __name__ == "__main__":  # conftest's background build: python _util.py WHERE DATASETS_DIR
    shared_tiny(Path(sys.argv[1]), Path(sys.argv[2]))


def chrome():
    """Headless Chromium through Selenium (the report and the serve page are tested in a real browser)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        pytest.fail("chromium and chromedriver are needed (./dev test installs the Debian packages)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,900"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
