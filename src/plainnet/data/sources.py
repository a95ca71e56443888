"""Open a dataset by name or path: the bundled ``digits``, CIFAR-10 python batches, or image folders."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError, DataError
from .cifar import ArrayDataset
from .folder import Splits

__all__ = ["load_source"]


def load_source(path: str, *, val_fraction: float = 0.2, test_fraction: float = 0.0,
                seed: int = 0) -> Splits | ArrayDataset:
    """The dataset at ``path``: ``"digits"``, a CIFAR-10 python-batch folder, or an image folder (class
    sub-folders, split by seed; or explicit ``train/`` + ``val/``/``test/``)."""
    from .folder import detect_layout, load_splits

    if not path:
        raise ConfigError("no data given: pass --data DIR (a folder with one sub-folder per class)")
    if path == "digits":
        from .digits import load_digits_arrays

        return load_digits_arrays(test_fraction=val_fraction, seed=seed)
    if not Path(path).exists():
        raise DataError(f"data folder not found: {path}")
    if detect_layout(path) == "cifar-batches":
        from .cifar import load_cifar_batches

        return load_cifar_batches(path)
    return load_splits(path, val_fraction=val_fraction, test_fraction=test_fraction, seed=seed)
