"""RepVGG's online training form (branches merged into one 3x3 kernel per step)."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import plainnet
from _util import FP32, randomize_bn_
from plainnet.errors import ConfigError
from plainnet.layers import OnlineRepVGGBlock, RepVGGBlock, identity_kernel
from plainnet.layers.online import _MergedConv
from plainnet.models import is_deployed, load_weights

#: One of each kind: A, B, grouped (g4), and D2se (squeeze-excitation).
VARIANTS = ["repvgg_a0", "repvgg_b0", "repvgg_b1g4", "repvgg_d2se"]


def online(name: str) -> torch.nn.Module:
    return plainnet.create_model(name, num_classes=5, small_input=True, train_form="online")


@pytest.mark.parametrize("name", VARIANTS)
def test_each_block_is_one_conv_with_its_merged_kernel(name):
    """In every block of the model: conv(x, s3*W3 + pad(s1*W1) + si*I), computed here from the raw
    parameters, then the block's BN, SE and activation, gives the block's output."""
    torch.manual_seed(0)
    model = online(name).eval()
    blocks = [m for m in model.modules() if isinstance(m, OnlineRepVGGBlock)]
    assert len(blocks) == sum(isinstance(m, RepVGGBlock) for m in plainnet.create_model(
        name, num_classes=5, small_input=True).modules())
    assert any(b.groups > 1 for b in blocks) == name.endswith("g4")
    with torch.no_grad():
        for b in blocks:
            torch.nn.init.normal_(b.scale_3x3), torch.nn.init.normal_(b.scale_1x1)
            if b.scale_identity is not None:
                torch.nn.init.normal_(b.scale_identity)
        randomize_bn_(model, torch.randn(4, 3, 32, 32))
    seen = {}
    hooks = [b.register_forward_hook(lambda m, i, o: seen.update({m: (i[0], o)})) for b in blocks]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
        for h in hooks:
            h.remove()
        for b in blocks:
            x, out = seen[b]
            kernel = b.weight_3x3 * b.scale_3x3[:, None, None, None]
            kernel[:, :, 1:2, 1:2] += b.weight_1x1 * b.scale_1x1[:, None, None, None]
            if b.scale_identity is not None:
                kernel += identity_kernel(b.out_chs, b.groups) * b.scale_identity[:, None, None, None]
            expected = b.nonlinearity(b.se(b.bn(F.conv2d(x, kernel, None, b.stride, 1, 1, b.groups))))
            torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", VARIANTS)
def test_fusion_is_exact_and_gives_the_standard_deploy_structure(name):
    torch.manual_seed(0)
    model = online(name)
    randomize_bn_(model, torch.randn(4, 3, 32, 32))
    fused = plainnet.reparameterize(model)
    assert is_deployed(fused) and not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
    x = torch.randn(2, 3, 32, 32)
    assert plainnet.verify_equivalence(model, fused, x).rel <= 1e-5
    standard = plainnet.reparameterize(plainnet.create_model(name, num_classes=5, small_input=True))
    assert {k: v.shape for k, v in fused.state_dict().items()} == {k: v.shape for k, v in standard.state_dict().items()}


def test_gradients_reach_every_branch_parameter_and_match_autograd():
    torch.manual_seed(0)
    model = online("repvgg_a0").train()
    F.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.arange(4)).backward()
    for pname, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, pname
    assert any(n.endswith("scale_identity") for n, _ in model.named_parameters())
    # The hand-written backward (it rebuilds the kernel instead of storing it) against autograd's own.
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64, requires_grad=True)
    params = [torch.randn(4, 2, 3, 3), torch.randn(4, 2, 1, 1), torch.randn(4), torch.randn(4), torch.randn(4)]
    params = [p.double().requires_grad_() for p in params]
    for stride, identity in ((1, True), (2, False)):
        args = (x, *params[:4], params[4] if identity else None)
        assert torch.autograd.gradcheck(lambda *a, s=stride: _MergedConv.apply(*a, s, 2), args)


def _plain_bn_relu(model):
    """``model`` with the blocks' fused BN+ReLU switched off (autograd's own BatchNorm and ReLU)."""
    for m in model.modules():
        if isinstance(m, OnlineRepVGGBlock):
            m._bn_relu_fusable = lambda: False
    return model


@pytest.mark.parametrize("channels_last", [False, True])
def test_fused_bn_relu_trains_exactly_like_batchnorm_then_relu(channels_last):
    """Recomputing each block's output from its BN input (instead of keeping it) changes nothing: the
    same loss, gradients for every parameter and input, and running statistics, in float64."""
    torch.manual_seed(0)
    fused = online("repvgg_a0").double().train()
    randomize_bn_(fused, torch.randn(4, 3, 32, 32, dtype=torch.float64))
    fused.train()
    plain = _plain_bn_relu(copy.deepcopy(fused))
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    fused, plain = fused.to(memory_format=fmt), plain.to(memory_format=fmt)
    x = torch.randn(4, 3, 32, 32, dtype=torch.float64).contiguous(memory_format=fmt)
    xs = [x.clone().requires_grad_(), x.clone().requires_grad_()]
    for model, xi in zip((fused, plain), xs):
        loss = F.cross_entropy(model(xi), torch.arange(4))
        loss.backward(retain_graph=True)
        loss.backward()  # a second backward through the same graph rebuilds the outputs again
    torch.testing.assert_close(xs[0].grad, xs[1].grad)
    for (name, a), b in zip(fused.named_parameters(), plain.parameters()):
        torch.testing.assert_close(a.grad, b.grad, msg=name)
    for (name, a), b in zip(fused.named_buffers(), plain.buffers()):
        torch.testing.assert_close(a, b, msg=name)


def test_training_keeps_one_activation_per_block():
    """Autograd keeps one activation-sized tensor per online block (the BN input; the block's output is
    rebuilt from it), as for the fused network, against three per block in the standard form."""
    def activations_kept(model, x):
        sizes, params = {}, {p.data_ptr() for p in model.parameters()}

        def pack(t):
            if t.data_ptr() not in params and t.dim() == 4:  # activations (not kernels, not statistics)
                sizes[t.untyped_storage().data_ptr()] = t.shape
            return t
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x).sum().backward()
        return len(sizes)

    def blocks(model):
        return sum(isinstance(m, (OnlineRepVGGBlock, RepVGGBlock)) for m in model.modules())

    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    std = plainnet.create_model("repvgg_a0", num_classes=5, small_input=True).train()
    model, deploy = online("repvgg_a0").train(), plainnet.reparameterize(copy.deepcopy(std)).train()
    n = blocks(model)
    assert activations_kept(model, x) == activations_kept(deploy, x) <= n + 1  # + the input image
    assert activations_kept(_plain_bn_relu(copy.deepcopy(model)), x) >= 2 * n
    assert activations_kept(std, x) >= 3 * n


def test_online_bf16_autocast_runs_in_bf16_and_keeps_fp32_gradients():
    torch.manual_seed(0)
    block = OnlineRepVGGBlock(16, 16)
    x = torch.randn(2, 16, 8, 8, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = block(x)
    assert y.dtype == torch.bfloat16
    y.float().sum().backward()
    assert x.grad.dtype == torch.float32 and block.weight_3x3.grad.dtype == torch.float32
    reference = block(x.detach())
    assert (y.float() - reference).abs().max() < 0.1 * reference.abs().max()


def test_no_activation_outlives_the_backward_pass_that_needs_it():
    """The graph (still referenced by ``loss``) keeps no block input once backward is done: the only
    references to them were autograd's saved tensors, which backward frees (a strong reference held
    elsewhere had kept every block's BN input to the end of the backward pass, raising its peak)."""
    torch.manual_seed(0)
    model = online("repvgg_a0").train()
    recomputes = []
    for block in model.modules():
        if isinstance(block, OnlineRepVGGBlock):
            block.register_forward_hook(lambda m, i, out: recomputes.append(out.plainnet_recompute))
    loss = model(torch.randn(2, 3, 32, 32)).sum()
    assert len(recomputes) == sum(isinstance(m, OnlineRepVGGBlock) for m in model.modules())
    loss.backward()
    assert all(r.c is None and r.output is None for r in recomputes)


@pytest.mark.parametrize("bf16", [False, True])
def test_the_rebuilt_block_output_is_the_forward_output_in_its_dtype(bf16):
    """What backward rebuilds in place of the kept output matches it, and under bf16 stays bf16."""
    torch.manual_seed(0)
    block = OnlineRepVGGBlock(16, 16).train().to(memory_format=torch.channels_last)
    x = (3 * torch.randn(4, 16, 12, 12) + 1).contiguous(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        y = block(x)
    rebuilt = y.plainnet_recompute.rebuild(y.plainnet_recompute.c)
    assert rebuilt.dtype == y.dtype == (torch.bfloat16 if bf16 else torch.float32)
    torch.testing.assert_close(rebuilt, y)


def test_online_checkpoints_reload_strictly_and_report_their_form(tmp_path):
    torch.manual_seed(0)
    model = online("repvgg_a0")
    randomize_bn_(model, torch.randn(4, 3, 32, 32))
    path = plainnet.save_checkpoint(model.eval(), tmp_path / "online.pt", classes=list("abcde"))
    loaded = plainnet.load_model(path)
    assert isinstance(loaded.stage1[0], OnlineRepVGGBlock) and loaded.arch["train_form"] == "online"
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x), rtol=0, atol=0)
    standard = plainnet.create_model("repvgg_a0", num_classes=5, small_input=True)
    report = load_weights(standard, model.state_dict())  # converted (exact: the test below), and said so
    assert report.converted == ["online-form checkpoint converted to the standard form"]
    with pytest.raises(plainnet.errors.WeightsError, match="does not match"):  # another variant's: still refused
        load_weights(standard, online("repvgg_a1").state_dict())


def test_train_form_is_checked():
    with pytest.raises(ConfigError, match="train_form must be one of standard, online"):
        plainnet.create_model("repvgg_a0", train_form="merged")
    with pytest.raises(ConfigError, match="model.train_form online: vgg11_bn trains in the standard form only"):
        plainnet.train(data="digits", model="vgg11_bn", epochs=1, overrides={"model.train_form": "online"})


def test_a_real_training_run_in_the_online_form(tmp_path):
    """Digits, 3 epochs: learns well above chance, the run records the form, and the best checkpoint
    fuses to a deploy model that predicts the same."""
    result = plainnet.train(data="digits", model="repvgg_a0", epochs=3, overrides={
        **FP32, "train.seed": "0", "train.runs_dir": str(tmp_path), "model.train_form": "online"})
    assert result.config.model.train_form == "online"
    assert result.final["val"]["acc"] > 0.5  # 10 classes
    model = plainnet.load_model(result.best_checkpoint).eval()
    assert any(isinstance(m, OnlineRepVGGBlock) for m in model.modules())
    x = torch.randn(4, 3, 8, 8)
    assert plainnet.verify_equivalence(model, plainnet.reparameterize(model), x).rel <= 1e-5


@pytest.mark.parametrize("name", ["repvgg_a0", "repvgg_d2se"])
def test_the_standard_form_computes_the_same_and_prunes(name):
    """An online model converts exactly to the standard form, which is what structured pruning takes:
    pruning an online model works and the pruned model still fuses exactly."""
    from plainnet.compress.prune import structured_prune
    from plainnet.models.reparam import to_standard_form

    torch.manual_seed(0)
    model = online(name)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 1:
                p.normal_()  # scales and BN affine parameters away from their initial values
    randomize_bn_(model, torch.randn(4, 3, 32, 32))
    x = torch.randn(2, 3, 32, 32)
    converted = copy.deepcopy(model)
    assert to_standard_form(converted) == sum(isinstance(m, OnlineRepVGGBlock) for m in model.modules())
    assert not any(isinstance(m, OnlineRepVGGBlock) for m in converted.modules())
    assert converted.arch["train_form"] == "standard"
    assert plainnet.verify_equivalence(model, converted, x).rel <= 1e-5
    if name == "repvgg_a0":
        pruned = structured_prune(model, 0.25, torch.randn(1, 3, 32, 32))
        assert sum(p.numel() for p in pruned.parameters()) < sum(p.numel() for p in converted.parameters())
        assert plainnet.verify_equivalence(pruned, plainnet.reparameterize(pruned), x).rel <= 1e-5


@pytest.mark.parametrize("name", VARIANTS)
def test_standard_form_weights_start_an_online_model_computing_the_same(name, tmp_path):
    """Standard-form weights (ImageNet's, a checkpoint) load into an online-form model through the
    exact eval-mode conversion (branch BN gains -> branch scales, their shifts -> the block's BN)."""
    from plainnet.models.reparam import to_standard_form

    torch.manual_seed(0)
    standard = plainnet.create_model(name, num_classes=5, small_input=True)
    with torch.no_grad():
        for p in standard.parameters():
            if p.dim() == 1:
                p.normal_()  # BN affine parameters away from their initial values
    randomize_bn_(standard, torch.randn(4, 3, 32, 32))
    torch.save(standard.state_dict(), tmp_path / "standard.pt")
    model = plainnet.create_model(name, num_classes=5, small_input=True, train_form="online",
                                  weights=tmp_path / "standard.pt")
    assert model.arch["train_form"] == "online" and model.train_form == "online"
    assert not any(type(m) is RepVGGBlock for m in model.modules())
    x = torch.randn(2, 3, 32, 32)
    assert plainnet.verify_equivalence(standard.eval(), model.eval(), x).rel <= 1e-5
    assert plainnet.verify_equivalence(standard, plainnet.reparameterize(model), x).rel <= 1e-5
    back = copy.deepcopy(model)
    to_standard_form(back)
    assert plainnet.verify_equivalence(standard, back.eval(), x).rel <= 1e-5
    model.train()(x).sum().backward()  # and it trains: every branch parameter gets a gradient
    assert all(p.grad is not None for n, p in model.named_parameters() if "scale_" in n or "weight_" in n)


def test_online_form_weights_load_into_a_standard_model_computing_the_same(tmp_path):
    """The inverse load: an online-form checkpoint (what the recipe trains on a CPU) into a standard-form
    model, e.g. fine-tuning it with the standard form, through the exact eval-mode conversion."""
    torch.manual_seed(0)
    trained = online("repvgg_a0")
    with torch.no_grad():
        for p in trained.parameters():
            if p.dim() == 1:
                p.normal_()  # scales and BN affine parameters away from their initial values
    randomize_bn_(trained, torch.randn(4, 3, 32, 32))
    torch.save(trained.state_dict(), tmp_path / "online.pt")
    standard = plainnet.create_model("repvgg_a0", num_classes=5, small_input=True, weights=tmp_path / "online.pt")
    assert standard.train_form == "standard" and not any(isinstance(m, OnlineRepVGGBlock) for m in standard.modules())
    x = torch.randn(2, 3, 32, 32)
    assert plainnet.verify_equivalence(trained.eval(), standard.eval(), x).rel <= 1e-5
    fused = plainnet.create_model("repvgg_a0", num_classes=5, small_input=True, deploy=True,
                                  weights=tmp_path / "online.pt")  # and fused on the way in
    assert plainnet.verify_equivalence(trained, fused, x).rel <= 1e-5
