"""VGG-11/13/16/19 (with and without BatchNorm), lighter heads, and a depthwise-separable VGG-16.

"Very Deep Convolutional Networks for Large-Scale Image Recognition", Simonyan & Zisserman, ICLR 2015,
arXiv:1409.1556. BN variants as in torchvision. Depthwise-separable units from MobileNets
(arXiv:1704.04861).

Layer configurations are data (:data:`VGG_LAYERS`); one :class:`VGG` class builds them all. Module
names and order match torchvision (``features.N``, ``avgpool``, ``classifier.N``), so torchvision
state dicts load strictly with the default classic head and parameter counts are identical.

Heads (``head=``): ``classic`` (4096-4096, dropout), ``slim`` (1024-256, dropout), ``gap`` (global
average pool + one Linear). ``output_stride=16`` removes the first max-pool, ``8`` (or
``small_input=True``) the first two, so 32 px input ends at 2x2 or 4x4 instead of 1x1; such models pool
to 1x1 before a classic or slim head.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ..config import CHOICES
from ..layers import DepthwiseSeparableConv, Reparameterizable, fold_conv_bn_sequence
from .base import FeatureInfo, PlainClassifier, skipped_downsamplings
from .registry import FamilyTraits, register_model

__all__ = ["VGG", "VGGConfig", "VGG_LAYERS"]

M = "M"  # a 2x2 max-pool
VGG_LAYERS: dict[int, tuple[int | str, ...]] = {
    11: (64, M, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    13: (64, 64, M, 128, 128, M, 256, 256, M, 512, 512, M, 512, 512, M),
    16: (64, 64, M, 128, 128, M, 256, 256, 256, M, 512, 512, 512, M, 512, 512, 512, M),
    19: (64, 64, M, 128, 128, M, 256, 256, 256, 256, M, 512, 512, 512, 512, M, 512, 512, 512, 512, M),
}
HEADS = tuple(h for h in CHOICES["model.head"] if h)  # ("": the model's default head)
_HEAD_HIDDEN = {"classic": (4096, 4096), "slim": (1024, 256), "gap": ()}


@dataclass(frozen=True)
class VGGConfig:
    depth: int
    batch_norm: bool = False
    depthwise: bool = False


class VGG(PlainClassifier, Reparameterizable):
    """A VGG network. ``reparameterize()`` folds every BatchNorm into the conv before it."""

    def __init__(
        self,
        cfg: VGGConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        head: str = "classic",
        drop_rate: float = 0.5,
        small_input: bool = False,
        output_stride: int | None = None,
        deploy: bool = False,
        norm_layer=nn.BatchNorm2d,
        act_layer=partial(nn.ReLU, inplace=True),
    ) -> None:
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"head must be one of {HEADS}, got {head!r}")
        self.cfg, self.num_classes, self.head = cfg, num_classes, head
        self.deployed = deploy or not cfg.batch_norm
        layers: list[nn.Module] = []
        self._stage_ends: list[int] = []
        self.feature_info = []
        skipped = skipped_downsamplings(small_input, output_stride)
        chs, reduction, pools_seen, first_conv = in_chans, 1, 0, True
        for v in VGG_LAYERS[cfg.depth]:
            if v == M:
                skip = pools_seen < skipped
                layers.append(nn.Identity() if skip else nn.MaxPool2d(2, 2))
                pools_seen += 1
                reduction *= 1 if skip else 2
                self._stage_ends.append(len(layers))
                self.feature_info.append(FeatureInfo(chs, reduction, f"features.{len(layers) - 1}"))
            elif cfg.depthwise and not first_conv:  # the first conv stays full, as in MobileNet
                layers.append(
                    DepthwiseSeparableConv(chs, v, norm_layer=norm_layer, act_layer=act_layer, deploy=deploy)
                )
                chs = v
            else:
                first_conv = False
                layers.append(nn.Conv2d(chs, v, 3, padding=1))
                if cfg.batch_norm:
                    layers.append(nn.Identity() if deploy else norm_layer(v))
                layers.append(act_layer())
                chs = v
        self.features = nn.Sequential(*layers)
        self.num_features = chs

        pool = 1 if head == "gap" or skipped else 7
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        head_layers: list[nn.Module] = []
        width = chs * pool * pool
        for hidden in _HEAD_HIDDEN[head]:
            head_layers += [nn.Linear(width, hidden), nn.ReLU(True), nn.Dropout(drop_rate)]
            width = hidden
        self._head_width = width
        head_layers.append(nn.Linear(width, num_classes) if num_classes > 0 else nn.Identity())
        self.classifier = nn.Sequential(*head_layers)
        self.classifier_name = f"classifier.{len(head_layers) - 1}"
        self._init_weights()

    def _init_weights(self) -> None:
        # He (fan-in) initialization of every conv and hidden Linear keeps the activations' scale through
        # the 16-19 ReLU layers, so even VGG without BN starts learning under SGD. torchvision's init
        # (fan-out convs, N(0, 0.01) Linears) shrinks the signal ~10x per FC layer and left plain VGG-16
        # at chance for 8 epochs in our measurements; only the final Linear keeps small weights.
        final = self.classifier[-1]
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if m is final:
                    nn.init.normal_(m.weight, 0, 0.01)
                else:
                    nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def stage_modules(self) -> list[nn.Module]:
        bounds = [0, *self._stage_ends]
        return [self.features[a:b] for a, b in zip(bounds[:-1], bounds[1:])]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = torch.flatten(self.avgpool(x), 1)
        if pre_logits:
            return self.classifier[:-1](x)
        return self.classifier(x)

    @property
    def _classifier_in_features(self) -> int:
        return self._head_width

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.deployed:
            return
        for seq in [m for m in self.features.modules() if isinstance(m, nn.Sequential)]:
            fold_conv_bn_sequence(seq)
        self.deployed = True


def _build(depth: int, batch_norm: bool, depthwise: bool = False):
    def builder(**kwargs) -> VGG:
        return VGG(VGGConfig(depth, batch_norm, depthwise), **kwargs)

    return builder


def _traits(batch_norm: bool) -> FamilyTraits:
    # (VGG's classic dropout before its 4096-wide fully connected layers)
    return FamilyTraits("vgg", batch_norm=batch_norm, fc_head=True, drop_rate=0.5)


for _depth in VGG_LAYERS:
    register_model(f"vgg{_depth}", _build(_depth, False), family="vgg", paper="arXiv:1409.1556",
                   traits=_traits(False))
    register_model(f"vgg{_depth}_bn", _build(_depth, True), family="vgg", paper="arXiv:1409.1556",
                   traits=_traits(True))
register_model("vgg16_dws", _build(16, True, depthwise=True), family="vgg",
               paper="arXiv:1409.1556, arXiv:1704.04861", traits=_traits(True))
