"""The LightningDataModule: image folders, CIFAR-10 batches or the bundled digits, in memory or streamed.

In memory (the default when the decoded images fit): every image is decoded once (see :mod:`.cache`),
batches are slices of a uint8 tensor, and augmentation runs batched on the device in
``on_after_batch_transfer``. Streaming (datasets too big for memory): a DataLoader with worker processes
decodes and augments per image with torchvision transforms.

Batch order and augmentation are functions of (seed, epoch, batch) only, so a resumed run repeats an
interrupted epoch exactly, and DDP ranks each take a disjoint shard.
"""

from __future__ import annotations

import logging
import math
from dataclasses import replace
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, Sampler

from ..errors import DataError
from .augment import PRESETS, center_crop, normalize, resize_center_crop
from .cifar import ArrayDataset
from .folder import Sample, Splits
from .preprocess import Preprocess

__all__ = ["Preprocess", "ImageDataModule"]

log = logging.getLogger(__name__)


class _BatchIndices(Sampler):
    """Yields ``(indices, seed)`` per batch: a shuffled (or class-weighted) order drawn from
    ``(seed, epoch)``, sharded across DDP ranks."""

    def __init__(self, n: int, batch_size: int, *, shuffle: bool, seed: int, rank: int = 0, world: int = 1,
                 weights: torch.Tensor | None = None, drop_last: bool = False) -> None:
        self.n, self.batch_size, self.shuffle, self.seed = n, batch_size, shuffle, seed
        self.rank, self.world, self.weights, self.drop_last = rank, world, weights, drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _order(self) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n)[self.rank :: self.world]
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weights is not None:
            order = torch.multinomial(self.weights, self.n, replacement=True, generator=g)
        else:
            order = torch.randperm(self.n, generator=g)
        per_rank = self.n // self.world  # equal shares, so every rank runs the same number of steps
        return order[self.rank * per_rank : (self.rank + 1) * per_rank]

    def __len__(self) -> int:
        m = self.n // self.world if self.shuffle else len(range(self.rank, self.n, self.world))
        return m // self.batch_size if self.drop_last else math.ceil(m / self.batch_size)

    def __iter__(self):
        order = self._order()
        stop = len(self) * self.batch_size
        for b, start in enumerate(range(0, min(stop, len(order)), self.batch_size)):
            yield order[start : start + self.batch_size], self.seed * 7_919 + self.epoch * 100_003 + b * 31 + self.rank


class _TensorBatches(Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images, self.labels = images, labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, item):
        idx, seed = item
        return self.images[idx], self.labels[idx], torch.tensor(seed)


class _FileImages(Dataset):
    """Streaming dataset: DataLoader workers only decode, to the stored size (shorter side resized,
    center-cropped square: what the decode cache holds), and the batches are augmented like in-memory ones.
    A file that fails to decode despite the up-front check is replaced by the next good one, with a warning."""

    def __init__(self, samples: tuple[Sample, ...], side: int) -> None:
        self.samples, self.side = samples, side

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, i: int):
        from .images import MIN_SIDE, BadImageError, load_rgb_array

        for k in range(len(self.samples)):
            s = self.samples[(i + k) % len(self.samples)]
            try:
                pixels = load_rgb_array(s.path, self.side, smallest=MIN_SIDE)
                return torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1), s.label
            except BadImageError as e:
                log.warning("skipping unreadable image %s", e)
        raise DataError("no readable image left in the dataset")


class ImageDataModule(L.LightningDataModule):
    """Train/val(/test) data for one run.

    Args:
        source: :class:`~plainnet.data.folder.Splits` (files) or an in-memory
            :class:`~plainnet.data.cifar.ArrayDataset`, whose test arrays serve as the validation split.
        preprocess: evaluation preprocessing; ``mean``/``std`` may be filled from the data in ``setup``.
        augment: an :class:`~plainnet.config.AugmentConfig`.
        cache: ``memory`` or ``stream`` (files only).
        balance: ``sampler`` draws training batches with class-balanced probabilities.
        normalize_from_data: compute mean/std from the training images instead of ImageNet's.
    """

    def __init__(self, source: Splits | ArrayDataset, preprocess: Preprocess, augment, *, batch_size: int,
                 seed: int = 0, cache: str = "memory", cache_dir: str = "", workers: int = 0,
                 balance: str = "none", normalize_from_data: bool = False,
                 channels_last: bool = False) -> None:
        super().__init__()
        self.source, self.preprocess, self.augment = source, preprocess, augment
        self.batch_size, self.seed, self.cache, self.cache_dir = batch_size, seed, cache, cache_dir
        self.workers, self.balance, self.channels_last = workers, balance, channels_last
        self.normalize_from_data = normalize_from_data
        self.classes = tuple(source.classes)
        self.bad_files: list[tuple[str, str]] = []
        self._tensors: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
        self._stream: dict[str, tuple[Sample, ...]] = {}
        self.geometric = PRESETS[augment.preset]  # (the config checked the name)
        if self.geometric is not None and augment.rotate:
            self.geometric = replace(self.geometric, degrees=augment.rotate)
        if self.geometric is not None and self.geometric.scale is None and self.side == preprocess.image_size:
            # Nothing to crop away (crop ratio 1, e.g. 32 px images): translate into a reflected border
            # instead, as in the usual CIFAR padded random crop.
            self.geometric = replace(self.geometric, translate_pad=max(1, preprocess.image_size // 8))
        self._mix = None
        #: Progressive resizing: training batches are resized to this side (``None``: the full size).
        self.train_size: int | None = None

    # ------------------------------------------------------------------ preparation
    @property
    def side(self) -> int:
        """Side of the stored images: the evaluation resize, so eval is a pure center crop."""
        return self.preprocess.resize_to

    def prepare_data(self) -> None:
        # Runs on one process per node before setup(): the decode cache is built once, not per rank.
        if isinstance(self.source, Splits) and self.cache == "memory":
            self._decode()

    def _decode(self):
        from .cache import decode_samples

        samples = self.source.train + self.source.val + self.source.test
        return decode_samples(samples, self.side, cache_dir=self.cache_dir or None)

    def setup(self, stage: str | None = None) -> None:
        if self._tensors:
            return
        if isinstance(self.source, ArrayDataset):
            self._setup_arrays()
        elif self.cache == "memory":
            self._setup_cache()
        else:
            self._setup_stream()
        if self.normalize_from_data and "train" in self._tensors:
            x = self._tensors["train"][0].float() / 255
            mean = tuple(x.mean((0, 2, 3)).tolist())
            std = tuple(x.std((0, 2, 3)).clamp(min=1e-3).tolist())
            self.preprocess = Preprocess(self.preprocess.image_size, self.preprocess.crop_ratio, mean, std)
        self._setup_mixing()

    def _setup_arrays(self) -> None:
        src = self.source
        for split, (pixels, labels) in (("train", (src.train_images, src.train_labels)),
                                        ("val", (src.test_images, src.test_labels))):
            images = torch.from_numpy(np.ascontiguousarray(pixels)).permute(0, 3, 1, 2)
            if images.shape[-1] != self.side or images.shape[-2] != self.side:
                images = resize_center_crop(images, self.side)
            self._tensors[split] = (images, torch.as_tensor(labels, dtype=torch.int64))
        self._check_nonempty()

    def _setup_cache(self) -> None:
        decoded = self._decode()
        self.bad_files = decoded.bad
        if decoded.bad:
            listed = "; ".join(f"{p} ({r})" for p, r in decoded.bad[:10])
            more = f" and {len(decoded.bad) - 10} more" if len(decoded.bad) > 10 else ""
            log.warning("skipped %d unreadable image(s): %s%s", len(decoded.bad), listed, more)
        n_train, n_val = len(self.source.train), len(self.source.val)
        ranges = {"train": (0, n_train), "val": (n_train, n_train + n_val),
                  "test": (n_train + n_val, len(decoded.labels))}
        for split, (a, b) in ranges.items():
            if b > a:
                self._tensors[split] = decoded.tensors(np.arange(a, b))
        self._check_nonempty()

    def _setup_stream(self) -> None:
        from .images import MIN_SIDE, BadImageError, load_rgb

        # Check every file up front (full decode of headers and data), so a bad file is reported
        # before training starts rather than discovered mid-epoch.
        for split in ("train", "val", "test"):
            good = []
            for s in getattr(self.source, split):
                try:
                    load_rgb(s.path, min_side=32, smallest=MIN_SIDE)
                    good.append(s)
                except BadImageError as e:
                    self.bad_files.append((str(s.path), e.reason))
            self._stream[split] = tuple(good)
        if self.bad_files:
            log.warning("skipped %d unreadable image(s): %s", len(self.bad_files),
                        "; ".join(f"{p} ({r})" for p, r in self.bad_files[:10]))
        self._tensors["train"] = (torch.empty(0), torch.tensor([s.label for s in self._stream["train"]]))

    def _check_nonempty(self) -> None:
        for split in ("train", "val"):
            if split not in self._tensors or len(self._tensors[split][1]) == 0:
                raise DataError(f"no readable images left in the {split} split")
        # A class whose every training file failed to decode is the same error as an empty class folder:
        # training on would fit a classifier that can never predict it.
        counts = torch.bincount(self._tensors["train"][1], minlength=len(self.classes)).tolist()
        empty = [c for c, n in zip(self.classes, counts) if n == 0]
        if empty:
            bad = [f"{Path(p).name} ({r})" for p, r in self.bad_files][:3]
            raise DataError(f"class folder(s) with no images: {', '.join(empty)} (no training image in them "
                            f"could be read{': ' + '; '.join(bad) if bad else ''})")

    def used_splits(self) -> Splits:
        """The file splits without the files that could not be read (listed in ``Splits.skipped``):
        what ``split.json`` records, so it names exactly the files training and evaluation used."""
        if not isinstance(self.source, Splits):
            raise TypeError("used_splits() needs a file dataset")
        bad = {p for p, _ in self.bad_files}
        keep = {name: tuple(s for s in getattr(self.source, name) if str(s.path) not in bad)
                for name in ("train", "val", "test")}
        return replace(self.source, **keep, skipped=self.source.skipped + tuple(self.bad_files))

    def _setup_mixing(self) -> None:
        from torchvision.transforms import v2

        mixers = []
        if self.augment.mixup > 0:
            mixers.append(v2.MixUp(alpha=self.augment.mixup, num_classes=len(self.classes)))
        if self.augment.cutmix > 0:
            mixers.append(v2.CutMix(alpha=self.augment.cutmix, num_classes=len(self.classes)))
        self._mix = v2.RandomChoice(mixers) if mixers else None

    # ------------------------------------------------------------------ facts used by the task
    def train_labels(self) -> torch.Tensor:
        return self._tensors["train"][1]

    def class_counts(self) -> list[int]:
        return torch.bincount(self.train_labels(), minlength=len(self.classes)).tolist()

    def class_weights(self) -> torch.Tensor:
        """Inverse-frequency weights with mean 1 (for a class-balanced loss)."""
        counts = torch.tensor(self.class_counts(), dtype=torch.float32).clamp(min=1)
        w = counts.sum() / (len(counts) * counts)
        return w / w.mean()

    def num_train(self) -> int:
        return len(self.train_labels())

    # ------------------------------------------------------------------ loaders
    def _rank_world(self) -> tuple[int, int]:
        t = self.trainer
        return (t.global_rank, t.world_size) if t is not None else (0, 1)

    def _memory_loader(self, split: str, train: bool) -> DataLoader:
        images, labels = self._tensors[split]
        rank, world = self._rank_world()
        weights = None
        if train and self.balance == "sampler":
            counts = torch.bincount(labels, minlength=len(self.classes)).float().clamp(min=1)
            weights = (1.0 / counts)[labels]
        sampler = _BatchIndices(len(labels), self.batch_size, shuffle=train, seed=self.seed, rank=rank,
                                world=world, weights=weights, drop_last=train and len(labels) > self.batch_size)
        return DataLoader(_TensorBatches(images, labels), sampler=sampler, batch_size=None, num_workers=0)

    def _stream_loader(self, split: str, train: bool, batch_size: int | None = None) -> DataLoader:
        from torch.utils.data.distributed import DistributedSampler

        dataset = _FileImages(self._stream[split], self.side)
        rank, world = self._rank_world()
        sampler = DistributedSampler(dataset, world, rank, shuffle=train, seed=self.seed, drop_last=train)
        return DataLoader(dataset, batch_size=batch_size or self.batch_size, sampler=sampler,
                          num_workers=self.workers, persistent_workers=self.workers > 0 and train, drop_last=train)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test" if self.has_split("test") else "val", False)

    def has_split(self, split: str) -> bool:
        return self.num_images(split) > 0

    def num_images(self, split: str) -> int:
        """Images in ``split`` (0 when the run has no such split)."""
        if self.cache == "stream" and isinstance(self.source, Splits):
            return len(self._stream.get(split, ()))
        return len(self._tensors[split][1]) if split in self._tensors else 0

    def _loader(self, split: str, train: bool) -> DataLoader:
        if self.cache == "stream" and isinstance(self.source, Splits):
            return self._stream_loader(split, train)
        return self._memory_loader(split, train)

    def eval_batches(self, split: str, batch_size: int = 128):
        """``(normalized input, labels)`` batches of a split, without augmentation, in either mode."""
        if self.cache == "stream" and isinstance(self.source, Splits):
            for images, labels in self._stream_loader(split, False, batch_size):
                yield self.process(images, training=False), labels
            return
        images, labels = self.eval_tensors(split)
        for i in range(0, len(labels), batch_size):
            yield self.process(images[i : i + batch_size], training=False), labels[i : i + batch_size]

    def eval_tensors(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Preprocessed-size uint8 images (center crop) and labels of an in-memory split."""
        images, labels = self._tensors[split]
        return center_crop(images, self.preprocess.image_size), labels

    # ------------------------------------------------------------------ on-device batch processing
    def on_after_batch_transfer(self, batch, dataloader_idx: int):
        training = self.trainer is not None and self.trainer.training
        # uint8 at the stored size either way; in memory with the batch's augmentation seed
        images, labels, seed = batch if len(batch) == 3 else (*batch, None)
        x = self.process(images, training, seed=None if seed is None else int(seed))
        if training and self.train_size and self.train_size < x.shape[-1]:  # progressive resizing
            x = F.interpolate(x, size=(self.train_size, self.train_size), mode="bilinear", antialias=True,
                              align_corners=False)
        if training and self._mix is not None:
            x, labels = self._mix(x, labels)
        return x, labels

    def process(self, images: torch.Tensor, training: bool, seed: int | None = None) -> torch.Tensor:
        """uint8 images at the stored size -> normalized float model input (augmented when ``training``:
        the one augmentation path, for in-memory and streamed batches alike)."""
        size, p = self.preprocess.image_size, self.preprocess
        if training and self.augment.policy != "none":
            images = self._policy(images)
        if training and self.geometric is not None:
            g = torch.Generator().manual_seed(seed if seed is not None else torch.seed())
            x = normalize(self.geometric(images.float() / 255, size, g), p.mean, p.std)
        else:
            x = normalize(center_crop(images, size) if images.shape[-1] != size else images, p.mean, p.std)
        if training and self.augment.random_erasing > 0:
            x = self._erase(x)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return x

    def _policy(self, images: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        policy = v2.TrivialAugmentWide() if self.augment.policy == "trivial" else v2.RandAugment()
        return torch.stack([policy(img) for img in images])

    def _erase(self, x: torch.Tensor) -> torch.Tensor:
        from torchvision.transforms import v2

        eraser = v2.RandomErasing(p=self.augment.random_erasing, value=0)
        return torch.stack([eraser(img) for img in x])
