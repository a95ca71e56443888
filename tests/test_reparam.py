"""Re-parameterization beyond the per-model checks: nesting, dtypes, devices, memory format, SE, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from _util import randomize_bn_, rel_error
from plainnet import create_model, reparameterize, verify_equivalence
from plainnet.errors import EquivalenceError
from plainnet.layers import RepVGGBlock, SqueezeExcite, fuse_conv_bn, identity_kernel
from plainnet.models import is_deployed

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def test_fuse_conv_bn_matches_modules():
    conv = nn.Conv2d(4, 6, 3, padding=1, bias=True)
    x = torch.randn(2, 4, 8, 8)
    bn = randomize_bn_(nn.Sequential(conv, nn.BatchNorm2d(6)), x)[1].eval()
    w, b = fuse_conv_bn(conv.weight, conv.bias, bn)
    with torch.no_grad():
        torch.testing.assert_close(nn.functional.conv2d(x, w, b, padding=1), bn(conv(x)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("groups", [1, 2, 4])
def test_identity_kernel_is_identity(groups):
    x = torch.randn(2, 8, 5, 5)
    k = identity_kernel(8, groups, 3)
    torch.testing.assert_close(nn.functional.conv2d(x, k, padding=1, groups=groups), x)


def test_nested_model_is_found_and_left_in_eval_mode():
    inner = randomize_bn_(create_model("repvgg_a0", num_classes=3, small_input=True))
    wrapper = nn.Sequential(nn.Conv2d(3, 3, 1), inner, nn.Softmax(dim=1)).eval()
    fused = reparameterize(wrapper)
    assert not fused.training
    assert all(b.deployed for b in fused.modules() if isinstance(b, RepVGGBlock))
    verify_equivalence(wrapper, fused, torch.randn(2, 3, 32, 32))


def test_inplace_returns_the_same_object():
    model = create_model("repvgg_a0", num_classes=3, small_input=True)
    assert reparameterize(model, inplace=True) is model
    assert is_deployed(model)


def test_d2se_keeps_se_after_fusion():
    model = randomize_bn_(create_model("repvgg_d2se", num_classes=3, small_input=True)).eval()
    fused = reparameterize(model)
    n_se = sum(isinstance(m, SqueezeExcite) for m in model.modules())
    assert n_se == 1 + 8 + 14 + 24 + 1
    assert sum(isinstance(m, SqueezeExcite) for m in fused.modules()) == n_se
    verify_equivalence(model, fused, torch.randn(2, 3, 32, 32))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_dtypes_and_devices_are_preserved(device, dtype):
    model = randomize_bn_(create_model("repvgg_b1g2", num_classes=3, small_input=True)).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
    model = model.to(device=device, dtype=dtype)
    fused = reparameterize(model)
    assert {p.dtype for p in fused.parameters()} == {dtype}
    assert {p.device.type for p in fused.parameters()} == {device}
    with torch.no_grad():
        out = fused(x.to(device=device, dtype=dtype))
    assert out.dtype == dtype
    assert rel_error(out.cpu(), ref) < (1e-5 if dtype == torch.float32 else 5e-2)


def test_channels_last_is_preserved():
    model = create_model("repvgg_a0", num_classes=3, small_input=True).to(memory_format=torch.channels_last)
    fused = reparameterize(model)
    assert fused.stage1[0].rbr_reparam.weight.is_contiguous(memory_format=torch.channels_last)


def test_fusion_is_differentiable():
    block = RepVGGBlock(8, 8)
    w, b = block.fused_kernel()
    (w.sum() + b.sum()).backward()
    assert block.rbr_dense.conv.weight.grad is not None
    assert block.rbr_identity.weight.grad is not None


def test_verify_equivalence_raises_on_difference():
    model = create_model("repvgg_a0", num_classes=3, small_input=True).eval()
    fused = reparameterize(model)
    with torch.no_grad():
        fused.stage2[0].rbr_reparam.weight.mul_(1.01)
    with pytest.raises(EquivalenceError, match="models differ"):
        verify_equivalence(model, fused, torch.randn(2, 3, 32, 32))


def test_deploy_structure_is_built_directly():
    fused = create_model("repvgg_b1g4", deploy=True)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in fused.modules())
    convs = [m for m in fused.modules() if isinstance(m, nn.Conv2d)]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) and c.bias is not None for c in convs)
    assert sorted({c.groups for c in convs}) == [1, 4]


def test_equivalence_is_checked_in_true_fp32_on_cuda():
    """TF32 convolutions (cuDNN's default) differ from fp32 by ~1e-3 on an H100: measured, a fused
    RepVGG-A0 'differed' by 1.3e-3 with TF32 and 1.2e-6 without. The check turns it off, then restores."""
    model = create_model("repvgg_a0", num_classes=3, small_input=True)
    seen = []

    def candidate(x):
        seen.append((torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32))
        return model(x)

    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = True
    try:
        verify_equivalence(model, candidate, torch.randn(2, 3, 32, 32))
        assert seen == [(False, False)]
        assert (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32) == (True, True)
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before
