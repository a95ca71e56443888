"""Batched augmentation, the class-balanced sampler, and the decode-once cache."""

from __future__ import annotations

import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from plainnet.data.augment import PRESETS, GeometricAugment, center_crop, normalize
from plainnet.data.cache import decode_samples
from plainnet.data.datamodule import _BatchIndices
from plainnet.data.folder import Sample


def windows(x, size):
    h = x.shape[-1]
    return [x[..., r : r + size, c : c + size] for r in range(h - size + 1) for c in range(h - size + 1)]


def test_plain_crops_are_exact_pixel_windows():
    x = torch.rand(8, 3, 12, 12)
    out = GeometricAugment(hflip=False)(x, 9, torch.Generator().manual_seed(0))
    for i in range(8):
        assert any(torch.allclose(out[i], w, atol=1e-5) for w in windows(x[i], 9))


def test_rot_preset_reaches_the_eight_symmetries_and_keeps_pixels():
    x = torch.arange(16.0).view(1, 1, 4, 4).repeat(256, 1, 1, 1)
    out = PRESETS["rot"](x, 4, torch.Generator().manual_seed(0))
    seen = {tuple(o.flatten().round().int().tolist()) for o in out}
    expected = set()
    for k in range(4):
        r = torch.rot90(x[0, 0], k)
        expected |= {tuple(r.flatten().int().tolist()), tuple(r.flip(-1).flatten().int().tolist())}
    assert seen == expected and len(seen) == 8


def test_augmentation_is_a_function_of_the_seed():
    x = torch.rand(4, 3, 40, 40)
    a = PRESETS["rrc"](x, 32, torch.Generator().manual_seed(7))
    b = PRESETS["rrc"](x, 32, torch.Generator().manual_seed(7))
    c = PRESETS["rrc"](x, 32, torch.Generator().manual_seed(8))
    assert a.shape == (4, 3, 32, 32)
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_center_crop_and_normalize():
    x = torch.zeros(1, 3, 10, 10, dtype=torch.uint8)
    x[..., 3:7, 3:7] = 255
    crop = center_crop(x, 4)
    assert crop.shape == (1, 3, 4, 4) and (crop == 255).all()
    n = normalize(crop, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    torch.testing.assert_close(n, torch.ones_like(n))


def test_batch_indices_shard_shuffle_and_balance():
    full = _BatchIndices(100, 10, shuffle=True, seed=1)
    full.set_epoch(3)
    order = torch.cat([b for b, _ in full])
    assert sorted(order.tolist()) == list(range(100))
    again = _BatchIndices(100, 10, shuffle=True, seed=1)
    again.set_epoch(3)
    assert torch.equal(torch.cat([b for b, _ in again]), order)  # (seed, epoch) decides the order
    ranks = [_BatchIndices(100, 10, shuffle=True, seed=1, rank=r, world=2) for r in (0, 1)]
    parts = [set(torch.cat([b for b, _ in s]).tolist()) for s in ranks]
    assert not parts[0] & parts[1] and len(parts[0]) == len(parts[1]) == 50
    labels = torch.tensor([0] * 90 + [1] * 10)
    weights = (1.0 / torch.bincount(labels).float())[labels]
    balanced = _BatchIndices(100, 50, shuffle=True, seed=0, weights=weights)
    drawn = labels[torch.cat([b for b, _ in balanced])]
    assert 0.35 < drawn.float().mean() < 0.65  # ~half the draws from the 10% class


def test_decode_cache_reuses_and_invalidates(tmp_path, monkeypatch):
    import plainnet.data.cache as cache_module

    decoded = []  # every file the cache decodes
    real_load = cache_module.load_rgb_array
    monkeypatch.setattr(cache_module, "load_rgb_array", lambda path, *a, **k: decoded.append(path) or real_load(path, *a, **k))
    folder = tmp_path / "imgs"
    folder.mkdir()
    samples = []
    for i in range(4):
        p = folder / f"{i}.png"
        Image.fromarray(np.full((20, 30, 3), i * 60, np.uint8)).save(p)
        samples.append(Sample(p, i % 2))
    (folder / "bad.png").write_text("not a png")
    samples.append(Sample(folder / "bad.png", 0))
    cache = tmp_path / "cache"
    first = decode_samples(samples, 16, cache_dir=cache)
    assert first.pixels.shape == (5, 16, 16, 3) and first.ok.tolist() == [True] * 4 + [False]
    assert first.bad[0][0].endswith("bad.png")
    assert int(first.pixels[2, 0, 0, 0]) == 120
    assert len(list(cache.glob("*.npy"))) == 1 and not list(cache.glob(".building-*"))
    assert len(decoded) == 5
    second = decode_samples(samples, 16, cache_dir=cache)
    assert second.path == first.path and len(decoded) == 5  # same files and size: memory-mapped, nothing decoded
    images, labels = second.tensors()
    assert images.shape == (4, 3, 16, 16) and labels.tolist() == [0, 1, 0, 1]
    # A changed file (content and mtime) or another size builds a new cache.
    Image.fromarray(np.full((20, 30, 3), 255, np.uint8)).save(samples[0].path)
    os.utime(samples[0].path, ns=(time.time_ns(), time.time_ns() + 10**9))
    third = decode_samples(samples, 16, cache_dir=cache)
    assert third.path != first.path and int(third.pixels[0, 0, 0, 0]) == 255 and len(decoded) == 10
    assert decode_samples(samples, 8, cache_dir=cache).pixels.shape[1] == 8


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_every_preset_produces_the_output_size(preset):
    aug = PRESETS[preset]
    x = torch.rand(3, 3, 36, 36)
    if aug is None:
        assert center_crop(x, 32).shape == (3, 3, 32, 32)
    else:
        assert aug(x, 32, torch.Generator().manual_seed(0)).shape == (3, 3, 32, 32)


def test_streamed_and_in_memory_data_go_through_one_augmentation_path(tmp_path, datasets_dir):
    """Workers only decode; the batched augmenter augments both modes, so every option (here a rotation)
    applies when streaming too, and evaluation input is the same either way."""
    from _util import potato_subset
    from plainnet.config import AugmentConfig
    from plainnet.data.datamodule import ImageDataModule
    from plainnet.data.folder import load_splits
    from plainnet.data.preprocess import Preprocess

    splits = load_splits(potato_subset(tmp_path / "potato", datasets_dir, 4), val_fraction=0.5, seed=0)
    preprocess = Preprocess(32, 0.875, (0.5,) * 3, (0.25,) * 3)
    modules = {}
    for cache in ("memory", "stream"):
        dm = ImageDataModule(splits, preprocess, AugmentConfig(preset="crop", rotate=90.0), batch_size=6, cache=cache,
                             cache_dir=str(tmp_path / "cache"))
        dm.prepare_data()
        dm.setup("fit")
        modules[cache] = dm
    memory, stream = modules["memory"], modules["stream"]
    assert stream.geometric is memory.geometric or stream.geometric == memory.geometric
    assert stream.geometric.degrees == 90.0  # the streaming path no longer drops --augment.rotate
    for (xm, ym), (xs, ys) in zip(memory.eval_batches("val", 6), stream.eval_batches("val", 6)):
        torch.testing.assert_close(xs, xm)
        assert torch.equal(ys, ym)
    # a streamed training batch is the stored-size images, augmented like an in-memory batch with that seed
    images, labels = next(iter(stream.train_dataloader()))
    assert images.dtype == torch.uint8 and images.shape[-1] == stream.side
    stream.trainer = memory.trainer = type("T", (), {"training": True})()
    for dm in (stream, memory):
        dm.process = (lambda f: (lambda x, training, seed=None: f(x, training, seed=7)))(dm.process)
    x_stream, _ = stream.on_after_batch_transfer((images, labels), 0)
    x_memory, _ = memory.on_after_batch_transfer((images, labels, torch.tensor(7)), 0)
    torch.testing.assert_close(x_stream, x_memory)
    assert not torch.allclose(x_stream, memory.process(images, training=False))  # it was augmented
