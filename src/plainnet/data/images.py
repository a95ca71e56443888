"""Robust image reading: any file Pillow can decode becomes an 8-bit RGB image, or a one-line error.

:func:`load_rgb` decodes a file completely (so a truncated file fails here, while a dataset is being
checked or cached, never halfway through training), applies the EXIF orientation and converts every
Pillow mode to ``"RGB"``:

- ``1``, ``L``, ``P``, ``CMYK``, ``YCbCr`` and the other colour modes use Pillow's own conversion.
- Modes with transparency (``RGBA``, ``LA``, ``PA``, ``P`` or ``L``/``RGB`` with a ``transparency``
  entry) are composited onto **white**, which is how browsers and image viewers show them and so how
  whoever labelled the image saw it (Hugging Face ``transformers``' ``convert_to_rgb`` does the same).
- 16-bit modes (``I;16``, ``I;16L``, ``I;16B``, ``I;16N``) are scaled by their bit depth: 16, or the
  TIFF ``BitsPerSample`` when it declares fewer (12-bit scans). Pillow's own conversion would clip
  every value above 255 to white.
- ``I`` (32-bit integer): Pillow uses it as the container for 16-bit PGM/PPM data, so values within
  0..65535 (or a TIFF that declares <= 16 bits) are scaled as 16-bit; anything else is stretched from
  its minimum to its maximum, because a fixed 32-bit scale would turn any real image black.
- ``F`` (float): values within 0..1 are scaled by 255, anything else is stretched min..max; NaN and
  infinities become 0.

Every failure (missing, empty, truncated or non-image file, an image over Pillow's decompression-bomb
limit, an unsupported mode, and for training an image under :data:`MIN_SIDE` px a side) is a
:class:`BadImageError` naming the file. Images over the limit are refused rather than decoded at
reduced size: no training or prediction needs 180 million pixels, and a file that claims them is more
often an attack than a photo. Pillow's global state (``LOAD_TRUNCATED_IMAGES``,
``MAX_IMAGE_PIXELS``) is read, never changed.
"""

from __future__ import annotations

import io
import logging
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import ConfigError, DataError

__all__ = ["IMAGE_EXTENSIONS", "is_image_file", "BadImageError", "load_rgb", "load_rgb_array"]

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS: frozenset[str] = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm"}
)
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "La", "RGBa"})
_SIXTEEN_BIT_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N"})
#: Training skips images smaller than this on a side: they carry no usable detail (1x1 placeholders,
#: tracking pixels). Prediction answers for any size.
MIN_SIDE = 4
_TIFF_BITS_PER_SAMPLE = 258
# Pillow's resize first box-reduces by an integer factor while the image stays this many times larger
# than the target, then resamples: near-identical output, several times faster on big photos.
_REDUCING_GAP = 3.0


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` has an image suffix, ignoring case (PlantVillage names end in ``.JPG``)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Every entry under ``folder`` (recursively, sorted) with an image suffix, whatever it turns out to
    be (a broken link or a folder named ``x.jpg`` is listed, so it can be reported rather than vanish);
    hidden entries (a name, or a folder on the way, starting with ".") are left out."""
    root = Path(folder)
    return sorted(f for f in root.rglob("*") if is_image_file(f)
                  and not any(part.startswith(".") for part in f.relative_to(root).parts))


class BadImageError(DataError):
    """An image file that cannot be decoded. ``str(err)`` is ``"PATH: reason"`` on one line."""

    def __init__(self, path: str | os.PathLike, reason: str = "cannot decode") -> None:
        self.path = Path(path)
        self.reason = " ".join(str(reason).split()) or "cannot decode"
        super().__init__(f"{self.path}: {self.reason}")

    def __reduce__(self):  # DataLoader workers pickle exceptions; the default would pass only the message
        return type(self), (self.path, self.reason)


def load_rgb(path: str | os.PathLike, min_side: int | None = None, smallest: int = 1,
             data: bytes | None = None) -> Image.Image:
    """Decode ``path`` fully and return it upright, in mode ``"RGB"``.

    Args:
        path: the image file (with ``data``: only the name errors give it, e.g. an upload's).
        min_side: the caller will resize the shorter side to this many pixels or fewer, so a JPEG may
            be decoded at 1/2, 1/4 or 1/8 scale (libjpeg's DCT scaling, far cheaper than a full decode
            and a resize) as long as its shorter side stays >= ``min_side``. Other formats and
            ``None`` decode at full size.
        smallest: images with a side shorter than this many pixels are refused as too small.
        data: the file's bytes (an upload), decoded instead of reading ``path``.

    Raises:
        BadImageError: the file is missing, empty, not an image, truncated, too large (Pillow's
            decompression-bomb limit) or in a mode that cannot be converted.
    """
    if min_side is not None and min_side < 1:
        raise ConfigError(f"min_side must be a positive number of pixels, got {min_side}")
    path = Path(path)
    try:
        with Image.open(path if data is None else io.BytesIO(data)) as im:
            if min(im.size) < smallest:
                raise BadImageError(path, f"too small: {im.size[0]}x{im.size[1]} px (at least {smallest} px a side)")
            if min_side is not None and im.format == "JPEG":
                im.draft("RGB", (min_side, min_side))
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im), path)
    except BadImageError:
        raise
    except FileNotFoundError:
        raise BadImageError(path, "broken link: its target does not exist" if path.is_symlink()
                            else "file not found") from None
    except IsADirectoryError:
        raise BadImageError(path, "is a directory, not an image file") from None
    except PermissionError:
        raise BadImageError(path, "permission denied") from None
    except UnidentifiedImageError:
        empty = not data if data is not None else _is_empty(path)
        raise BadImageError(path, "empty file" if empty else "not an image") from None
    except Image.DecompressionBombError:
        raise BadImageError(path, f"too large: over Pillow's limit of {2 * (Image.MAX_IMAGE_PIXELS or 0):,} pixels "
                                  "(a decompression bomb, or far more pixels than training needs: downscale it)") from None
    except Exception as e:  # OSError, SyntaxError, ValueError, EOFError, zlib.error: all "undecodable"
        message = str(e) or type(e).__name__
        reason = "truncated file" if "truncat" in message.lower() else f"cannot decode: {message}"
        raise BadImageError(path, reason[:200]) from None


def load_rgb_array(path: str | os.PathLike, size: int, crop_ratio: float = 1.0, smallest: int = 1,
                   data: bytes | None = None) -> np.ndarray:
    """A ``(size, size, 3)`` uint8 array: shorter side resized to ``round(size / crop_ratio)``, then
    a centred ``size`` x ``size`` crop (the usual evaluation transform; ``crop_ratio=0.875`` is the
    ImageNet 224-of-256 convention).

    Raises:
        BadImageError: as :func:`load_rgb`.
    """
    if size < 1:
        raise ConfigError(f"size must be a positive number of pixels, got {size}")
    if not 0 < crop_ratio <= 1:
        raise ConfigError(f"crop_ratio must be in (0, 1], got {crop_ratio}")
    side = round(size / crop_ratio)
    im = load_rgb(path, min_side=side, smallest=smallest, data=data)
    w, h = im.size
    scale = side / min(w, h)
    new_size = (max(side, round(w * scale)), max(side, round(h * scale)))
    if new_size != im.size:
        im = im.resize(new_size, Image.Resampling.BILINEAR, reducing_gap=_REDUCING_GAP)
    # torchvision's center_crop rounds the offset the same way, so both pipelines pick the same pixels.
    left = int(round((new_size[0] - size) / 2.0))
    top = int(round((new_size[1] - size) / 2.0))
    return np.array(im.crop((left, top, left + size, top + size)), dtype=np.uint8)


def _is_empty(path: Path) -> bool:
    try:
        return path.stat().st_size == 0
    except OSError:
        return False


def _to_rgb(im: Image.Image, path: Path) -> Image.Image:
    mode = im.mode
    if mode in _SIXTEEN_BIT_MODES or mode in ("I", "F"):
        return Image.fromarray(_gray_to_uint8(im)).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in im.info:
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if mode == "RGB":
        return im
    try:
        return im.convert("RGB")
    except (ValueError, OSError) as e:
        raise BadImageError(path, f"unsupported mode {mode}: {e}") from None


def _declared_bits(im: Image.Image) -> int | None:
    tags = getattr(im, "tag_v2", None)
    if tags is None or _TIFF_BITS_PER_SAMPLE not in tags:
        return None
    bits = tags[_TIFF_BITS_PER_SAMPLE]
    return int(bits[0] if isinstance(bits, tuple) else bits)


def _gray_to_uint8(im: Image.Image) -> np.ndarray:
    """8-bit grayscale from a 16-bit, 32-bit integer or float single-channel image (see module doc)."""
    a = np.asarray(im).astype(np.float64)
    bits = _declared_bits(im)
    if im.mode == "F":
        a[~np.isfinite(a)] = 0.0
        peak = 1.0 if a.size and a.min() >= 0.0 and a.max() <= 1.0 else None
    elif im.mode in _SIXTEEN_BIT_MODES:
        peak = 2.0 ** min(bits or 16, 16) - 1
    elif bits is not None and bits <= 16:
        peak = 2.0**bits - 1
    else:
        peak = 65535.0 if a.size and a.min() >= 0 and a.max() <= 65535 else None
    if peak is None:  # no known range: stretch what is there
        low, high = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
        a = a - low
        peak = high - low or 1.0
    return np.rint(np.clip(a * (255.0 / peak), 0, 255)).astype(np.uint8)
