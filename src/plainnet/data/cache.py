"""Decode-once image cache: every image decoded, resized and center-cropped once into a uint8 array.

The array lives in a memory-mapped ``.npy`` file (``N x S x S x 3``) beside a JSON manifest, under
``$PLAINNET_CACHE_DIR`` (default ``~/.cache/plainnet``). Its name carries a hash of the file list, the
files' sizes and modification times and the side ``S``, so changing any file or the size builds a new
cache instead of reading a stale one. The manifest is written last and both files are renamed into
place, so an interrupted build is never mistaken for a finished one.

Unreadable files are recorded in the manifest with the reason and left out of training, with a warning
that names them; they are never a crash in the middle of an epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..files import atomic_write_text
from .folder import Sample
from .images import MIN_SIDE, BadImageError, load_rgb_array

__all__ = ["DecodedImages", "default_cache_dir", "decode_samples", "cache_key"]

log = logging.getLogger(__name__)
CACHE_VERSION = 2  # 2: images under MIN_SIDE px are skipped


@dataclass
class DecodedImages:
    """Decoded images of a list of samples, in the samples' order."""

    #: uint8 ``(N, S, S, 3)`` (memory-mapped, read-only).
    pixels: np.ndarray
    labels: np.ndarray
    #: ``ok[i]`` is False where sample ``i`` could not be decoded (its pixels are zero).
    ok: np.ndarray
    #: ``(path, reason)`` of every sample that could not be decoded.
    bad: list[tuple[str, str]]
    path: Path | None = None

    def tensors(self, indices: np.ndarray | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images NCHW uint8 (a channels-last view), labels int64)`` of the usable samples."""
        keep = np.flatnonzero(self.ok) if indices is None else indices[self.ok[indices]]
        pixels = torch.from_numpy(np.ascontiguousarray(self.pixels[keep]))
        return pixels.permute(0, 3, 1, 2), torch.from_numpy(self.labels[keep].astype(np.int64))


def default_cache_dir() -> Path:
    return Path(os.environ.get("PLAINNET_CACHE_DIR") or Path.home() / ".cache" / "plainnet")


def cache_key(samples: Sequence[Sample], side: int) -> str:
    h = hashlib.sha256(f"v{CACHE_VERSION}:{side}".encode())
    for s in samples:
        st = s.path.stat()
        h.update(os.fsencode(s.path.resolve()) + f"\0{st.st_size}\0{st.st_mtime_ns}\0{s.label}\n".encode())
    return h.hexdigest()[:20]


def decode_samples(
    samples: Sequence[Sample], side: int, *, cache_dir: str | Path | None = None, threads: int | None = None
) -> DecodedImages:
    """Decode ``samples`` to ``side x side`` (shorter side resized, then center-cropped), cached on disk.

    A second call with the same files and side memory-maps the existing cache instead of decoding.
    """
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    cache_dir.mkdir(parents=True, exist_ok=True)
    key = cache_key(samples, side)
    array_path = cache_dir / f"images-{side}px-{key}.npy"
    manifest_path = array_path.with_suffix(".json")
    if manifest_path.is_file() and array_path.is_file():
        manifest = json.loads(manifest_path.read_text())
        pixels = np.load(array_path, mmap_mode="r")
        if pixels.shape == (len(samples), side, side, 3):
            log.debug("using decoded-image cache %s (%d images)", array_path, len(samples))
            return _result(pixels, samples, manifest["bad"], array_path)
    return _build(samples, side, array_path, manifest_path, threads)


def _result(pixels, samples, bad: list, path: Path) -> DecodedImages:
    bad_paths = {b[0] for b in bad}
    ok = np.array([str(s.path) not in bad_paths for s in samples], dtype=bool)
    labels = np.array([s.label for s in samples], dtype=np.int64)
    return DecodedImages(pixels, labels, ok, [tuple(b) for b in bad], path)


def _build(samples, side, array_path: Path, manifest_path: Path, threads: int | None) -> DecodedImages:
    t0 = time.perf_counter()
    fd, tmp_array = tempfile.mkstemp(dir=array_path.parent, prefix=".building-", suffix=".npy")
    os.close(fd)
    pixels = np.lib.format.open_memmap(tmp_array, mode="w+", dtype=np.uint8, shape=(len(samples), side, side, 3))
    bad: list[list[str]] = []

    def decode(i: int, out: np.ndarray = pixels):
        try:
            out[i] = load_rgb_array(samples[i].path, side, smallest=MIN_SIDE)
        except BadImageError as e:
            return [str(samples[i].path), e.reason]
        return None

    try:
        # PIL releases the GIL while decoding and resizing, so threads use every core.
        with ThreadPoolExecutor(max_workers=threads or os.cpu_count() or 1) as pool:
            bad = [b for b in pool.map(decode, range(len(samples))) if b is not None]
        pixels.flush()
        del pixels
        os.replace(tmp_array, array_path)
        atomic_write_text(manifest_path, json.dumps({"version": CACHE_VERSION, "side": side, "count": len(samples),
                                                     "bad": bad}))
    finally:
        Path(tmp_array).unlink(missing_ok=True)
    log.info("decoded %d images to %d px in %.1f s -> %s", len(samples), side, time.perf_counter() - t0,
             array_path)
    return _result(np.load(array_path, mmap_mode="r"), samples, bad, array_path)
