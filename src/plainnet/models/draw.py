"""Architecture diagrams: the classic layered figure of a model, drawn from the model object itself.

:func:`diagram_units` walks the model as ``summarize`` does (forward hooks on one zero image, eval mode,
on the model's own device, ``meta`` included), so a pruned model or a custom head is drawn as it is.
Each unit is one box: a convolution (with its BN), a RepVGG block (its three branches in the training
form, one 3x3 in the deploy form), a depthwise-separable conv, a pooling step, or a fully connected
layer. :func:`draw` renders them with matplotlib: box thickness grows with the channels, height with
the resolution; labels are real text in SVG and PDF.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn

__all__ = ["Unit", "diagram_units", "draw", "FORMS", "STYLES"]

FORMS = ("train", "deploy", "both")
STYLES = ("layers", "blocks")

#: Fill colours by unit kind (and RepVGG branch).
COLORS = {"conv": "#9ec5e8", "repvgg": "#9ec5e8", "dws": "#b7d7a8", "pool": "#e8a09a", "gap": "#e8a09a",
          "fc": "#c9b3e0", "3×3": "#9ec5e8", "1×1": "#f6c37a", "id": "#d0d0d0"}


@dataclass(frozen=True)
class Unit:
    """One box of the figure."""

    kind: str  # conv, repvgg, dws, pool, gap, fc
    label: str  # e.g. "3×3, 64"
    channels: int  # output channels (features for fc)
    size: tuple[int, int]  # output height, width (1, 1 for fc)
    stride: int = 1
    branches: tuple[str, ...] = ()  # a RepVGG block in its training form: ("3×3", "1×1"[, "id"])
    repeat: int = 1  # units of the "blocks" style stand for this many layers


def _unit_types():
    from ..layers import DepthwiseSeparableConv, OnlineRepVGGBlock, RepVGGBlock

    return (RepVGGBlock, OnlineRepVGGBlock, DepthwiseSeparableConv, nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d,
            nn.AvgPool2d, nn.AdaptiveAvgPool2d, nn.Linear)


def _describe(module: nn.Module, out: torch.Tensor) -> Unit | None:
    from ..layers import DepthwiseSeparableConv, OnlineRepVGGBlock, RepVGGBlock

    size = tuple(out.shape[-2:]) if out.dim() == 4 else (1, 1)
    if isinstance(module, (RepVGGBlock, OnlineRepVGGBlock)):
        if module.deployed:
            branches: tuple[str, ...] = ()
        else:
            identity = (module.rbr_identity is not None if isinstance(module, RepVGGBlock)
                        else module.scale_identity is not None)
            branches = ("3×3", "1×1") + (("id",) if identity else ())
        se = "" if isinstance(module.se, nn.Identity) else " +SE"
        label = ("+".join(branches) if branches else "3×3") + f", {module.out_chs}{se}"
        if module.groups > 1:
            label += f" g{module.groups}"
        return Unit("repvgg", label, module.out_chs, size, module.stride, branches)
    if isinstance(module, DepthwiseSeparableConv):
        return Unit("dws", f"dw 3×3+1×1, {out.shape[1]}", out.shape[1], size)
    if isinstance(module, nn.Conv2d):
        k = module.kernel_size[0]
        dw = "dw " if module.groups > 1 and module.groups == module.in_channels else ""
        return Unit("conv", f"{dw}{k}×{k}, {module.out_channels}", module.out_channels, size, module.stride[0])
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max" if isinstance(module, nn.MaxPool2d) else "avg"
        stride = module.stride if isinstance(module.stride, int) else module.stride[0]
        return Unit("pool", f"{kind} pool /{stride}", out.shape[1], size, stride)
    if isinstance(module, nn.AdaptiveAvgPool2d):
        label = "global avg pool" if size == (1, 1) else f"avg pool → {size[0]}×{size[1]}"
        return Unit("gap", label, out.shape[1], size)
    if isinstance(module, nn.Linear):
        return Unit("fc", f"FC, {module.out_features}", module.out_features, (1, 1))
    return None


@torch.no_grad()
def diagram_units(model: nn.Module, input_size: int = 224) -> list[Unit]:
    """The model's boxes, in forward order, for ``input_size`` square images."""
    types = _unit_types()
    tops = {}
    for name, m in model.named_modules():
        if isinstance(m, types) and not any(name.startswith(t + ".") for t in tops):
            tops[name] = m
    units: list[Unit] = []

    def hook(module, _inputs, out):
        if isinstance(module, nn.BatchNorm2d):  # folded into the conv before it
            if units and units[-1].kind == "conv" and "BN" not in units[-1].label:
                units[-1] = replace(units[-1], label=units[-1].label + " +BN")
            return
        if isinstance(out, torch.Tensor) and (unit := _describe(module, out)) is not None:
            units.append(unit)

    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None and param.is_floating_point() else torch.float32
    in_chans = (getattr(model, "arch", None) or {}).get("in_chans", 3)
    handles = [m.register_forward_hook(hook) for m in tops.values()]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, in_chans, input_size, input_size, device=device, dtype=dtype))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    return units


def group_units(units: list[Unit]) -> list[Unit]:
    """The "blocks" style: one box per stage: consecutive layers of the same kind, width and output size
    (the first may stride; a RepVGG stage's label is that of its blocks with an identity branch)."""
    out: list[Unit] = []
    for u in units:
        last = out[-1] if out else None
        if last and u.kind in ("conv", "repvgg", "dws") and u.stride == 1 and (
                last.kind, last.channels, last.size) == (u.kind, u.channels, u.size):
            longer = max((last, u), key=lambda v: len(v.branches))
            out[-1] = replace(last, label=longer.label, branches=longer.branches, repeat=last.repeat + 1)
        else:
            out.append(u)
    return out


def _box(ax, x: float, width: float, height: float, color: str, depth: float) -> None:
    """A pseudo-3D box: front face centred on y=0, with top and side faces ``depth`` deep."""
    from matplotlib.patches import Polygon, Rectangle

    dx, dy = depth * 0.6, depth * 0.45
    y0, y1 = -height / 2, height / 2
    ax.add_patch(Rectangle((x, y0), width, height, facecolor=color, edgecolor="#333333", linewidth=0.5))
    ax.add_patch(Polygon([(x, y1), (x + dx, y1 + dy), (x + width + dx, y1 + dy), (x + width, y1)],
                         facecolor=color, edgecolor="#333333", linewidth=0.5, alpha=0.75))
    ax.add_patch(Polygon([(x + width, y0), (x + width + dx, y0 + dy), (x + width + dx, y1 + dy), (x + width, y1)],
                         facecolor=color, edgecolor="#333333", linewidth=0.5, alpha=0.55))


def _row(ax, units: list[Unit], title: str, caption: str) -> float:
    """Draw one form's units left to right; returns the x extent."""
    from matplotlib.patches import Rectangle

    spatial = [u for u in units if u.kind != "fc"]
    max_side = max((max(u.size) for u in spatial), default=1)
    max_chs = max((u.channels for u in spatial), default=1)
    max_feat = max((u.channels for u in units if u.kind == "fc"), default=1)
    x = 0.0
    for u in units:
        if u.kind == "fc":
            width, height = 0.22, 0.8 + 3.2 * math.log1p(u.channels) / math.log1p(max_feat)
        else:
            width = 0.12 if u.kind in ("pool", "gap") else 0.2 + 0.9 * math.sqrt(u.channels / max_chs)
            height = 0.5 + 3.5 * max(u.size) / max_side
        depth = 0.15 if u.kind == "fc" else 0.25 + 0.55 * max(u.size) / max_side
        if u.branches:  # the training form: one slice per branch, stacked
            part = height / len(u.branches)
            for i, branch in enumerate(u.branches):
                bottom = -height / 2 + i * part
                ax.add_patch(Rectangle((x, bottom), width, part, facecolor=COLORS[branch], edgecolor="#333333",
                                       linewidth=0.5))
            _box(ax, x, width, height, "none", depth)
        else:
            _box(ax, x, width, height, COLORS[u.kind], depth)
        label = u.label + (f" ×{u.repeat}" if u.repeat > 1 else "")
        if u.kind not in ("fc", "pool", "gap"):
            label += f"\n{u.size[0]}×{u.size[1]}" if u.stride == 1 else f"\n/{u.stride} → {u.size[0]}×{u.size[1]}"
        ax.text(x + width / 2, -2.45, label, rotation=90, ha="center", va="top", fontsize=6.5, linespacing=1.1)
        x += max(width + 0.25, 0.26 * (label.count("\n") + 1) + 0.2)  # room for the rotated label's lines
    ax.text(0, 3.75, title, fontsize=9, fontweight="bold", va="bottom")
    ax.text(0, 3.4, caption, fontsize=7.5, va="bottom", color="#333333")
    branches = sorted({b for u in units for b in u.branches}, key=("3×3", "1×1", "id").index)
    if branches:
        names = {"3×3": "3×3 conv + BN", "1×1": "1×1 conv + BN", "id": "identity (BN)"}
        ax.legend(handles=[Rectangle((0, 0), 1, 1, facecolor=COLORS[b], edgecolor="#333333", linewidth=0.5,
                                     label=names[b]) for b in branches],
                  loc="upper left", ncol=len(branches), fontsize=7, frameon=False, borderaxespad=0,
                  handlelength=1.2, bbox_to_anchor=(0.0, 3.3), bbox_transform=ax.transData)
    return x


def _caption(model: nn.Module, units: list[Unit], input_size: int) -> str:
    from .summary import summarize

    s = summarize(model, input_size)
    blocks = sum(u.repeat for u in units if u.kind == "repvgg")
    convs = sum(u.repeat for u in units if u.kind in ("conv", "dws"))
    fcs = sum(u.kind == "fc" for u in units)
    parts = ([f"{blocks} RepVGG blocks"] if blocks else []) + ([f"{convs} conv layers"] if convs else [])
    parts.append(f"{fcs} FC layer{'s' if fcs != 1 else ''}")
    return f"{', '.join(parts)}; {s.params / 1e6:.2f} M parameters, {s.gmacs:.2f} GMACs at {input_size}×{input_size}"


def draw(model: nn.Module, path: str | Path, *, input_size: int = 224, form: str = "train",
         style: str = "layers", title: str | None = None) -> Path:
    """Draw ``model``'s architecture to ``path`` (``.svg``, ``.pdf`` or ``.png``); returns the path.

    ``form``: ``train`` (the model as given), ``deploy`` (its re-parameterized copy) or ``both`` (the
    two, one above the other, for RepVGG). ``style``: ``layers`` (one box per layer or block) or
    ``blocks`` (repeated identical layers drawn once, ``×n``).
    """
    import copy

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..errors import ConfigError
    from .reparam import reparameterize
    from .weights import is_deployed

    if form not in FORMS:
        raise ConfigError(f"form must be one of {', '.join(FORMS)}, not {form!r}")
    if style not in STYLES:
        raise ConfigError(f"style must be one of {', '.join(STYLES)}, not {style!r}")
    path = Path(path)
    if path.suffix.lower() not in (".svg", ".pdf", ".png"):
        raise ConfigError(f"{path.name}: the figure is written as .svg, .pdf or .png")
    name = title or (getattr(model, "arch", None) or {}).get("name") or type(model).__name__
    models = []
    if form in ("train", "both"):
        models.append(("training form" if form == "both" else "", model))
    if form in ("deploy", "both"):
        models.append(("deploy form (re-parameterized)" if form == "both" else "",
                       model if is_deployed(model) else reparameterize(copy.deepcopy(model))))
    rows = []
    for label, m in models:
        units = diagram_units(m, input_size)
        shown = group_units(units) if style == "blocks" else units
        rows.append((f"{name}" + (f" — {label}" if label else ""), shown, _caption(m, units, input_size)))
    longest = max(sum(0.9 if u.kind not in ("pool", "gap", "fc") else 0.45 for u in r[1]) for r in rows)
    with matplotlib.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42, "font.family": "DejaVu Sans"}):
        fig, axes = plt.subplots(len(rows), 1, figsize=(max(6.5, 0.42 * longest + 1.0), 3.6 * len(rows)),
                                 squeeze=False)
        for ax, (row_title, units, caption) in zip(axes[:, 0], rows):
            extent = _row(ax, units, row_title, caption)
            ax.set_xlim(-0.2, extent + 0.6)
            ax.set_ylim(-4.6, 4.2)
            ax.set_aspect("equal")
            ax.set_anchor("W")
            ax.axis("off")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=200, bbox_inches="tight")
        plt.close(fig)
    return path
