"""Golden structure facts: the RepVGG paper's and torchvision's parameter and MAC counts, and the registry."""

from __future__ import annotations

import pytest
import torch

from plainnet import create_model, list_models, summarize
from plainnet.errors import UnknownModelError
from plainnet.models import register_model

# RepVGG paper, Table (1000 classes, 224x224): train-form params, deploy params, deploy GMACs.
REPVGG_PAPER = {
    "a0": (9_108_968, 8_309_384, 1.361),
    "a1": (14_092_264, 12_789_864, 2.364),
    "a2": (28_210_600, 25_499_944, 5.117),
    "b0": (15_817_960, 14_339_048, 3.058),
    "b1": (57_415_016, 51_829_480, 11.815),
    "b1g2": (45_782_376, 41_360_104, 8.810),
    "b1g4": (39_966_056, 36_125_416, 7.307),
    "b2": (89_022_376, 80_315_112, 18.377),
    "b2g2": (70_846_376, 63_956_712, 13.680),
    "b2g4": (61_758_376, 55_777_512, 11.332),
    "b3": (123_085_288, 110_960_872, 26.209),
    "b3g2": (96_911_848, 87_404_776, 19.446),
    "b3g4": (83_825_128, 75_626_728, 16.064),
    "d2se": (133_334_836, 120_387_572, 32.827),
}
# torchvision: (1000 classes, 3 classes)
TORCHVISION_VGG = {
    "vgg11": (132_863_336, 128_778_627),
    "vgg11_bn": (132_868_840, 128_784_131),
    "vgg13": (133_047_848, 128_963_139),
    "vgg13_bn": (133_053_736, 128_969_027),
    "vgg16": (138_357_544, 134_272_835),
    "vgg16_bn": (138_365_992, 134_281_283),
    "vgg19": (143_667_240, 139_582_531),
    "vgg19_bn": (143_678_248, 139_593_539),
}


def meta_model(name: str, **kw):
    with torch.device("meta"):
        return create_model(name, **kw)


def test_every_variant_is_registered():
    assert {f"repvgg_{v}" for v in REPVGG_PAPER} | set(TORCHVISION_VGG) | {"vgg16_dws"} == set(list_models())
    assert list_models("repvgg_b1*") == ["repvgg_b1", "repvgg_b1g2", "repvgg_b1g4"]


@pytest.mark.parametrize("variant", list(REPVGG_PAPER))
def test_repvgg_matches_paper_params_and_macs(variant):
    train_params, deploy_params, gmacs = REPVGG_PAPER[variant]
    train = summarize(meta_model(f"repvgg_{variant}"), 224)
    fused = summarize(meta_model(f"repvgg_{variant}", deploy=True), 224)
    assert train.params == train_params
    assert fused.params == deploy_params
    # The paper counts conv and FC multiply-adds; its D2se figure excludes the SE layers.
    se_macs = sum(layer.macs for layer in fused.layers if ".se." in layer.name)
    assert round((fused.macs - se_macs) / 1e9, 3) == gmacs


@pytest.mark.parametrize("name", list(TORCHVISION_VGG))
def test_vgg_matches_torchvision_params(name):
    n1000, n3 = TORCHVISION_VGG[name]
    assert summarize(meta_model(name), 224).params == n1000
    assert summarize(meta_model(name, num_classes=3), 224).params == n3


def test_vgg_macs_agree_with_torchvision_model():
    import torchvision

    with torch.device("meta"):
        tv = torchvision.models.vgg16()
    assert summarize(meta_model("vgg16"), 224).macs == summarize(tv, 224).macs


def test_light_heads_and_dws_are_smaller():
    classic = summarize(meta_model("vgg16_bn", num_classes=3), 224)
    slim = summarize(meta_model("vgg16_bn", num_classes=3, head="slim"), 224)
    gap = summarize(meta_model("vgg16_bn", num_classes=3, head="gap"), 224)
    dws = summarize(meta_model("vgg16_dws", num_classes=3, head="gap"), 224)
    convs = sum(layer.params for layer in gap.layers if layer.name.startswith("features"))
    # slim head: 25088*1024 + 1024 + 1024*256 + 256 + 256*3 + 3
    assert slim.params == convs + 25088 * 1024 + 1024 + 1024 * 256 + 256 + 256 * 3 + 3
    assert gap.params == convs + 512 * 3 + 3
    assert classic.params > slim.params > gap.params > dws.params
    assert dws.macs < gap.macs / 5  # depthwise-separable convs cut the conv cost ~8x


def test_unknown_name_suggests_close_matches():
    with pytest.raises(UnknownModelError, match="did you mean.*repvgg_a0"):
        create_model("repvgg_ao")


def test_duplicate_registration_is_an_error():
    with pytest.raises(ValueError, match="already registered"):
        register_model("vgg16", lambda **kw: None, family="vgg")


def test_invalid_head_is_rejected():
    with pytest.raises(ValueError, match="head must be one of"):
        create_model("vgg11", head="wide")
