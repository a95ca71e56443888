"""Image-folder datasets: layout detection, scanning, and deterministic stratified splits.

Three layouts are recognized by :func:`detect_layout`:

- ``"class-folders"``: ``ROOT/<class>/.../<image>`` with no split given (PlantVillage). :func:`load_splits`
  makes a stratified train/val(/test) split, identical for the same files and seed on every machine.
- ``"explicit"``: ``ROOT/train/<class>/...`` plus ``val/`` (or ``valid/``, ``validation/``) and an
  optional ``test/``. With ``train/`` and ``test/`` only (CIFAR-10, many Kaggle sets) ``test/`` is used
  as the validation split and the test split is empty: the model is then selected on that data, so
  its score is not an unbiased test estimate.
- ``"cifar-batches"``: the CIFAR-10 python pickles, read into arrays by
  :func:`plainnet.data.cifar.load_cifar_batches`, not by this module.

Scanning never decodes images; every problem found (missing root, no class folders, an empty class,
a single class, a class in val/ that train/ lacks) is a one-line :class:`DataError` raised before any
training starts. Names starting with "." (``.ipynb_checkpoints``, macOS ``._x.jpg`` files) are skipped.
"""

from __future__ import annotations

import logging
import os
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import DataError
from .cifar import cifar_batches_dir
from .images import IMAGE_EXTENSIONS, is_image_file

__all__ = [
    "Sample",
    "Splits",
    "SPLIT_NAMES",
    "scan_class_folders",
    "detect_layout",
    "stratified_indices",
    "stratified_split",
    "load_splits",
    "display_path",
]

log = logging.getLogger(__name__)

SPLIT_NAMES = ("train", "val", "test")
VAL_DIR_NAMES = ("val", "valid", "validation")
_SPLITS_FORMAT = "plainnet.splits"
_SPLITS_VERSION = 1


@dataclass(frozen=True)
class Sample:
    """One image file and its class index."""

    path: Path
    label: int


@dataclass(frozen=True)
class Splits:
    """The classes and the train/val/test samples of a dataset; labels index into ``classes``."""

    classes: tuple[str, ...]
    train: tuple[Sample, ...]
    val: tuple[Sample, ...]
    test: tuple[Sample, ...]
    layout: str
    root: Path
    #: ``(path, reason)`` of files found but not used: names that are not valid UTF-8 (from the scan),
    #: images that could not be decoded (added by the data module).
    skipped: tuple[tuple[str, str], ...] = ()

    def counts(self) -> dict[str, list[int]]:
        """Images per class for each split: ``{"train": [n_class0, ...], "val": [...], "test": [...]}``."""
        out = {}
        for name in SPLIT_NAMES:
            per_class = [0] * len(self.classes)
            for sample in getattr(self, name):
                per_class[sample.label] += 1
            out[name] = per_class
        return out

    def to_json(self) -> dict:
        """A JSON-ready record of which file went to which split, with paths relative to ``root`` (so a
        run directory can store it and :meth:`from_json` can re-create the split exactly, wherever the
        dataset is later mounted)."""
        record = {
            "format": _SPLITS_FORMAT,
            "version": _SPLITS_VERSION,
            "layout": self.layout,
            "root": str(self.root),
            "classes": list(self.classes),
        }
        for name in SPLIT_NAMES:
            record[name] = [[s.path.relative_to(self.root).as_posix(), s.label] for s in getattr(self, name)]
        record["skipped"] = [[display_path(p), reason] for p, reason in self.skipped]
        return record

    @classmethod
    def from_json(cls, d: dict, root: str | os.PathLike | None = None) -> Splits:
        """Re-create the splits recorded by :meth:`to_json`.

        Args:
            d: the record.
            root: where the dataset lives now; defaults to the root recorded in ``d``.

        Raises:
            DataError: the record is malformed, or a file it lists no longer exists.
        """
        try:
            if d.get("format") != _SPLITS_FORMAT:
                raise ValueError(f"format is {d.get('format')!r}, expected {_SPLITS_FORMAT!r}")
            base = Path(root if root is not None else d["root"])
            classes = tuple(str(c) for c in d["classes"])
            parts = {
                name: tuple(_sample_from_json(base, entry, len(classes)) for entry in d[name])
                for name in SPLIT_NAMES
            }
            layout = str(d["layout"])
            skipped = tuple((str(p), str(r)) for p, r in d.get("skipped", []))
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"not a valid plainnet split record: {e}") from None
        missing = [s.path for name in SPLIT_NAMES for s in parts[name] if not s.path.is_file()]
        if missing:
            raise DataError(
                f"{len(missing)} file(s) listed in the split no longer exist under {base}"
                f" (first: {missing[0].relative_to(base).as_posix()})"
            )
        return cls(classes=classes, layout=layout, root=base, skipped=skipped, **parts)


def _sample_from_json(base: Path, entry, n_classes: int) -> Sample:
    rel, label = entry
    rel_path = PurePosixPath(rel)
    if rel_path.is_absolute() or ".." in rel_path.parts:
        raise ValueError(f"path {rel!r} is not inside the dataset root")
    if not 0 <= int(label) < n_classes:
        raise ValueError(f"label {label} of {rel!r} is not a class index")
    return Sample(base.joinpath(*rel_path.parts), int(label))


def _absolute(root: str | os.PathLike) -> Path:
    # Absolute (so samples survive a chdir) but not resolved: a symlinked root keeps its name in logs.
    return Path(os.path.abspath(Path(root).expanduser()))


def _check_root(root: str | os.PathLike) -> Path:
    root = _absolute(root)
    if not root.exists():
        raise DataError(f"{root}: dataset folder does not exist")
    if not root.is_dir():
        raise DataError(f"{root}: dataset path is not a folder")
    return root


def _visible_subdirs(folder: Path) -> list[Path]:
    try:
        return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError as e:
        raise DataError(f"{folder}: cannot list folder: {e.strerror}") from None


def _raise_walk_error(err: OSError) -> None:
    raise DataError(f"{err.filename}: cannot list folder: {err.strerror}")


def display_path(path: str | os.PathLike) -> str:
    """``path`` as printable text: bytes that are not valid UTF-8 (a name from another system's
    encoding) are shown as ``\\xNN`` escapes instead of failing every write of the name."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def _valid_name(path: Path) -> bool:
    try:
        str(path).encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def _images_under(folder: Path, root: Path, skipped: list[tuple[str, str]]) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder, onerror=_raise_walk_error):
        kept = []
        for d in dirnames:
            if d.startswith("."):
                continue
            if _valid_name(Path(dirpath, d)):
                kept.append(d)
            else:
                skipped.append((str(Path(dirpath, d)), "folder name is not valid UTF-8: rename the folder"))
        dirnames[:] = kept
        for name in filenames:
            if name.startswith("."):
                continue
            path = Path(dirpath, name)
            if not is_image_file(name):
                log.debug("ignoring non-image file %s", display_path(path.relative_to(root)))
            elif not _valid_name(path):
                skipped.append((str(path), "file name is not valid UTF-8: rename the file"))
            else:
                found.append(path)
    return found


def _scan(root: str | os.PathLike, min_classes: int
          ) -> tuple[tuple[str, ...], tuple[Sample, ...], tuple[tuple[str, str], ...]]:
    """Classes, samples, and the ``(path, reason)`` of image files left out (unusable names)."""
    root = _check_root(root)
    class_dirs = _visible_subdirs(root)
    if not class_dirs:
        loose = sum(1 for p in root.iterdir() if p.is_file() and is_image_file(p))
        found = f"found {loose} images but no sub-folders" if loose else "found no sub-folders"
        raise DataError(f"{root}: expected one sub-folder per class (ROOT/<class>/<image>), {found}")
    bad_names = [display_path(d.name) for d in class_dirs if not _valid_name(d)]
    if bad_names:
        raise DataError(f"{root}: class folder name(s) not valid UTF-8: {', '.join(bad_names)}; rename them "
                        "(class names are written to classes.json and every checkpoint)")
    samples = []
    empty = []
    skipped: list[tuple[str, str]] = []
    for label, class_dir in enumerate(class_dirs):
        images = _images_under(class_dir, root, skipped)
        if not images:
            empty.append(class_dir.name)
        samples += [Sample(path, label) for path in images]
    if skipped:
        log.warning("skipped %d file(s) with unusable names: %s", len(skipped),
                    "; ".join(f"{display_path(p)} ({r})" for p, r in skipped[:10]))
    if not samples:
        raise DataError(f"{root}: no image files in any class folder (looked for {_suffix_list()})")
    if empty:
        raise DataError(
            f"{root}: class folder(s) with no images: {', '.join(empty)} (looked for {_suffix_list()})"
        )
    if len(class_dirs) < min_classes:
        raise DataError(
            f"{root}: found only one class folder ({class_dirs[0].name}); a classifier needs at least two"
        )
    # Sort by path components (not the joined string) so the order agrees with the sorted class names.
    samples.sort(key=lambda s: s.path.relative_to(root).parts)
    return tuple(d.name for d in class_dirs), tuple(samples), tuple(skipped)


def _suffix_list() -> str:
    return " ".join(sorted(IMAGE_EXTENSIONS))


def scan_class_folders(
    root: str | os.PathLike, min_classes: int = 2
) -> tuple[tuple[str, ...], tuple[Sample, ...]]:
    """The classes (sub-folders of ``root``, sorted by name) and every image inside them, recursively.

    Samples are sorted by path relative to ``root``, so the result never depends on the order the file
    system lists files in. Files without an image suffix are ignored (logged at DEBUG).

    Raises:
        DataError: ``root`` is missing or not a folder, has no class sub-folders, a class folder holds
            no images (all such folders are named), or there are fewer than ``min_classes`` classes
            (2 for training; evaluating a single class's images is legitimate).
    """
    classes, samples, _ = _scan(root, min_classes=min_classes)
    return classes, samples


def detect_layout(root: str | os.PathLike) -> str:
    """``"cifar-batches"``, ``"explicit"`` or ``"class-folders"`` (see the module docstring).

    ``"explicit"`` is decided by folder names alone: ``train/`` next to ``val/``, ``valid/``,
    ``validation/`` or ``test/``. That the split folders hold class folders is checked by
    :func:`load_splits`, which raises rather than quietly treating ``train`` and ``val`` as two classes.

    Raises:
        DataError: ``root`` is not an existing folder.
    """
    root = _check_root(root)
    if cifar_batches_dir(root) is not None:
        return "cifar-batches"
    if _split_dirs(root) is not None:
        return "explicit"
    return "class-folders"


def _split_dirs(root: Path) -> dict[str, Path] | None:
    """``{"train": ..., "val": ..., ["test": ...]}`` for an explicit layout, else ``None``."""
    train, test = root / "train", root / "test"
    val = next((root / name for name in VAL_DIR_NAMES if (root / name).is_dir()), None)
    if not train.is_dir() or (val is None and not test.is_dir()):
        return None
    if val is None:
        return {"train": train, "val": test}
    return {"train": train, "val": val, **({"test": test} if test.is_dir() else {})}


def _check_fractions(val_fraction: float, test_fraction: float) -> None:
    # Written as "not (a <= b)" so NaN fails too.
    if not (0 <= val_fraction and 0 <= test_fraction and val_fraction + test_fraction < 1):
        raise DataError(
            f"invalid split fractions val_fraction={val_fraction}, test_fraction={test_fraction}: each must"
            " be >= 0 and together < 1"
        )


def _split_sizes(n: int, val_fraction: float, test_fraction: float) -> tuple[int, int]:
    n_val = round(n * val_fraction)
    if val_fraction > 0 and n >= 2:
        n_val = max(1, n_val)  # a tiny class must still be validated on
    n_test = round(n * test_fraction)
    # Keep at least one training image per class: rounding on tiny classes can otherwise eat it all.
    n_test = max(0, min(n_test, n - n_val - 1))
    n_val = max(0, min(n_val, n - n_test - 1))
    return n_val, n_test


def stratified_indices(
    labels: Sequence[int], val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """Split positions ``0..len(labels)-1`` into train/val/test, class by class.

    Each class's positions, in the given order, are shuffled with ``random.Random(f"{seed}:{label}")``
    (string seeds are hashed with SHA-512, so this is the same on every machine and Python run); the
    first ``round(n * val_fraction)`` go to val (at least 1 when the class has >= 2 items and
    ``val_fraction > 0``), the next ``round(n * test_fraction)`` to test, the rest to train (at least 1).
    Each returned tuple is in ascending order.

    Raises:
        DataError: a fraction is negative, or they sum to 1 or more.
    """
    _check_fractions(val_fraction, test_fraction)
    by_class: dict[int, list[int]] = {}
    for i, label in enumerate(labels):
        by_class.setdefault(int(label), []).append(i)
    train: list[int] = []
    val: list[int] = []
    test: list[int] = []
    for label, positions in sorted(by_class.items()):
        n_val, n_test = _split_sizes(len(positions), val_fraction, test_fraction)
        random.Random(f"{seed}:{label}").shuffle(positions)
        val += positions[:n_val]
        test += positions[n_val : n_val + n_test]
        train += positions[n_val + n_test :]
    return tuple(sorted(train)), tuple(sorted(val)), tuple(sorted(test))


def stratified_split(
    samples: Iterable[Sample], val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0
) -> tuple[tuple[Sample, ...], tuple[Sample, ...], tuple[Sample, ...]]:
    """Deterministic stratified train/val/test split of ``samples`` (see :func:`stratified_indices`).

    The samples are sorted by path first, so the same files and seed give the same split whatever order
    they were listed in; different seeds give different splits. Each split comes back sorted by path.
    """
    ordered = sorted(samples, key=lambda s: s.path.parts)
    parts = stratified_indices([s.label for s in ordered], val_fraction, test_fraction, seed)
    return tuple(tuple(ordered[i] for i in part) for part in parts)


def load_splits(
    root: str | os.PathLike, *, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0
) -> Splits:
    """The train/val/test samples of an image-folder dataset, whatever its layout.

    ``"class-folders"`` roots are scanned and split with :func:`stratified_split`. ``"explicit"`` roots
    keep their own split (the fractions and seed are then unused); classes come from ``train/`` and
    val/test labels index into that list. For a ``"cifar-batches"`` root this raises: such data is
    loaded as arrays with :func:`plainnet.data.cifar.load_cifar_batches`, so callers check
    :func:`detect_layout` first.

    Raises:
        DataError: any scanning problem (see :func:`scan_class_folders`), a class in val/ or test/ that
            train/ lacks, invalid fractions, or a CIFAR python-batch root.
    """
    root = _absolute(root)
    layout = detect_layout(root)
    if layout == "cifar-batches":
        raise DataError(
            f"{root}: holds CIFAR-10 python batches, not image folders; load it with"
            " plainnet.data.cifar.load_cifar_batches"
        )
    if layout == "class-folders":
        classes, samples, skipped = _scan(root, min_classes=2)
        train, val, test = stratified_split(samples, val_fraction, test_fraction, seed)
    else:
        dirs = _split_dirs(root)
        if "test" not in dirs and dirs["val"].name == "test":
            log.info("%s has train/ and test/ but no val/: using test/ as the validation split", root)
        classes, train, skipped = _scan(dirs["train"], min_classes=2)
        val, skipped_val = _relabel(dirs["val"], classes)
        test, skipped_test = _relabel(dirs["test"], classes) if "test" in dirs else ((), ())
        skipped += skipped_val + skipped_test
    splits = Splits(classes=classes, train=train, val=val, test=test, layout=layout, root=root, skipped=skipped)
    log.info("%s (%s): %s", root, layout, {k: sum(v) for k, v in splits.counts().items()})
    return splits


def _relabel(folder: Path, train_classes: tuple[str, ...]) -> tuple[tuple[Sample, ...], tuple]:
    """Scan a val/test folder and re-index its labels into the training class list."""
    classes, samples, skipped = _scan(folder, min_classes=1)  # a held-out split may cover a single class
    unknown = [c for c in classes if c not in train_classes]
    if unknown:
        raise DataError(f"{folder}: class folder(s) not in train/: {', '.join(unknown)}")
    index = [train_classes.index(c) for c in classes]
    return tuple(Sample(s.path, index[s.label]) for s in samples), skipped
