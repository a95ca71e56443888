"""Checkpoints in every dialect, strict loading, wrappers, bad files and pretrained weights offline."""

from __future__ import annotations

import pickle
import re
from pathlib import Path

import pytest
import torch
import torchvision

from _util import randomize_bn_
from plainnet import create_model, load_model, load_weights, reparameterize, save_checkpoint
from plainnet.errors import WeightsError
from plainnet.models import is_deployed


# The official RepVGG repository's names for timm's tensors (read off both repositories' state dicts), written out independently of
# plainnet's converter so the test checks it rather than mirrors it.
OFFICIAL_FROM_TIMM = [
    (r"^stem\.", "stage0."),
    (r"^stages\.0\.", "stage1."),
    (r"^stages\.1\.", "stage2."),
    (r"^stages\.2\.", "stage3."),
    (r"^stages\.3\.", "stage4."),
    (r"conv_kxk", "rbr_dense"),
    (r"conv_1x1", "rbr_1x1"),
    (r"\.identity\.", ".rbr_identity."),
    (r"attn\.fc1", "se.down"),
    (r"attn\.fc2", "se.up"),
    (r"reparam_conv", "rbr_reparam"),
    (r"^head\.fc\.", "linear."),
]


def to_official(sd):
    out = {}
    for k, v in sd.items():
        for pattern, repl in OFFICIAL_FROM_TIMM:
            k = re.sub(pattern, repl, k)
        out[k] = v
    return out


@pytest.fixture(scope="module")
def timm():
    """Only the tests comparing with timm need it (a [test] dependency); the others run without it."""
    return pytest.importorskip("timm", reason="timm is a test dependency ([test] extra); install it to run these")


def timm_model(timm, name):
    torch.manual_seed(0)
    return randomize_bn_(timm.create_model(name, pretrained=False, num_classes=7), torch.randn(4, 3, 64, 64)).eval()


@pytest.mark.parametrize("name", ["repvgg_a0", "repvgg_b1g4", "repvgg_d2se"])
def test_timm_and_official_checkpoints_give_identical_outputs(timm, name):
    ref = timm_model(timm, name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = ref(x)

        ours = create_model(name, num_classes=7, weights=ref.state_dict()).eval()
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)

        # Official training-form keys, wrapped the way DDP training scripts save them.
        official = {"state_dict": {f"module.{k}": v for k, v in to_official(ref.state_dict()).items()}}
        ours = create_model(name, num_classes=7, weights=official).eval()
        assert not is_deployed(ours)
        torch.testing.assert_close(ours(x), expected, rtol=1e-5, atol=1e-5)

        # Deploy form (timm's fused model, in both key dialects): detected from the keys, loaded strictly.
        fused_ref = timm.utils.reparameterize_model(ref)
        fused_expected = fused_ref(x)
        for sd in (fused_ref.state_dict(), to_official(fused_ref.state_dict())):
            ours = create_model(name, num_classes=7, weights=sd).eval()
            assert is_deployed(ours)
            torch.testing.assert_close(ours(x), fused_expected, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused_expected, expected, rtol=1e-4, atol=1e-4)


def test_torchvision_vgg16_bn_identical_outputs():
    torch.manual_seed(0)
    tv = randomize_bn_(torchvision.models.vgg16_bn(num_classes=5)).eval()
    ours = create_model("vgg16_bn", num_classes=5, weights=tv.state_dict()).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(ours(x), tv(x), rtol=0, atol=0)
        # Folded BN: the fused VGG also matches torchvision's output.
        torch.testing.assert_close(reparameterize(ours)(x), tv(x), rtol=1e-5, atol=1e-6)


def test_training_checkpoint_into_deploy_model_is_fused_on_the_way_in():
    train = randomize_bn_(create_model("repvgg_a0", num_classes=4, small_input=True)).eval()
    fused = create_model("repvgg_a0", num_classes=4, small_input=True, deploy=True)
    report = load_weights(fused, train.state_dict())
    assert report.form == "train" and report.converted
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fused.eval()(x), train(x), rtol=1e-5, atol=1e-5)


def test_deploy_checkpoint_into_training_model_reparameterizes_it():
    train = randomize_bn_(create_model("repvgg_a0", num_classes=4, small_input=True)).eval()
    fused_sd = reparameterize(train).state_dict()
    fresh = create_model("repvgg_a0", num_classes=4, small_input=True)
    report = load_weights(fresh, fused_sd)
    assert report.form == "deploy" and is_deployed(fresh)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(fresh(x), train(x), rtol=1e-5, atol=1e-5)


def test_strict_errors_name_the_keys():
    model = create_model("repvgg_a0", num_classes=4, small_input=True)
    sd = model.state_dict()
    missing = {k: v for k, v in sd.items() if k != "stage1.0.rbr_dense.conv.weight"}
    with pytest.raises(WeightsError, match=r"1 missing: stage1\.0\.rbr_dense\.conv\.weight"):
        load_weights(model, missing)
    with pytest.raises(WeightsError, match=r"1 unexpected: extra\.weight"):
        load_weights(model, {**sd, "extra.weight": torch.zeros(1)})
    bad = dict(sd)
    bad["stage0.rbr_dense.conv.weight"] = torch.zeros(48, 3, 5, 5)
    with pytest.raises(WeightsError, match=r"shape mismatch: stage0\.rbr_dense\.conv\.weight \(48, 3, 5, 5\)"):
        load_weights(model, bad)


def test_new_head_for_fine_tuning():
    source = randomize_bn_(create_model("repvgg_a0", num_classes=10, small_input=True))
    target = create_model("repvgg_a0", num_classes=3, small_input=True)
    head_before = target.linear.weight.clone()
    with pytest.raises(WeightsError, match="only the classifier differs.*exclude_head=True"):
        load_weights(target, source.state_dict())
    report = load_weights(target, source.state_dict(), exclude_head=True)
    assert report.skipped_head == ["linear.bias", "linear.weight"]
    torch.testing.assert_close(target.stage4[0].rbr_dense.conv.weight, source.stage4[0].rbr_dense.conv.weight)
    torch.testing.assert_close(target.linear.weight, head_before)


def test_plainnet_checkpoint_round_trip(tmp_path):
    model = randomize_bn_(create_model("vgg11_bn", num_classes=3, small_input=True, head="gap")).eval()
    path = save_checkpoint(model, tmp_path / "ckpt" / "model.pt", classes=["a", "b", "c"])
    assert [p.name for p in path.parent.iterdir()] == ["model.pt"]  # no temporary file left behind
    loaded = load_model(path).eval()
    assert loaded.arch == model.arch
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), model(x), rtol=0, atol=0)
    fused_path = save_checkpoint(reparameterize(model), tmp_path / "fused.pt")
    fused = load_model(fused_path)
    assert is_deployed(fused) and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())


def test_unreadable_files_are_one_line_errors(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(WeightsError, match=r"notes\.pth is not a PyTorch checkpoint file \(neither a zip"):
        create_model("repvgg_a0", weights=text)
    truncated = tmp_path / "trunc.pth"
    torch.save(create_model("repvgg_a0", num_classes=2).state_dict(), truncated)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(WeightsError, match=r"trunc\.pth is not a PyTorch checkpoint file, or it is truncated"):
        create_model("repvgg_a0", weights=truncated)
    evil = tmp_path / "evil.pth"
    evil.write_bytes(pickle.dumps(Path("/etc/passwd")))  # arbitrary objects are refused (weights_only)
    with pytest.raises(WeightsError, match=r"evil\.pth is not a PyTorch checkpoint file"):
        create_model("repvgg_a0", weights=evil)
    with pytest.raises(WeightsError, match="not found"):
        create_model("repvgg_a0", weights=tmp_path / "missing.pth")


def test_pretrained_offline_names_the_file(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsError, match=r"place vgg16-397923af\.pth .* at .*hub/checkpoints/vgg16-397923af\.pth"):
        create_model("vgg16", pretrained=True)
    with pytest.raises(WeightsError, match="no published ImageNet weights for vgg16_dws"):
        create_model("vgg16_dws", pretrained=True)


def test_pretrained_from_hub_cache_with_new_head(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.VGG11_Weights.IMAGENET1K_V1.url
    cached = tmp_path / "hub" / "checkpoints" / Path(url).name
    cached.parent.mkdir(parents=True)
    imagenet = torchvision.models.vgg11()  # stands in for the downloaded file: same keys and shapes
    torch.save(imagenet.state_dict(), cached)
    model = create_model("vgg11", pretrained=True, num_classes=3)
    torch.testing.assert_close(model.features[0].weight, imagenet.features[0].weight)
    torch.testing.assert_close(model.classifier[3].weight, imagenet.classifier[3].weight)
    assert model.classifier[6].out_features == 3


def test_an_interrupted_save_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    from plainnet.files import atomic_torch_save

    path = tmp_path / "last.ckpt"
    atomic_torch_save({"epoch": 1, "w": torch.ones(3)}, path)

    def dies_halfway(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 partial")
        raise KeyboardInterrupt  # what a kill during the write looks like from inside

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        atomic_torch_save({"epoch": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=True)["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind
