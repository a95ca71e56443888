"""Published ImageNet weights by name, without the internet: a Hugging Face cache and a torch hub
directory populated by the test (real files in each library's layout) read with the offline switches,
the offline-and-empty error, and a torch hub download from a server on 127.0.0.1 (checksum checked,
nothing partial left in the cache)."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import io
import json
import re
import subprocess
import sys
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
import torchvision

from _util import randomize_bn_, run_cli
from plainnet import create_model, list_models
from plainnet.errors import WeightsError
from plainnet.models import pretrained
from plainnet.models.pretrained import published_names, weight_source

DOC = Path(__file__).parents[1] / "docs" / "pretrained.md"


@pytest.fixture(scope="module")
def timm():
    return pytest.importorskip("timm", reason="timm is a test dependency ([test] extra); install it to run these")


def test_every_model_resolves_to_a_published_source_listed_in_the_docs(timm):
    rows = {m.group(1): (m.group(2), m.group(3)) for m in
            re.finditer(r"^\| `(\w+)` \| <?(\S+?)>? \| `([^`]+)` \|", DOC.read_text(), re.M)}
    assert sorted(rows) == sorted(published_names())
    for name in list_models():
        source = weight_source(name)
        if name == "vgg16_dws":  # plainnet's own depthwise-separable variant: nobody publishes it
            assert source is None and "`vgg16_dws`" in DOC.read_text()
            continue
        assert rows[name] == (source.page, source.filename), name
        if source.kind == "hf":  # the repository timm itself loads for this model, with its preprocessing
            cfg = timm.models.get_pretrained_cfg(source.where.partition("/")[2])
            assert cfg.hf_hub_id == source.where
            assert source.preprocess == {"image_size": cfg.input_size[-1], "crop_ratio": cfg.crop_pct,
                                         "mean": list(cfg.mean), "std": list(cfg.std)}
        elif source.kind == "url":
            weights = getattr(torchvision.models, f"{name.upper()}_Weights").IMAGENET1K_V1
            assert source.where == weights.url and source.preprocess["image_size"] == 224
        else:  # the grouped g2 variants: the official release only, not on the hub
            assert name.endswith("g2") and not timm.list_pretrained(f"{name}*")
            assert source.filename == f"RepVGG-{name[7:].upper().replace('G', 'g')}-train.pth"


def _hf_cache(home: Path, repo_id: str, filename: str, data: bytes) -> None:
    """``data`` as ``filename`` of ``repo_id`` in a Hugging Face cache under ``home`` (HF_HOME): the blob
    under its sha256, a snapshot link to it, and ``refs/main``."""
    sha = hashlib.sha256(data).hexdigest()
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True)
    (repo / "blobs" / sha).write_bytes(data)
    commit = hashlib.sha1(data).hexdigest()
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "snapshots" / commit / filename).symlink_to(Path("../..") / "blobs" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)


OFFLINE_SCRIPT = """
import json, sys, torch
from plainnet import create_model
from plainnet.errors import WeightsError
x = torch.load(sys.argv[1], weights_only=True)
ours = create_model("repvgg_a0", pretrained=True).eval()
three = create_model("repvgg_a0", pretrained=True, num_classes=3)
by_timm = create_model("timm.repvgg_a0", pretrained=True, num_classes=3)
errors = []
for name in ("repvgg_a1", "repvgg_b1g2"):
    try:
        create_model(name, pretrained=True)
    except WeightsError as e:
        errors.append(str(e))
with torch.no_grad():
    torch.save({"ours": ours(x), "timm_stem": by_timm.net.stem.conv_kxk.conv.weight.clone()}, sys.argv[2])
print(json.dumps({"head": three.get_submodule(three.classifier_name).out_features, "cfg": ours.pretrained_cfg,
                  "timm_head": by_timm.get_classifier().out_features, "timm_cfg": by_timm.pretrained_cfg["preprocess"],
                  "errors": errors}))
"""


def test_repvgg_from_a_populated_hugging_face_cache_offline(timm, tmp_path):
    from safetensors.torch import save

    torch.manual_seed(0)
    published = randomize_bn_(timm.create_model("repvgg_a0"), torch.randn(4, 3, 64, 64)).eval()  # timm's layout
    _hf_cache(tmp_path / "hf", "timm/repvgg_a0.rvgg_in1k", "model.safetensors", save(published.state_dict()))
    x = torch.randn(2, 3, 64, 64)
    torch.save(x, tmp_path / "x.pt")
    env = {"HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", "TORCH_HOME": str(tmp_path / "torch"),
           "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", OFFLINE_SCRIPT, str(tmp_path / "x.pt"), str(tmp_path / "out.pt")],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    out = torch.load(tmp_path / "out.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(out["ours"], published(x), rtol=1e-4, atol=1e-4)  # the cached file, converted
        torch.testing.assert_close(out["timm_stem"], published.stem.conv_kxk.conv.weight)
    assert report["head"] == 3 and report["timm_head"] == 3
    assert report["cfg"]["source"] == "https://huggingface.co/timm/repvgg_a0.rvgg_in1k"
    assert report["cfg"]["preprocess"]["image_size"] == 224 and report["cfg"]["preprocess"]["crop_ratio"] == 0.875
    assert report["timm_cfg"]["image_size"] == 224
    not_cached, official = report["errors"]
    for message in report["errors"]:
        assert "\n" not in message and "weights=PATH" in message
    assert "HF_HUB_OFFLINE" in not_cached and "model.safetensors" in not_cached
    assert "https://huggingface.co/timm/repvgg_a1.rvgg_in1k" in not_cached and str(tmp_path / "hf" / "hub") in not_cached
    assert "RepVGG-B1g2-train.pth" in official and "drive.google.com" in official
    assert str(tmp_path / "torch" / "hub" / "checkpoints" / "RepVGG-B1g2-train.pth") in official


def test_official_release_file_placed_in_the_torch_hub_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(0)
    reference = randomize_bn_(create_model("repvgg_b1g2", num_classes=1000), torch.randn(2, 3, 32, 32)).eval()
    placed = tmp_path / "hub" / "checkpoints" / "RepVGG-B1g2-train.pth"
    placed.parent.mkdir(parents=True)
    torch.save(reference.state_dict(), placed)  # plainnet's keys are the official repository's
    model = create_model("repvgg_b1g2", pretrained=True, num_classes=5).eval()
    torch.testing.assert_close(model.stage1[0].rbr_dense.conv.weight, reference.stage1[0].rbr_dense.conv.weight)
    assert model.linear.out_features == 5 and model.pretrained_cfg["file"] == "RepVGG-B1g2-train.pth"


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def web(tmp_path):
    """A static file server on 127.0.0.1 serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    thread.join(10)


def test_torch_hub_download_from_a_local_server_checks_the_checksum(web, tmp_path, monkeypatch):
    root, base = web
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("PLAINNET_PROGRESS", "0")
    torch.manual_seed(0)
    published = torchvision.models.squeezenet1_1()
    buffer = io.BytesIO()
    torch.save(published.state_dict(), buffer)
    data = buffer.getvalue()
    good = f"squeezenet1_1-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    (root / good).write_bytes(data)
    (root / "squeezenet1_1-0badc0de.pth").write_bytes(data)  # its name promises another file
    real, served = pretrained._torchvision, {"file": good}

    def from_local_server(name, library_name):  # torchvision's own entry, pointed at 127.0.0.1
        source = real(name, library_name)
        return dataclasses.replace(source, where=f"{base}/{served['file']}", filename=served["file"])

    monkeypatch.setattr(pretrained, "_torchvision", from_local_server)
    cache = tmp_path / "torch" / "hub" / "checkpoints"

    served["file"] = "squeezenet1_1-0badc0de.pth"
    with pytest.raises(WeightsError, match="does not match its published checksum") as bad:
        create_model("torchvision.squeezenet1_1", pretrained=True, num_classes=3)
    assert "\n" not in str(bad.value)
    assert not cache.exists() or not list(cache.iterdir())  # nothing partial or wrong left in the cache

    served["file"] = "squeezenet1_1-1234abcd.pth"  # not on the server: 404
    with pytest.raises(WeightsError, match=r"cannot download .*squeezenet1_1-1234abcd\.pth") as missing:
        create_model("torchvision.squeezenet1_1", pretrained=True)
    assert "\n" not in str(missing.value) and str(cache / "squeezenet1_1-1234abcd.pth") in str(missing.value)

    served["file"] = good
    model = create_model("torchvision.squeezenet1_1", pretrained=True, num_classes=3)
    assert [p.name for p in cache.iterdir()] == [good]
    torch.testing.assert_close(model.net.features[0].weight, published.features[0].weight)
    assert model.classifier_name == "net.classifier.1" and model.net.classifier[1].out_channels == 3
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 3)
    assert model.pretrained_cfg["preprocess"]["image_size"] == 224
    (root / good).unlink()  # cached now: no second download
    again = create_model("torchvision.squeezenet1_1", pretrained=True, num_classes=3)
    torch.testing.assert_close(again.net.features[0].weight, published.features[0].weight)


def test_a_corrupt_hub_download_is_removed_from_the_cache(tmp_path):
    data = b"not the published bytes"
    blob = tmp_path / "blobs" / ("0" * 64)
    blob.parent.mkdir()
    blob.write_bytes(data)
    link = tmp_path / "model.safetensors"
    link.symlink_to(blob)
    with pytest.raises(WeightsError, match="does not match its published sha256"):
        pretrained._check_hf_blob(link, weight_source("repvgg_a0"))
    assert not blob.exists() and not link.exists()


def test_models_pretrained_lists_every_source():
    out = run_cli("models", "--pretrained")
    assert out.code == 0, out.stderr
    text = re.sub(r"\s+", " ", out.stdout)
    for name in published_names():
        assert f" {name} " in text, name
    assert "vgg16_dws" not in text and "timm.NAME" in text


def test_train_with_imagenet_weights_that_cannot_be_fetched_fails_before_anything_starts(tmp_path, monkeypatch,
                                                                                         datasets_dir):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    out = run_cli("train", "--data", datasets_dir / "potato", "--model", "vgg11", "--model.pretrained", "imagenet",
                  "--runs-dir", tmp_path / "runs")
    assert out.code == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "vgg11-8a719046.pth" in out.stderr and str(tmp_path / "torch" / "hub" / "checkpoints") in out.stderr
    assert not (tmp_path / "runs").exists()  # no run directory, no data read
