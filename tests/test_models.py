"""Behaviour every registered model must have, parametrized over ``list_models()``."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from _util import randomize_bn_, rel_error
from plainnet import create_model, list_models, load_weights, reparameterize, verify_equivalence
from plainnet.models import FeatureExtractor, is_deployed

NUM_CLASSES = 10
SIZE = 16  # small_input models at 16 px: every layer still runs, at a quarter of the cost of 32 px


#: One model per structural feature (plain, grouped, SE, VGG-BN, depthwise-separable): the checks that
#: repeat identical code for every variant (a bf16 copy fused again, a file round trip) run on these
#: only; on the 100M-parameter variants they would add a minute and nothing new.
REPRESENTATIVE = {"repvgg_a0", "repvgg_b1g2", "repvgg_d2se", "vgg11_bn", "vgg16_dws"}


@pytest.fixture(scope="module", params=list_models())
def built(request):
    """(name, training-form model with randomized BN statistics) for SIZE px input; built once per model
    for all tests below, which must leave it as they found it."""
    torch.manual_seed(0)
    return request.param, randomize_bn_(create_model(request.param, num_classes=NUM_CLASSES, small_input=True),
                                         torch.randn(8, 3, SIZE, SIZE) * 2 + 0.5)


@pytest.fixture(scope="module")
def fused(built):
    """The re-parameterized copy of :func:`built`, made once per model."""
    return reparameterize(built[1])


def test_forward_shape_finite_and_stage_features(built):
    name, model = built
    model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        out = model(x)
        feats = model.forward_intermediates(x)
        trunk = model.forward_features(x)
    assert out.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out).all()
    assert len(feats) == len(model.feature_info) == 5
    for f, info in zip(feats, model.feature_info):
        assert f.shape[1] == info.num_chs
        assert f.shape[-1] == SIZE // info.reduction
    # small_input (output stride 8) keeps a 16 px image at 2x2 after the trunk; stride 32 would need 32 px.
    assert trunk.shape[1:] == (model.num_features, 2, 2)
    torch.testing.assert_close(feats[-1], trunk)


def test_gradients_reach_every_parameter(built):
    name, model = built
    model = copy.deepcopy(model).train()  # a training-mode forward would move the shared BN statistics
    model.zero_grad(set_to_none=True)
    x, y = torch.randn(4, 3, SIZE, SIZE), torch.arange(4) % NUM_CLASSES
    F.cross_entropy(model(x), y).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None, f"{name}: no gradient for {pname}"
        assert torch.isfinite(p.grad).all(), f"{name}: non-finite gradient for {pname}"
        assert p.grad.abs().sum() > 0, f"{name}: zero gradient for {pname}"


def test_reparameterized_equals_training_form(built, fused):
    name, model = built
    model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    bns_before = sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())
    assert fused is not model, "inplace=False must return a copy"
    assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules()) == bns_before
    assert is_deployed(fused) and not fused.training
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    eq = verify_equivalence(model, fused, x)  # raises past fp32 relative error 1e-5
    assert eq.rel <= 1e-5
    # Idempotent: a second pass changes nothing.
    again = reparameterize(fused)
    with torch.no_grad():
        torch.testing.assert_close(again(x), fused(x), rtol=0, atol=0)

    # bf16: the fused weights stay bf16 (the official code's turn fp32 and the forward fails).
    if name not in REPRESENTATIVE:
        return
    with torch.no_grad():
        ref = model(x)
        fused_bf16 = reparameterize(copy.deepcopy(model).to(torch.bfloat16))
        assert all(p.dtype == torch.bfloat16 for p in fused_bf16.parameters())
        out = fused_bf16(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    assert rel_error(out, ref) < 0.05


def test_fused_checkpoint_loads_strictly_into_deploy_form(built, fused, tmp_path):
    name, model = built
    direct = create_model(name, num_classes=NUM_CLASSES, small_input=True, deploy=True)
    assert set(direct.state_dict()) == set(fused.state_dict())
    report = load_weights(direct, fused.state_dict())
    assert report.converted == []  # same structure: nothing converted, nothing skipped
    x = torch.randn(2, 3, SIZE, SIZE)
    with torch.no_grad():
        torch.testing.assert_close(direct.eval()(x), fused(x), rtol=0, atol=0)
    # From a file, the fused form is recognized from its keys.
    if name not in REPRESENTATIVE:
        return
    path = tmp_path / "fused.pth"
    torch.save(fused.state_dict(), path)
    loaded = create_model(name, num_classes=NUM_CLASSES, small_input=True, weights=path)
    assert is_deployed(loaded)


def test_reset_classifier_and_backbone(built):
    name, model = built
    model.eval()
    x = torch.randn(2, 3, SIZE, SIZE)
    clone = copy.deepcopy(model)
    clone.reset_classifier(3)
    with torch.no_grad():
        assert clone(x).shape == (2, 3)
        pre = clone.forward_head(clone.forward_features(x), pre_logits=True)
        clone.reset_classifier(0)
        torch.testing.assert_close(clone(x), pre)
    assert clone.arch["num_classes"] == 0
    backbone = FeatureExtractor(model, out_indices=(2, 3, 4))
    with torch.no_grad():
        maps = backbone(x)
    assert [m.shape[1] for m in maps] == [i.num_chs for i in model.feature_info[2:]]


@pytest.mark.parametrize("name", list_models())
def test_normal_input_has_strides_2_to_32(name):
    with torch.device("meta"):
        model = create_model(name, num_classes=NUM_CLASSES)
        feats = model.forward_intermediates(torch.empty(1, 3, 224, 224))
        out = model(torch.empty(1, 3, 224, 224))
    assert [i.reduction for i in model.feature_info] == [2, 4, 8, 16, 32]
    assert [f.shape[-1] for f in feats] == [112, 56, 28, 14, 7]
    assert out.shape == (1, NUM_CLASSES)


def test_foreign_models_are_held_not_patched():
    """A torchvision or timm classifier stays the library's module (inside ForeignClassifier): plainnet's
    record of it lives on the wrapper, timm's own pretrained_cfg is left as timm made it, and its
    checkpoints load into the library's model as they are (and old ones, without the prefix, still load)."""
    import timm as _timm

    from plainnet.models import create_model, load_weights
    from plainnet.models.base import classifier_of
    from plainnet.models.foreign import ForeignClassifier

    tv = create_model("torchvision.resnet18", num_classes=3)
    assert isinstance(tv, ForeignClassifier) and type(tv.net).__name__ == "ResNet"
    assert tv.arch["name"] == "torchvision.resnet18" and classifier_of(tv) is tv.net.fc
    assert not hasattr(tv.net, "arch") and not hasattr(tv.net, "classifier_name")
    tm = create_model("timm.resnet18", num_classes=3)
    assert tm.net.pretrained_cfg == _timm.create_model("resnet18", num_classes=3).pretrained_cfg
    assert classifier_of(tm) is tm.net.get_classifier()
    library_keys = tv.net.state_dict()
    again = create_model("torchvision.resnet18", num_classes=3)
    load_weights(again, library_keys)  # a library state dict, no prefix
    head_only = create_model("torchvision.resnet18", num_classes=5)
    report = load_weights(head_only, library_keys, exclude_head=True)  # fine-tuning from it: a new head
    assert report.skipped_head == ["net.fc.bias", "net.fc.weight"]
    assert torch.equal(head_only.net.conv1.weight, tv.net.conv1.weight)
    x = torch.randn(1, 3, 32, 32)
    tv.eval(), again.eval()
    assert torch.equal(tv(x), again(x))
    assert set(tv.state_dict()) == {"net." + k for k in library_keys}
