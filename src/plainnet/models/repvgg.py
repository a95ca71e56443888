"""RepVGG A0-A2, B0-B3 (with g2/g4 grouped variants) and D2se.

"RepVGG: Making VGG-style ConvNets Great Again", Ding, Zhang, Ma, Han, Ding, Sun; CVPR 2021,
arXiv:2101.03697. Each variant is one row of :data:`REPVGG_CFGS`; one :class:`RepVGG` class builds
them all, in training form (3x3 + 1x1 + identity branches) or, with ``deploy=True``, directly in the
fused single-path form. State-dict keys match the official repository (``stage0``, ``stage1.0``...,
``linear``), so its checkpoints load as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..layers import OnlineRepVGGBlock, RepVGGBlock
from ..errors import ConfigError
from .base import FeatureInfo, PlainClassifier, skipped_downsamplings
from .registry import FamilyTraits, register_model

__all__ = ["RepVGG", "RepVGGConfig", "REPVGG_CFGS", "TRAIN_FORMS"]

#: RepVGG's training structures (``train_form``); both fuse to the same single-path network.
TRAIN_FORMS = ("standard", "online")

# Layers counted globally (stage0 = 0, then every block of stages 1-4); these use grouped convs
# in the g2/g4 variants.
GROUPED_LAYERS = frozenset(range(2, 27, 2))


@dataclass(frozen=True)
class RepVGGConfig:
    depths: tuple[int, int, int, int]
    #: Width multipliers (a, a, a, b) of the base widths 64, 128, 256, 512.
    widths: tuple[float, float, float, float]
    groups: int = 1
    use_se: bool = False


_A, _B, _D = (2, 4, 14, 1), (4, 6, 16, 1), (8, 14, 24, 1)
REPVGG_CFGS: dict[str, RepVGGConfig] = {
    "a0": RepVGGConfig(_A, (0.75, 0.75, 0.75, 2.5)),
    "a1": RepVGGConfig(_A, (1, 1, 1, 2.5)),
    "a2": RepVGGConfig(_A, (1.5, 1.5, 1.5, 2.75)),
    "b0": RepVGGConfig(_B, (1, 1, 1, 2.5)),
    "b1": RepVGGConfig(_B, (2, 2, 2, 4)),
    "b1g2": RepVGGConfig(_B, (2, 2, 2, 4), groups=2),
    "b1g4": RepVGGConfig(_B, (2, 2, 2, 4), groups=4),
    "b2": RepVGGConfig(_B, (2.5, 2.5, 2.5, 5)),
    "b2g2": RepVGGConfig(_B, (2.5, 2.5, 2.5, 5), groups=2),
    "b2g4": RepVGGConfig(_B, (2.5, 2.5, 2.5, 5), groups=4),
    "b3": RepVGGConfig(_B, (3, 3, 3, 5)),
    "b3g2": RepVGGConfig(_B, (3, 3, 3, 5), groups=2),
    "b3g4": RepVGGConfig(_B, (3, 3, 3, 5), groups=4),
    "d2se": RepVGGConfig(_D, (2.5, 2.5, 2.5, 5), use_se=True),
}


class RepVGG(PlainClassifier):
    """RepVGG: stage0 (one stride-2 block), four stages whose first block has stride 2, GAP, Linear.

    ``output_stride`` (32, 16 or 8) is the trunk's total downsampling: 16 makes stage0 stride 1, 8 also
    stage1, so small images keep spatial detail (a 32 px image ends at 2x2 or 4x4 instead of 1x1).
    ``small_input=True`` (32-64 px images) is shorthand for ``output_stride=8``.
    ``train_form``: ``standard`` (three branches, each with its BatchNorm, as in the paper) or ``online``
    (:class:`~plainnet.layers.OnlineRepVGGBlock`: the branches merged into one 3x3 kernel every step;
    trains at about the cost of the fused network). Both fuse to the same deploy structure.
    """

    def __init__(
        self,
        cfg: RepVGGConfig,
        num_classes: int = 1000,
        in_chans: int = 3,
        *,
        small_input: bool = False,
        output_stride: int | None = None,
        drop_rate: float = 0.0,
        deploy: bool = False,
        train_form: str = "standard",
        norm_layer=nn.BatchNorm2d,
        act_layer=nn.ReLU,
    ) -> None:
        super().__init__()
        if train_form not in TRAIN_FORMS:
            raise ConfigError(f"train_form must be one of {', '.join(TRAIN_FORMS)}, not {train_form!r}")
        self.cfg, self.num_classes, self.train_form = cfg, num_classes, train_form
        a, b = cfg.widths[0], cfg.widths[3]
        widths = [min(64, int(64 * a)), int(64 * a), int(128 * a), int(256 * a), int(512 * b)]
        skipped = skipped_downsamplings(small_input, output_stride)
        strides = [1 if i < skipped else 2 for i in range(5)]
        block = dict(use_se=cfg.use_se, deploy=deploy, norm_layer=norm_layer, act_layer=act_layer)

        Block = OnlineRepVGGBlock if train_form == "online" else RepVGGBlock  # noqa: N806
        self.stage0 = Block(in_chans, widths[0], strides[0], **block)
        layer, chs, reduction = 1, widths[0], strides[0]
        self.feature_info = [FeatureInfo(chs, reduction, "stage0")]
        for s, depth in enumerate(cfg.depths, start=1):
            blocks = []
            for i in range(depth):
                groups = cfg.groups if layer in GROUPED_LAYERS else 1
                stride = strides[s] if i == 0 else 1
                blocks.append(Block(chs, widths[s], stride, groups, **block))
                chs, layer = widths[s], layer + 1
            reduction *= strides[s]
            self.add_module(f"stage{s}", nn.Sequential(*blocks))
            self.feature_info.append(FeatureInfo(chs, reduction, f"stage{s}"))
        self.num_features = chs
        self.gap = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.linear = nn.Linear(chs, num_classes) if num_classes > 0 else nn.Identity()
        self.classifier_name = "linear"

    def stage_modules(self) -> list[nn.Module]:
        return [self.stage0, self.stage1, self.stage2, self.stage3, self.stage4]

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.drop(torch.flatten(self.gap(x), 1))
        return x if pre_logits else self.linear(x)

    @property
    def _classifier_in_features(self) -> int:
        return self.num_features




def _build(cfg: RepVGGConfig):
    def builder(**kwargs) -> RepVGG:
        return RepVGG(cfg, **kwargs)

    return builder


_TRAITS = FamilyTraits("repvgg", branches=True, train_forms=TRAIN_FORMS,
                       fixed_strides_when_pretrained=True)
for _variant, _cfg in REPVGG_CFGS.items():
    register_model(f"repvgg_{_variant}", _build(_cfg), family="repvgg", paper="arXiv:2101.03697", traits=_TRAITS)
