"""Dataset layouts, scanning, stratified splits, CIFAR python batches and the bundled digits."""

from __future__ import annotations

import json
import os
import pickle
import random
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from plainnet.data.cifar import ArrayDataset, load_cifar_batches, write_cifar_batches
from plainnet.data.digits import load_digits_arrays
from plainnet.data.folder import (
    Sample,
    Splits,
    detect_layout,
    load_splits,
    scan_class_folders,
    stratified_split,
)
from plainnet.errors import DataError

POTATO_COUNTS = [1000, 1000, 152]


@pytest.fixture(scope="module")
def potato(datasets_dir):
    return scan_class_folders(datasets_dir / "potato")


def _make_tree(root: Path, files: dict[str, int]) -> Path:
    """Empty files stand in for images: scanning never decodes them."""
    for folder, n in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            (root / folder / f"img {i:03d}.JPG").touch()
    return root


def _raises_one_line(match: str, call, *args, **kwargs) -> str:
    with pytest.raises(DataError, match=match) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message
    return message


# ---- scanning and splitting ------------------------------------------------------------------------


def test_scan_potato_finds_every_image_sorted(potato, datasets_dir):
    classes, samples = potato
    assert classes == ("Potato___Early_blight", "Potato___Late_blight", "Potato___healthy")
    assert [sum(s.label == k for s in samples) for k in range(3)] == POTATO_COUNTS
    assert all(s.path.is_absolute() and s.path.parent.name == classes[s.label] for s in samples)
    assert list(samples) == sorted(samples, key=lambda s: (s.label, s.path.name))


def test_split_is_deterministic_stratified_and_seed_dependent(potato):
    _, samples = potato
    train, val, test = stratified_split(samples, val_fraction=0.2, seed=0)
    shuffled = list(samples)
    random.Random(123).shuffle(shuffled)
    assert stratified_split(shuffled, val_fraction=0.2, seed=0) == (train, val, test)
    assert stratified_split(samples, val_fraction=0.2, seed=0) == (train, val, test)
    other = stratified_split(samples, val_fraction=0.2, seed=1)
    assert set(other[1]) != set(val) and len(other[1]) == len(val)

    assert test == ()
    assert set(train) | set(val) == set(samples) and not set(train) & set(val)
    for k, n in enumerate(POTATO_COUNTS):
        n_val = sum(s.label == k for s in val)
        assert abs(n_val - 0.2 * n) <= 1


def test_split_with_test_fraction_and_tiny_classes():
    samples = [Sample(Path(f"/d/a/{i}.png"), 0) for i in range(50)]
    samples += [Sample(Path(f"/d/b/{i}.png"), 1) for i in range(2)]
    samples += [Sample(Path("/d/c/0.png"), 2)]
    train, val, test = stratified_split(samples, val_fraction=0.1, test_fraction=0.2, seed=3)
    per_class = [[sum(s.label == k for s in part) for part in (train, val, test)] for k in range(3)]
    assert per_class[0] == [35, 5, 10]
    assert per_class[1] == [1, 1, 0]  # a 2-image class still gets one validation image, keeps one to train
    assert per_class[2] == [1, 0, 0]  # a single image always trains
    for val, test in [(-0.1, 0.0), (0.6, 0.4), (np.nan, 0.0)]:
        _raises_one_line("invalid split fractions", stratified_split, samples, val, test)


def test_load_splits_on_class_folders_round_trips_through_json(datasets_dir, tmp_path):
    splits = load_splits(datasets_dir / "potato", val_fraction=0.2, test_fraction=0.1, seed=7)
    assert splits.layout == "class-folders" and len(splits.classes) == 3
    counts = splits.counts()
    assert [a + b + c for a, b, c in zip(counts["train"], counts["val"], counts["test"])] == POTATO_COUNTS
    assert counts["test"] == [100, 100, 15]

    record = json.loads(json.dumps(splits.to_json()))
    first = record["val"][0][0]
    assert not Path(first).is_absolute() and first.split("/")[0] in splits.classes
    assert Splits.from_json(record) == splits

    # Re-created elsewhere (the dataset moved): the same relative paths under the new root.
    moved = _make_tree(tmp_path / "moved", {"a": 3, "b": 2})
    small = load_splits(moved, val_fraction=0.4, seed=0)
    again = Splits.from_json(json.loads(json.dumps(small.to_json())), root=moved)
    assert again == small
    os.remove(small.val[0].path)
    message = _raises_one_line("no longer exist", Splits.from_json, small.to_json())
    assert str(moved) in message and small.val[0].path.name in message
    _raises_one_line("not a valid plainnet split record", Splits.from_json, {"format": "something else"})


def test_explicit_layout_imagenette(datasets_dir):
    root = datasets_dir / "imagenette"
    assert detect_layout(root) == "explicit"
    splits = load_splits(root)
    assert splits.layout == "explicit" and len(splits.classes) == 10
    assert splits.counts() == {"train": [100] * 10, "val": [50] * 10, "test": [0] * 10}
    assert {s.path.parts[-3] for s in splits.val} == {"val"}
    assert all(s.path.parent.name == splits.classes[s.label] for s in splits.val + splits.train)


def test_explicit_layout_with_test_only_uses_test_as_validation(datasets_dir):
    root = datasets_dir / "cifar10"
    assert detect_layout(root) == "explicit"
    splits = load_splits(root, val_fraction=0.5)  # fractions do not apply to an explicit split
    assert splits.classes[0] == "airplane" and splits.classes[-1] == "truck"
    assert splits.counts() == {"train": [1000] * 10, "val": [1000] * 10, "test": [0] * 10}
    assert {s.path.parts[-3] for s in splits.val} == {"test"}


def test_explicit_layout_relabels_val_and_keeps_test(tmp_path):
    tree = {"train/cat": 3, "train/dog": 3, "valid/dog": 2, "test/cat": 1, "test/dog": 1}
    root = _make_tree(tmp_path, tree)
    splits = load_splits(root)
    assert splits.classes == ("cat", "dog")
    assert {s.label for s in splits.val} == {1}  # val holds only "dog", label 1 of the TRAIN list
    assert splits.counts()["test"] == [1, 1]

    _make_tree(tmp_path, {"valid/bird": 1})
    message = _raises_one_line("not in train/", load_splits, root)
    assert "bird" in message


def test_hidden_and_non_image_files_are_ignored(tmp_path):
    root = _make_tree(tmp_path, {"a": 2, "b/nested/deeper": 1, ".ipynb_checkpoints": 4, "b/.cache": 2})
    (root / "a" / "notes.txt").write_text("x")
    (root / "a" / "._img 000.JPG").touch()  # macOS resource fork next to a real name
    classes, samples = scan_class_folders(root)
    assert classes == ("a", "b")
    assert [s.path.relative_to(root).as_posix() for s in samples] == [
        "a/img 000.JPG",
        "a/img 001.JPG",
        "b/nested/deeper/img 000.JPG",
    ]


@pytest.mark.parametrize(
    "files, match, named",
    [
        ({"cats": 2, "dogs": 0, "emus": 0}, "class folder\\(s\\) with no images", "dogs, emus"),
        ({"cats": 3}, "only one class", "cats"),
        ({"cats": 0, "dogs": 0}, "no image files", ""),
        ({}, "expected one sub-folder per class", ""),
    ],
)
def test_scan_errors_are_one_line_and_name_the_problem(tmp_path, files, match, named):
    root = _make_tree(tmp_path / "data", files)
    root.mkdir(exist_ok=True)
    message = _raises_one_line(match, load_splits, root)
    assert str(root) in message and named in message


def test_missing_root_and_loose_images(tmp_path):
    _raises_one_line("does not exist", load_splits, tmp_path / "nowhere")
    _raises_one_line("does not exist", detect_layout, tmp_path / "nowhere")
    (tmp_path / "x.png").touch()
    _raises_one_line("not a folder", scan_class_folders, tmp_path / "x.png")
    _raises_one_line("found 1 images but no sub-folders", scan_class_folders, tmp_path)


# ---- CIFAR-10 python batches -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def cifar_pngs(datasets_dir):
    """10 real images per class from each CIFAR-10 split (200 in all) and their pixels."""
    root = datasets_dir / "cifar10"
    classes = tuple(sorted(p.name for p in (root / "train").iterdir()))
    out = {}
    for split in ("train", "test"):
        files = [(f, k) for k, c in enumerate(classes) for f in sorted((root / split / c).iterdir())[:10]]
        random.Random(0).shuffle(files)
        images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f, _ in files])
        out[split] = images, np.array([k for _, k in files])
    return classes, out


def test_cifar_batches_round_trip_real_pixels(cifar_pngs, tmp_path, monkeypatch):
    classes, data = cifar_pngs
    (train_x, train_y), (test_x, test_y) = data["train"], data["test"]
    folder = tmp_path / "cifar-10-batches-py"
    written = write_cifar_batches(
        train_x, train_y, classes, folder, per_batch=20, test_images=test_x, test_labels=test_y
    )
    assert sorted(p.name for p in written) == sorted(
        ["batches.meta", "test_batch"] + [f"data_batch_{i}" for i in range(1, 6)]
    )
    assert detect_layout(tmp_path) == "cifar-batches" and detect_layout(folder) == "cifar-batches"
    _raises_one_line("load_cifar_batches", load_splits, tmp_path)

    ds = load_cifar_batches(tmp_path)
    assert ds.classes == classes
    assert ds.train_images.shape == (100, 32, 32, 3) and ds.train_images.dtype == np.uint8
    assert np.array_equal(ds.train_images, train_x) and np.array_equal(ds.test_images, test_x)
    assert ds.train_labels.dtype == np.int64 and np.array_equal(ds.train_labels, train_y)
    assert np.array_equal(ds.test_labels, test_y)

    # The official readers: the CIFAR page's snippet (bytes keys) and torchvision's CIFAR10 (latin1).
    with open(folder / "data_batch_1", "rb") as f:
        batch = pickle.load(f, encoding="bytes")
    assert batch[b"data"].shape == (20, 3072) and batch[b"labels"] == train_y[:20].tolist()
    assert np.array_equal(batch[b"data"][0, :1024].reshape(32, 32), train_x[0, :, :, 0])  # planar red first
    import torchvision.datasets.cifar as tv_cifar

    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)  # md5s of the originals
    tv = tv_cifar.CIFAR10(str(tmp_path), train=True, download=False)
    assert tv.classes == list(classes) and np.array_equal(tv.data, train_x) and tv.targets == train_y.tolist()


class _Exploit:
    def __reduce__(self):
        return os.system, ("touch pwned",)


def test_cifar_reader_refuses_code_and_corrupt_files(cifar_pngs, tmp_path, monkeypatch):
    classes, data = cifar_pngs
    test_x, test_y = data["test"]
    write_cifar_batches(*data["train"], classes, tmp_path, 100, test_images=test_x, test_labels=test_y)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data_batch_1").write_bytes(pickle.dumps({b"data": _Exploit()}, protocol=2))
    message = _raises_one_line("refusing to unpickle", load_cifar_batches, tmp_path)
    assert "system" in message and "data_batch_1" in message
    assert not (tmp_path / "pwned").exists()

    (tmp_path / "data_batch_1").write_bytes((tmp_path / "test_batch").read_bytes()[:500])
    _raises_one_line("data_batch_1: cannot read CIFAR batch", load_cifar_batches, tmp_path)
    (tmp_path / "data_batch_1").unlink()
    _raises_one_line("no CIFAR-10 python batches", load_cifar_batches, tmp_path)


# ---- bundled digits --------------------------------------------------------------------------------


def test_digits_arrays_are_real_stratified_and_deterministic():
    ds = load_digits_arrays(test_fraction=0.2, seed=0)
    assert isinstance(ds, ArrayDataset) and ds.classes == tuple("0123456789")
    assert len(ds.train_images) + len(ds.test_images) == 1797
    assert ds.train_images.shape[1:] == (8, 8, 3) and ds.train_images.dtype == np.uint8
    assert ds.train_images.max() == 255 and (ds.train_images[..., 0] == ds.train_images[..., 2]).all()
    assert set(np.unique(ds.test_images)) <= {round(v * 255 / 16) for v in range(17)}
    per_class = np.bincount(ds.train_labels, minlength=10) + np.bincount(ds.test_labels, minlength=10)
    assert np.all(np.abs(np.bincount(ds.test_labels, minlength=10) - 0.2 * per_class) <= 1)

    again = load_digits_arrays(test_fraction=0.2, seed=0)
    assert np.array_equal(again.test_images, ds.test_images)
    assert np.array_equal(again.test_labels, ds.test_labels)
    other = load_digits_arrays(test_fraction=0.2, seed=1)
    assert len(other.test_labels) == len(ds.test_labels)
    assert not np.array_equal(other.test_images, ds.test_images)
