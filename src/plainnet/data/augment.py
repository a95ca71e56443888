"""Batched augmentation on image tensors, run where the batch already is (CPU or GPU).

Geometric augmentation (random crops of any scale and aspect, translations, flips, 90-degree rotations,
VGG-style scale jittering) is one affine warp per image, applied to the whole batch with a single
``affine_grid`` + ``grid_sample`` call instead of per-image PIL transforms. Per-image colour policies
(TrivialAugment, RandAugment), random erasing, and MixUp/CutMix come from ``torchvision.transforms.v2``.

Randomness is drawn from an explicit ``torch.Generator`` (seeded per epoch and batch by the caller), so
an epoch's augmentation does not depend on what ran before it: a resumed run repeats it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..config import CHOICES

__all__ = ["GeometricAugment", "PRESETS", "TTA_MODES", "tta_views", "center_crop", "normalize",
           "resize_center_crop", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class GeometricAugment:
    """Random crop (area ``scale`` x aspect ``ratio`` of the source), translation, flips and rotations.

    ``scale=None`` keeps the crop at exactly the output size in source pixels (pure translation, as in
    a padded random crop); ``translate_pad`` lets the crop extend that many source pixels past the
    border, filled by reflection.
    """

    scale: tuple[float, float] | None = None
    ratio: tuple[float, float] = (1.0, 1.0)
    translate_pad: int = 0
    hflip: bool = True
    vflip: bool = False
    rot90: bool = False
    #: Random rotation by an angle in [-degrees, degrees] (reflection fills the corners).
    degrees: float = 0.0

    def __call__(self, images: torch.Tensor, out_size: int, generator: torch.Generator) -> torch.Tensor:
        """``images``: float ``(N, C, S, S)``; returns ``(N, C, out_size, out_size)``."""
        n, _, h, w = images.shape
        g = generator
        if self.scale is None:
            # A crop of exactly out_size source pixels, moved by whole pixels (no interpolation blur)
            # anywhere inside the source plus ``translate_pad`` pixels of reflected border.
            sx = torch.full((n,), out_size / w)
            sy = torch.full((n,), out_size / h)
            pad = int(self.translate_pad)
            ox = torch.randint(-pad, w - out_size + pad + 1, (n,), generator=g)
            oy = torch.randint(-pad, h - out_size + pad + 1, (n,), generator=g)
            tx = (2 * ox - (w - out_size)) / w
            ty = (2 * oy - (h - out_size)) / h
        else:
            area = torch.empty(n).uniform_(*self.scale, generator=g)
            log_r = torch.empty(n).uniform_(math.log(self.ratio[0]), math.log(self.ratio[1]), generator=g)
            aspect = torch.exp(log_r)
            sx = torch.sqrt(area * aspect).clamp(max=1.0)
            sy = torch.sqrt(area / aspect).clamp(max=1.0)
            # The crop [t - s, t + s] stays inside the source's [-1, 1].
            tx = (torch.rand(n, generator=g) * 2 - 1) * (1 - sx)
            ty = (torch.rand(n, generator=g) * 2 - 1) * (1 - sy)

        # Orientation: flips and quarter turns as a 2x2 matrix applied to output coordinates.
        a = torch.ones(n)
        d = torch.ones(n)
        if self.hflip:
            a = torch.where(torch.rand(n, generator=g) < 0.5, -a, a)
        if self.vflip:
            d = torch.where(torch.rand(n, generator=g) < 0.5, -d, d)
        orient = torch.zeros(n, 2, 2)
        orient[:, 0, 0], orient[:, 1, 1] = a, d
        if self.rot90:
            turn = torch.rand(n, generator=g) < 0.5  # with both flips, this reaches all 8 symmetries
            swap = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
            orient = torch.where(turn[:, None, None], orient @ swap, orient)

        if self.degrees:
            angle = torch.deg2rad((torch.rand(n, generator=g) * 2 - 1) * self.degrees)
            cos, sin = torch.cos(angle), torch.sin(angle)
            orient = orient @ torch.stack([torch.stack([cos, -sin], 1), torch.stack([sin, cos], 1)], 1)
        theta = torch.zeros(n, 2, 3)
        theta[:, :, :2] = torch.diag_embed(torch.stack([sx, sy], 1)) @ orient
        theta[:, 0, 2], theta[:, 1, 2] = tx, ty
        theta = theta.to(device=images.device, dtype=images.dtype)
        grid = F.affine_grid(theta, [n, images.shape[1], out_size, out_size], align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


#: Named geometric presets (see ``AugmentConfig.preset``).
PRESETS: dict[str, GeometricAugment | None] = {
    "none": None,
    "shift": GeometricAugment(hflip=False),
    "crop": GeometricAugment(hflip=True),
    "rot": GeometricAugment(hflip=True, vflip=True, rot90=True),
    "rrc": GeometricAugment(scale=(0.25, 1.0), ratio=(3 / 4, 4 / 3), hflip=True),
    # VGG's scale jittering: the shorter side rescaled to S in [256, 512] before a 224 crop, i.e. square
    # crops covering 44%-88% of the side.
    "vgg": GeometricAugment(scale=(0.44**2, 0.875**2), ratio=(1.0, 1.0), hflip=True),
}


def center_crop(images: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size x size`` window of ``(N, C, H, W)`` images (a view, no copy)."""
    h, w = images.shape[-2:]
    if size > min(h, w):
        raise ValueError(f"cannot center-crop {size} px from {h}x{w} images")
    top, left = (h - size) // 2, (w - size) // 2
    return images[..., top : top + size, left : left + size]


def normalize(images: torch.Tensor, mean, std) -> torch.Tensor:
    """uint8 or [0, 1] float images -> normalized float32."""
    x = images.float()
    if images.dtype == torch.uint8:
        x = x / 255.0
    m = torch.as_tensor(mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    return (x - m) / s


TTA_MODES = CHOICES["augment.tta"]


def tta_views(x: torch.Tensor, mode: str) -> list[torch.Tensor]:
    """Test-time views of a batch: itself, plus mirrored copies (``hflip``: left-right; ``flips``:
    left-right, up-down and both, for images with no preferred orientation)."""
    if mode not in TTA_MODES:
        raise ValueError(f"tta must be one of {TTA_MODES}, got {mode!r}")
    views = [x]
    if mode in ("hflip", "flips"):
        views.append(x.flip(-1))
    if mode == "flips":
        views += [x.flip(-2), x.flip(-1).flip(-2)]
    return views


def resize_center_crop(images: torch.Tensor, side: int) -> torch.Tensor:
    """uint8 ``(N, C, H, W)``: shorter side resized to ``side`` (antialiased), then center-cropped square."""
    h, w = images.shape[-2:]
    if (h, w) == (side, side):
        return images
    scale = side / min(h, w)
    size = (max(side, round(h * scale)), max(side, round(w * scale)))
    out = F.interpolate(images.float(), size=size, mode="bilinear", antialias=scale < 1, align_corners=False)
    return center_crop(out.round().clamp(0, 255).to(torch.uint8), side).contiguous()
