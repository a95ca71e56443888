"""CIFAR-10 in its official python-batch layout, and :class:`ArrayDataset`, the in-memory dataset form.

The layout (https://www.cs.toronto.edu/~kriz/cifar.html; A. Krizhevsky, "Learning Multiple Layers of
Features from Tiny Images", 2009) is a folder ``cifar-10-batches-py/`` with ``data_batch_1`` ..
``data_batch_5``, ``test_batch`` and ``batches.meta``: Python-2 pickles (protocol 2) of dicts whose
keys are byte strings. ``b"data"`` is a uint8 array of shape (N, 3072), each row the 1024 red, then
1024 green, then 1024 blue values of a 32x32 image in row-major order; ``b"labels"`` is a list of N
ints; ``batches.meta`` holds ``b"label_names"``.

Pickle runs code named inside the file, so these files are read with a restricted unpickler that
resolves only the numpy array constructors they need and refuses every other global with a
:class:`DataError`. :func:`write_cifar_batches` writes the same layout, byte strings included, so
torchvision's ``CIFAR10`` and the snippet on the CIFAR page both read its output.
"""

from __future__ import annotations

import _codecs
import logging
import os
import pickle
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DataError

__all__ = ["ArrayDataset", "cifar_batches_dir", "load_cifar_batches", "write_cifar_batches"]

log = logging.getLogger(__name__)

SUBDIR = "cifar-10-batches-py"
META_FILE = "batches.meta"
TEST_FILE = "test_batch"
TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
_SIDE = 32
_ROW = 3 * _SIDE * _SIDE

try:  # numpy >= 2 moved the array internals to numpy._core; the files name the old module
    from numpy._core.multiarray import _reconstruct, scalar
except ImportError:  # pragma: no cover - numpy 1.x
    from numpy.core.multiarray import _reconstruct, scalar

# Everything a CIFAR batch (written by Python 2 or 3, numpy 1 or 2) refers to, and nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.multiarray", "scalar"): scalar,
    ("numpy._core.multiarray", "scalar"): scalar,
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
    ("_codecs", "encode"): _codecs.encode,  # how Python 3 writes bytes at protocol 2
    ("__builtin__", "bytes"): bytes,
    ("builtins", "bytes"): bytes,
}


@dataclass(frozen=True, eq=False)  # eq on arrays would be ambiguous
class ArrayDataset:
    """A dataset held in memory: ``(N, H, W, 3)`` uint8 images and int64 labels for train and test."""

    classes: tuple[str, ...]
    train_images: np.ndarray
    train_labels: np.ndarray
    test_images: np.ndarray
    test_labels: np.ndarray

    def __post_init__(self) -> None:
        for split in ("train", "test"):
            images, labels = getattr(self, f"{split}_images"), getattr(self, f"{split}_labels")
            if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
                got = f"{images.dtype} {images.shape}"
                raise DataError(f"{split} images must be uint8 (N, H, W, 3), got {got}")
            if labels.shape != (len(images),):
                raise DataError(f"{split}: {len(images)} images but labels of shape {labels.shape}")
            if labels.size and not 0 <= labels.min() <= labels.max() < len(self.classes):
                raise DataError(f"{split} labels must lie in 0..{len(self.classes) - 1}")


class _RestrictedUnpickler(pickle.Unpickler):
    def __init__(self, file, path: Path) -> None:
        super().__init__(file, encoding="bytes")
        self._path = path

    def find_class(self, module: str, name: str):
        try:
            return _ALLOWED_GLOBALS[(module, name)]
        except KeyError:
            raise DataError(
                f"{self._path}: refusing to unpickle {module}.{name} (CIFAR batches hold only numpy arrays"
                " and plain data)"
            ) from None


def cifar_batches_dir(root: str | os.PathLike) -> Path | None:
    """The folder under ``root`` (``root`` itself or ``root/cifar-10-batches-py``) holding CIFAR-10
    python batches: ``batches.meta``, ``test_batch`` and at least one ``data_batch_N``. ``None`` if
    neither does."""
    root = Path(root)
    for folder in (root, root / SUBDIR):
        if (
            (folder / META_FILE).is_file()
            and (folder / TEST_FILE).is_file()
            and any((folder / name).is_file() for name in TRAIN_FILES)
        ):
            return folder
    return None


def load_cifar_batches(root: str | os.PathLike) -> ArrayDataset:
    """Read CIFAR-10 python batches from ``root`` or ``root/cifar-10-batches-py``.

    Training data is every ``data_batch_1`` .. ``data_batch_5`` present (at least one); test data is
    ``test_batch``. Images come back as ``(N, 32, 32, 3)`` uint8, labels as int64.

    Raises:
        DataError: a file is missing, unreadable, malformed, or names anything but numpy arrays.
    """
    folder = cifar_batches_dir(root)
    if folder is None:
        raise DataError(
            f"{root}: no CIFAR-10 python batches here or in {SUBDIR}/ (need {META_FILE}, {TEST_FILE} and"
            " data_batch_1..5)"
        )
    meta = _read_pickle(folder / META_FILE)
    classes = tuple(_text(name) for name in _field(meta, "label_names", folder / META_FILE))
    train_files = [folder / name for name in TRAIN_FILES if (folder / name).is_file()]
    train = [_read_batch(path) for path in train_files]
    test_images, test_labels = _read_batch(folder / TEST_FILE)
    log.info("read %d CIFAR training batches and the test batch from %s", len(train), folder)
    return ArrayDataset(
        classes=classes,
        train_images=np.concatenate([images for images, _ in train]),
        train_labels=np.concatenate([labels for _, labels in train]),
        test_images=test_images,
        test_labels=test_labels,
    )


def write_cifar_batches(
    images: np.ndarray,
    labels,
    classes,
    root: str | os.PathLike,
    per_batch: int = 10_000,
    *,
    test_images: np.ndarray | None = None,
    test_labels=None,
) -> list[Path]:
    """Write ``(N, 32, 32, 3)`` uint8 training images in the official python-batch layout into
    ``root`` (the folder itself, e.g. ``.../cifar-10-batches-py``).

    Writes ``data_batch_1`` .. ``data_batch_k`` of ``per_batch`` images each (k <= 5, as in the
    original), ``batches.meta`` and, when ``test_images``/``test_labels`` are given, ``test_batch``
    (:func:`load_cifar_batches` needs it). Returns the paths written.
    """
    images, labels = _check_arrays(images, labels, len(classes))
    n_batches = -(-len(images) // per_batch) if per_batch > 0 else 0
    if not 1 <= n_batches <= len(TRAIN_FILES):
        raise ValueError(f"{len(images)} images in batches of {per_batch} is not 1..5 training batches")
    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    written = [
        _write_pickle(
            root / META_FILE,
            {
                b"num_cases_per_batch": per_batch,
                b"label_names": [str(c).encode() for c in classes],
                b"num_vis": _ROW,
            },
        )
    ]
    for i in range(n_batches):
        part = slice(i * per_batch, (i + 1) * per_batch)
        batch = _batch_dict(images[part], labels[part], classes, f"training batch {i + 1} of {n_batches}")
        written.append(_write_pickle(root / TRAIN_FILES[i], batch))
    if test_images is not None:
        test_images, test_labels = _check_arrays(test_images, test_labels, len(classes))
        batch = _batch_dict(test_images, test_labels, classes, "testing batch 1 of 1")
        written.append(_write_pickle(root / TEST_FILE, batch))
    return written


def _read_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f, path).load()
    except DataError:
        raise
    except Exception as e:  # truncated, not a pickle, bad numpy state: all mean "unusable file"
        reason = " ".join(str(e).split())[:200] or type(e).__name__
        raise DataError(f"{path}: cannot read CIFAR batch: {reason}") from None


def _field(record, key: str, path: Path):
    """``record[b"key"]``; str keys are accepted too, for batches re-pickled by Python 3."""
    if isinstance(record, dict):
        for k in (key.encode(), key):
            if k in record:
                return record[k]
    raise DataError(f"{path}: not a CIFAR batch (no '{key}' entry)")


def _text(name) -> str:
    return name.decode("utf-8") if isinstance(name, bytes) else str(name)


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    record = _read_pickle(path)
    data = _field(record, "data", path)
    labels = np.asarray(_field(record, "labels", path), dtype=np.int64)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != _ROW:
        raise DataError(f"{path}: 'data' must be a uint8 array of shape (N, {_ROW})")
    if labels.shape != (len(data),):
        raise DataError(f"{path}: {len(data)} images but {labels.size} labels")
    # Rows are planar (all R, all G, all B); images are wanted channels-last.
    images = data.reshape(-1, 3, _SIDE, _SIDE).transpose(0, 2, 3, 1)
    return np.ascontiguousarray(images), labels


def _check_arrays(images, labels, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = np.asarray(images)
    labels = np.asarray(labels, dtype=np.int64)
    if images.dtype != np.uint8 or images.shape[1:] != (_SIDE, _SIDE, 3):
        raise ValueError(f"images must be uint8 (N, 32, 32, 3), got {images.dtype} {images.shape}")
    if labels.shape != (len(images),) or (labels.size and not 0 <= labels.min() <= labels.max() < n_classes):
        raise ValueError(f"labels must be {len(images)} ints in 0..{n_classes - 1}")
    return images, labels


def _batch_dict(images: np.ndarray, labels: np.ndarray, classes, batch_label: str) -> dict:
    data = np.ascontiguousarray(images.transpose(0, 3, 1, 2)).reshape(len(images), _ROW)
    return {
        b"batch_label": batch_label.encode(),
        b"labels": [int(y) for y in labels],
        b"data": data,
        b"filenames": [f"{classes[y]}_s_{i:06d}.png".encode() for i, y in enumerate(labels)],
    }


class _Python2Pickler(pickle._Pickler):
    """Protocol 2 as Python 2 wrote it, so every CIFAR reader accepts the files.

    Python 3 writes ``bytes`` at protocol 2 as a call to ``_codecs.encode``, which always loads as
    bytes; Python 2 wrote its ``str`` as BINSTRING, which loads as bytes under ``encoding="bytes"``
    (the CIFAR page's reader) and as str under ``encoding="latin1"`` (torchvision's). numpy 2 names
    its array constructor ``numpy._core.multiarray``, which numpy 1 cannot import; the originals
    use ``numpy.core.multiarray``, which every numpy resolves.
    """

    dispatch = pickle._Pickler.dispatch.copy()

    def save_py2_str(self, obj: bytes) -> None:
        if len(obj) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(obj)]) + obj)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(obj)) + obj)
        self.memoize(obj)

    dispatch[bytes] = save_py2_str

    def save_global(self, obj, name=None) -> None:
        if obj is _reconstruct:
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
        else:
            super().save_global(obj, name)


def _write_pickle(path: Path, obj) -> Path:
    with open(path, "wb") as f:
        _Python2Pickler(f, protocol=2).dump(obj)
    return path
