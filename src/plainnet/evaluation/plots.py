"""Figures (matplotlib, Agg backend): training curves, confusion matrix, image grids, Grad-CAM overlays."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..files import atomic_write

__all__ = ["plot_curves", "plot_confusion", "plot_image_grid", "cam_overlay", "plot_class_counts"]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display, no GUI toolkit
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    plt = _pyplot()
    path = Path(path)
    try:  # (a full disk: the error names the picture, and no old one is changed)
        with atomic_write(path) as f:
            fig.savefig(f, format=path.suffix.lstrip(".") or "png", bbox_inches="tight")
    finally:
        plt.close(fig)
    return path


def plot_curves(history: list[dict], path: str | Path) -> Path:
    """Loss and accuracy per epoch, train vs val, side by side."""
    plt = _pyplot()
    epochs = [h["epoch"] + 1 for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 3.8), dpi=110)
    for ax, metric, title in ((ax_loss, "loss", "loss"), (ax_acc, "acc", "accuracy")):
        for split, style in (("train", "-o"), ("val", "-s")):
            key = f"{split}/{metric}"
            pts = [(e, h[key]) for e, h in zip(epochs, history) if key in h]
            if pts:
                ax.plot(*zip(*pts), style, markersize=3, label=split)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend()
    ax_acc.set_ylim(top=1.0)
    fig.tight_layout()
    return _save(fig, path)


def _short(name: str, limit: int = 18) -> str:
    name = name.replace("___", " ").replace("_", " ")
    return name if len(name) <= limit else name[: limit - 1] + "…"


def plot_confusion(confusion: Sequence[Sequence[int]], classes: Sequence[str], path: str | Path) -> Path:
    """Counts, coloured by the fraction of each true class (row-normalized)."""
    plt = _pyplot()
    m = np.asarray(confusion, dtype=float)
    rows = m / np.maximum(m.sum(1, keepdims=True), 1)
    n = len(classes)
    size = max(3.5, 0.55 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.9), dpi=110)
    ax.imshow(rows, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(j, i, f"{int(m[i, j])}", ha="center", va="center", fontsize=8 if n > 10 else 10,
                    color="white" if rows[i, j] > 0.5 else "black")
    labels = [_short(c) for c in classes]
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title("confusion matrix")
    return _save(fig, path)


def cam_overlay(image: np.ndarray, cam: np.ndarray, alpha: float = 0.45) -> np.ndarray:
    """uint8 HxWx3 image with a Grad-CAM heat-map (HxW in [0, 1]) blended over it."""
    plt = _pyplot()
    heat = plt.get_cmap("jet")(cam)[..., :3]
    return (image.astype(float) * (1 - alpha) + heat * 255 * alpha).clip(0, 255).astype(np.uint8)


def plot_image_grid(images: Sequence[np.ndarray], captions: Sequence[str], path: str | Path, *,
                    columns: int = 6, title: str = "", colors: Sequence[str] | None = None) -> Path:
    """uint8 HxWx3 images in a grid, one caption under each."""
    plt = _pyplot()
    n = max(len(images), 1)
    cols = min(columns, n)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(cols * 2.0, rows * 2.25), dpi=110, squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i, (img, cap) in enumerate(zip(images, captions)):
        ax = axes.flat[i]
        ax.imshow(img, interpolation="nearest" if img.shape[0] < 64 else "antialiased")
        ax.set_title(cap, fontsize=7.5, color=(colors[i] if colors else "black"))
    if not images:
        axes.flat[0].text(0.5, 0.5, "none", ha="center", va="center")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_class_counts(counts: dict[str, Sequence[int]], classes: Sequence[str], path: str | Path) -> Path:
    """Images per class and split, as grouped horizontal bars."""
    plt = _pyplot()
    n = len(classes)
    fig, ax = plt.subplots(figsize=(7, max(2.2, 0.35 * n + 1)), dpi=110)
    splits = [s for s in counts if sum(counts[s])]
    height = 0.8 / max(len(splits), 1)
    for k, split in enumerate(splits):
        ax.barh(np.arange(n) + k * height, counts[split], height=height, label=split)
    ax.set_yticks(np.arange(n) + height * (len(splits) - 1) / 2, [_short(c, 28) for c in classes])
    ax.invert_yaxis()
    ax.set_xlabel("images")
    ax.legend()
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)
