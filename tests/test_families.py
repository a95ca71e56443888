"""A model family is what its registry entry declares: a new one trains, evaluates, exports and benches
with no change to plainnet's code, and gets its own recipe hints, not those of a family its name resembles."""

from __future__ import annotations

import json

import pytest

import plainnet
from _util import FP32, digits_folder, run_cli
from plainnet.models import FamilyTraits, traits_of
from plainnet.models import registry
from plainnet.models.vgg import VGG, VGGConfig


@pytest.fixture
def vggnext(monkeypatch):
    """``vggnext_s``: a family whose name starts like VGG's but declares other traits (a GAP head and
    VGG-11-BN's convolutions, a dropout of 0.2), registered for this test only."""
    def builder(deploy: bool = False, **kwargs):
        return VGG(VGGConfig(11, True), deploy=deploy, **{"head": "gap", **kwargs})

    traits = FamilyTraits("vggnext", drop_rate=0.2)
    monkeypatch.setitem(registry._REGISTRY, "vggnext_s", registry.ModelEntry("vggnext_s", builder, "", traits))
    return traits


def test_a_new_family_trains_evaluates_exports_and_benches_from_its_registry_entry(vggnext, tmp_path):
    assert traits_of("vggnext_s") == vggnext
    data = digits_folder(tmp_path / "digits", 30)
    result = plainnet.train(data=str(data), model="vggnext_s", epochs=2, overrides={
        **FP32, "train.runs_dir": str(tmp_path / "runs"), "train.name": "next", "data.cache_dir": str(tmp_path / "c")})
    cfg = result.config
    # Its own traits, not VGG's: the declared dropout, and the BN network's full learning rate (VGG's fully
    # connected head and plain VGG get a tenth of it).
    assert cfg.model.drop_rate == 0.2 and cfg.train.epochs == 2
    assert cfg.optim.lr == pytest.approx(0.1 * cfg.data.batch_size / 64)
    run = result.run_dir

    proc = run_cli("eval", run, "--out", tmp_path / "eval")
    assert proc.code == 0, proc.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["images"] == 60 and 0.0 <= metrics["top1"] <= 1.0 and (tmp_path / "eval" / "gradcam.png").is_file()

    proc = run_cli("export", run, "-o", tmp_path / "next.onnx")
    assert proc.code == 0 and (tmp_path / "next.onnx").is_file(), proc.stderr

    proc = run_cli("bench", "vggnext_s", "--batch", "1", "--size", "32", "--rounds", "1", "--seconds", "0.05",
                   "--out", tmp_path / "bench")
    assert proc.code == 0, proc.stderr
    (row,) = json.loads((tmp_path / "bench" / "bench.json").read_text())
    assert row["model"] == "vggnext_s" and row["images_per_s"] > 0


def test_registering_traits_of_another_family_is_refused():
    with pytest.raises(ValueError, match="traits of family 'vgg'"):
        plainnet.models.register_model("repvgg_x", lambda **kw: None, family="repvgg", traits=FamilyTraits("vgg"))
