"""The command line: fast start-up, readable errors, and the inspection commands' output."""

from __future__ import annotations

import subprocess
import sys

from typer.testing import CliRunner

from plainnet.cli import app

runner = CliRunner()


def test_help_starts_without_heavy_imports():
    code = "import sys; import plainnet.cli; print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    help_run = subprocess.run([sys.executable, "-m", "plainnet", "--help"], capture_output=True, text=True)
    assert help_run.returncode == 0 and "models" in help_run.stdout


def test_models_lists_params_and_gmacs():
    result = runner.invoke(app, ["models", "repvgg_a*"])
    assert result.exit_code == 0, result.output
    assert "9,108,968" in result.output and "8,309,384" in result.output and "1.361" in result.output
    assert "vgg16" not in result.output


def test_summary_counts_and_layers():
    result = runner.invoke(app, ["summary", "vgg16", "--num-classes", "3"])
    assert result.exit_code == 0, result.output
    assert "134,272,835 parameters" in result.output
    assert "features.0" in result.output and "classifier.6" in result.output


def test_summary_of_a_torchvision_model_and_a_plainnet_only_option():
    # torchvision's VGG-16 with 3 classes: the same parameter count as plainnet's vgg16 above (torchvision's layout)
    result = runner.invoke(app, ["summary", "torchvision.vgg16", "--num-classes", "3", "--no-layers"])
    assert result.exit_code == 0, result.output
    assert "134,272,835 parameters" in result.output
    proc = subprocess.run([sys.executable, "-m", "plainnet", "summary", "torchvision.resnet18", "--small-input"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "does not take the option(s) small_input" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and len(proc.stderr.strip().splitlines()) == 1
    too_small = subprocess.run([sys.executable, "-m", "plainnet", "summary", "repvgg_a0", "-s", "0"],
                               capture_output=True, text=True)
    assert too_small.returncode == 2 and "cannot run on a 0x0 input" in too_small.stderr
    assert "internal error" not in too_small.stderr


def test_unknown_model_is_one_line_error():
    proc = subprocess.run([sys.executable, "-m", "plainnet", "summary", "vgg17"], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "unknown model 'vgg17'" in proc.stderr and "did you mean" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    no_match = runner.invoke(app, ["models", "resnet*"])
    assert no_match.exit_code == 2
