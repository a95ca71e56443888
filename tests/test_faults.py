"""Hostile input, files and disks: model files that try to run code, bad options, full and read-only
disks, broken data, unreadable checkpoints. Each case ends in one readable line and exit code 2 (1 for
"some predictions failed"), never a traceback, never code from a file, never a lost file."""

from __future__ import annotations

import builtins
import errno
import io
import json
import os
import struct
import zipfile
import zlib
from pathlib import Path

import pytest
import torch
from PIL import Image

import plainnet
from _util import FP32, digits_folder, run_cli
from plainnet.deploy.export import export_onnx, export_pt2
from plainnet.errors import DataError, WeightsError
from plainnet.model_files import read_pt2, read_torch_file

TRAIN = ["--train.precision", "fp32", "--train.progress", "false", "--augment.preset", "shift",
         "--data.image_size", "8"]


class Payload:
    """Unpickling this creates ``marker``: proof that a loader ran code from a file."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def one_error_line(proc) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.startswith(("error:", "internal error:"))]
    assert len(lines) == 1 and lines[0].startswith("error:"), proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout and "weights_only" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """A finished one-epoch run on 200 digits (8 px): a real run directory to break in the tests below."""
    root = tmp_path_factory.mktemp("digits")
    result = plainnet.train(data=str(digits_folder(root / "data", 20)), model="repvgg_a0", epochs=1, overrides={
        **FP32, "train.runs_dir": str(root / "runs"), "train.name": "run", "augment.preset": "shift",
        "data.image_size": "8", "data.cache_dir": str(root / "cache")})
    return result


# ----------------------------------------------------------------------------- model files that run code


def test_a_pickled_payload_in_a_checkpoint_never_runs(digits_run, tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload(marker)}, evil)
    for args in (["predict", evil, digits_run.run_dir], ["eval", evil], ["export", evil, "-o", tmp_path / "x.onnx"]):
        proc = run_cli(*args)
        assert proc.code == 2 and "could run code" in one_error_line(proc)
    with pytest.raises(WeightsError, match="could run code"):
        plainnet.create_model("repvgg_a0", num_classes=10, weights=evil)
    assert not marker.exists()


def pt2_with(source: Path, target: Path, edit) -> Path:
    """A copy of a .pt2 archive with ``edit(name, bytes) -> bytes | None`` applied to each entry
    (``None`` drops it) and ``edit(None, None) -> {name: bytes}`` entries added."""
    with zipfile.ZipFile(source) as src, zipfile.ZipFile(target, "w") as dst:
        for info in src.infolist():
            data = edit(info.filename, src.read(info.filename))
            if data is not None:
                dst.writestr(info.filename, data)
        for name, data in (edit(None, None) or {}).items():
            dst.writestr(name, data)
    return target


@pytest.fixture(scope="module")
def good_pt2(tmp_path_factory) -> Path:
    model = plainnet.create_model("repvgg_a0", num_classes=3, small_input=True).eval()
    path = tmp_path_factory.mktemp("pt2") / "good.pt2"
    meta = {"classes": ["a", "b", "c"], "preprocess": {"image_size": 32, "crop_ratio": 1.0, "mean": [0.5] * 3,
                                                       "std": [0.25] * 3}}
    return export_pt2(model, path, torch.randn(2, 3, 32, 32), metadata=meta, dynamic_batch=True).path


def _pickled(obj) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def _evil_weight(marker):
    def edit(name, data):
        if name is None:
            return None
        if name.endswith("data/weights/model_weights_config.json"):
            config = json.loads(data)
            first = next(iter(config["config"].values()))
            first["use_pickle"] = True
            return json.dumps(config).encode()
        if name.endswith("data/weights/weight_0"):
            return _pickled(Payload(marker))
        return data
    return edit


def _evil_sample_inputs(marker):
    def edit(name, data):
        if name is not None and name.endswith("data/sample_inputs/model.pt"):
            return _pickled(Payload(marker))  # the safe unpickler refuses it; torch then retries unsafely
        return data
    return edit


def _evil_opaque_constant(marker):
    import pickle

    def edit(name, data):
        if name is None:
            return None
        if name.endswith("data/constants/model_constants_config.json"):
            config = json.loads(data)
            config["config"]["evil"] = {"path_name": "opaque_obj_0", "is_param": False, "use_pickle": True,
                                        "tensor_meta": None}
            return json.dumps(config).encode()
        return data

    def add(name, data):
        if name is None:
            root = "good/"
            return {root + "data/constants/opaque_obj_0": pickle.dumps(Payload(marker))}
        return edit(name, data)
    return add


@pytest.mark.parametrize("attack", [_evil_weight, _evil_sample_inputs, _evil_opaque_constant],
                         ids=["pickled-weight", "pickled-sample-inputs", "opaque-constant"])
def test_a_pt2_that_would_run_code_is_refused_before_torch_reads_it(good_pt2, tmp_path, attack):
    control_marker, marker = tmp_path / "control", tmp_path / "pwned"
    control = pt2_with(good_pt2, tmp_path / "control.pt2", attack(control_marker))
    try:  # the payload is real: torch's own loader runs it
        torch.export.load(str(control))
    except Exception:  # noqa: BLE001 - it may also fail after running the payload; what matters is the marker
        pass
    assert control_marker.exists(), "the test payload did not run under torch.export.load"

    evil = pt2_with(good_pt2, tmp_path / "evil.pt2", attack(marker))
    with pytest.raises(WeightsError, match="refused"):
        read_pt2(evil)
    images = tmp_path / "images"
    images.mkdir()
    Image.new("RGB", (32, 32)).save(images / "a.png")
    for args in (["predict", evil, images], ["eval", evil, "--data", images]):
        proc = run_cli(*args)
        assert proc.code == 2 and "refused" in one_error_line(proc)
    assert not marker.exists()
    assert read_pt2(good_pt2)[1]["classes"] == ["a", "b", "c"]  # plainnet's own exports still load


def test_onnx_weights_outside_the_model_folder_are_refused(tmp_path):
    import onnx

    model = plainnet.create_model("repvgg_a0", num_classes=3, small_input=True).eval()
    path = export_onnx(model, tmp_path / "m.onnx", torch.randn(2, 3, 32, 32), dynamic_batch=True).path
    proto = onnx.load(str(path))
    (tmp_path.parent / "secret.bin").write_bytes(b"\0" * 4096)
    tensor = max(proto.graph.initializer, key=lambda t: len(t.raw_data))
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    for key, value in (("location", "../secret.bin"), ("offset", "0"), ("length", "4096")):
        tensor.external_data.add(key=key, value=value)
    (tmp_path / "evil.onnx").write_bytes(proto.SerializeToString())  # onnx.save itself would refuse '..'
    from plainnet.model_files import onnx_session

    with pytest.raises(WeightsError, match="outside the model's folder"):
        onnx_session(tmp_path / "evil.onnx")


# ----------------------------------------------------------------------------- damaged and odd model files


@pytest.mark.parametrize("content,message", [
    (b"", "is empty (0 bytes)"),
    (b"PK\x03\x04 truncated zip", "is not a PyTorch checkpoint file, or it is truncated"),
    (b"not a checkpoint at all, just text", "is not a PyTorch checkpoint file (neither a zip archive nor a pickle)"),
])
def test_damaged_checkpoints_are_one_sentence(tmp_path, content, message):
    path = tmp_path / "model.pt"
    path.write_bytes(content)
    proc = run_cli("predict", path, tmp_path)
    line = one_error_line(proc)
    assert proc.code == 2 and message in line
    assert not line.endswith(("(", ",")) and len(line) < 400  # a whole sentence, not cut mid-word


def test_a_truncated_real_checkpoint(digits_run, tmp_path):
    data = (digits_run.run_dir / "best.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated"):
        read_torch_file(cut)


def test_classes_that_do_not_fit_the_model_are_an_error(digits_run, tmp_path):
    payload = torch.load(digits_run.best_checkpoint, weights_only=True)
    payload["classes"] = payload["classes"][:3]  # 3 names, 10 outputs
    torch.save(payload, tmp_path / "short.pt")
    proc = run_cli("predict", tmp_path / "short.pt", tmp_path)
    assert proc.code == 2 and "names 3 classes but its model predicts 10" in one_error_line(proc)


def test_a_run_whose_classes_json_disagrees_with_its_checkpoint(digits_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run.run_dir, run)
    classes = json.loads((run / "classes.json").read_text())
    (run / "classes.json").write_text(json.dumps(classes[::-1]))
    proc = run_cli("predict", run, tmp_path)
    assert proc.code == 2 and "classes.json" in one_error_line(proc)


def test_safetensors_weights_load(tmp_path):
    from safetensors.torch import save_file

    model = plainnet.create_model("repvgg_a0", num_classes=4, small_input=True).eval()
    save_file(model.state_dict(), tmp_path / "w.safetensors")
    loaded = plainnet.create_model("repvgg_a0", num_classes=4, small_input=True, weights=tmp_path / "w.safetensors")
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x), model(x))
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(WeightsError, match="not a valid safetensors file"):
        plainnet.create_model("repvgg_a0", num_classes=4, weights=tmp_path / "bad.safetensors")


# ----------------------------------------------------------------------------- options out of range


@pytest.mark.parametrize("args,message", [
    (["--epochs", "-1"], "train.epochs: -1 is out of range (allowed: >= 1 or auto)"),
    (["--optim.lr", "-0.1"], "optim.lr: -0.1 is out of range (allowed: > 0.0 or auto)"),
    (["--optim.lr", "nan"], "optim.lr: nan is out of range"),
    (["--data.batch_size", "0"], "data.batch_size: 0 is out of range (allowed: >= 1 or auto)"),
    (["--data.val_fraction", "1"], "data.val_fraction: 1.0 is out of range (allowed: (0.0, 1.0))"),
    (["--data.image_size", "4"], "data.image_size: 4 is out of range (allowed: [8, 4096] or auto)"),
    (["--model.output_stride", "12"], "model.output_stride: 12 is not allowed (one of 8, 16, 32 or auto)"),
])
def test_options_out_of_range_fail_before_any_work(tmp_path, args, message):
    proc = run_cli("train", "--data", "digits", "--runs-dir", tmp_path / "runs", *args)
    assert proc.code == 2 and message in one_error_line(proc)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- full and read-only disks


@pytest.fixture
def failing_disk(monkeypatch):
    """``failing_disk(folder, errno)``: from now on every file written under ``folder`` fails as it
    would on a full (ENOSPC) or read-only (EROFS) disk: a read-only disk refuses the open, a full one
    opens and then fails on the write, with no file name in the error (writes go to /dev/full).
    Reads and everything elsewhere work."""

    def install(folder: Path, code: int = errno.ENOSPC) -> None:
        root = Path(folder).resolve()
        real_open, real_os_open = builtins.open, os.open

        def under(path) -> bool:
            try:
                return Path(os.fsdecode(os.fspath(path))).resolve().is_relative_to(root)
            except TypeError:
                return False  # a file descriptor

        def fail(path):
            raise OSError(code, os.strerror(code), os.fsdecode(os.fspath(path)))

        def fake_open(file, mode="r", *args, **kwargs):
            if any(c in mode for c in "wax+") and under(file):
                if code != errno.ENOSPC:
                    fail(file)
                return real_open("/dev/full", mode.replace("x", "w"), *args, **kwargs)
            return real_open(file, mode, *args, **kwargs)

        def fake_os_open(path, flags, *args, **kwargs):
            if flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and under(path):
                if code != errno.ENOSPC:
                    fail(path)
                return real_os_open("/dev/full", flags & ~(os.O_CREAT | os.O_EXCL | os.O_TRUNC), *args, **kwargs)
            return real_os_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(builtins, "open", fake_open)
        monkeypatch.setattr(io, "open", fake_open)
        monkeypatch.setattr(os, "open", fake_os_open)

    return install


def test_training_onto_a_full_disk_is_one_line_and_leaves_no_half_run(tmp_path, failing_disk):
    data = digits_folder(tmp_path / "data", 10)
    runs = tmp_path / "runs"
    runs.mkdir()
    failing_disk(runs)
    proc = run_cli("train", "--data", data, "--runs-dir", runs, "--name", "full", "--epochs", "1",
                   "--data.cache_dir", tmp_path / "cache", *TRAIN)
    line = one_error_line(proc)
    assert proc.code == 2 and "no space left on the device while writing" in line and str(runs) in line
    assert list(runs.iterdir()) == []  # the half-made run directory was removed


@pytest.mark.parametrize("code,message", [(errno.ENOSPC, "no space left"), (errno.EROFS, "read-only file system")])
def test_eval_and_predict_outputs_on_a_failing_disk(digits_run, tmp_path, failing_disk, code, message):
    out, cams = tmp_path / "eval", tmp_path / "cams"
    images = Path(digits_run.config.data.path) / "3"
    failing_disk(tmp_path, code)
    for args in (["eval", digits_run.run_dir, "--out", out], ["predict", digits_run.run_dir, images, "--explain", cams]):
        proc = run_cli(*args)
        line = one_error_line(proc)
        assert proc.code == 2 and message in line and str(tmp_path) in line, args


# ----------------------------------------------------------------------------- resuming from a bad checkpoint


def test_resume_from_an_unreadable_checkpoint_changes_nothing(digits_run, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(digits_run.run_dir, run)
    (run / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 cut off by a crash")
    before = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    proc = run_cli("train", "--resume", run)
    line = one_error_line(proc)
    assert proc.code == 2 and "last.ckpt" in line and "best.pt" in line and "Nothing in the run was changed" in line
    after = {p.relative_to(run): p.read_bytes() for p in run.rglob("*") if p.is_file()}
    assert after == before


# ----------------------------------------------------------------------------- training data that is not what it seems


def _png_claiming(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's signature)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def test_training_data_traps_are_skipped_named_and_recorded(tmp_path):
    data = digits_folder(tmp_path / "data", 12)
    (data / "0" / "bomb.png").write_bytes(_png_claiming(30000, 30000))
    Image.new("RGB", (1, 1)).save(data / "1" / "pixel.png")
    bad_name = os.fsencode(data / "2") + b"/caf\xe9.png"  # Latin-1 bytes: not valid UTF-8
    with open(bad_name, "wb") as f:
        Image.new("RGB", (8, 8)).save(f, format="PNG")
    result = plainnet.train(data=str(data), model="repvgg_a0", epochs=1, overrides={
        **FP32, "train.runs_dir": str(tmp_path / "runs"), "augment.preset": "shift", "data.image_size": "8",
        "data.cache_dir": str(tmp_path / "cache")})
    results = json.loads((result.run_dir / "results.json").read_text())
    reasons = {Path(p).name: r for p, r in results["bad_files"]}
    assert set(reasons) == {"bomb.png", "pixel.png", "caf\\xe9.png"}
    assert "too large" in reasons["bomb.png"] and "too small" in reasons["pixel.png"]
    assert "not valid UTF-8" in reasons["caf\\xe9.png"]
    split = json.loads((result.run_dir / "split.json").read_text())
    used = {p for part in ("train", "val", "test") for p, _ in split[part]}
    assert len(used) == 120 and not {Path(p).name for p in used} & set(reasons)  # what was used, nothing else
    assert {Path(p).name for p, _ in split["skipped"]} == set(reasons)


def test_a_class_with_no_readable_image_is_the_empty_class_error(tmp_path):
    data = digits_folder(tmp_path / "data", 6)
    for f in (data / "7").iterdir():
        f.write_bytes(b"not an image")
    with pytest.raises(DataError, match="class folder.s. with no images: 7"):
        plainnet.train(data=str(data), epochs=1, overrides={**FP32, "train.runs_dir": str(tmp_path / "runs"),
                                                            "data.cache_dir": str(tmp_path / "cache")})
    assert not (tmp_path / "runs").exists() or list((tmp_path / "runs").iterdir()) == []


# ----------------------------------------------------------------------------- predict answers for every path


def test_predict_answers_for_every_path(digits_run, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted((Path(digits_run.config.data.path) / "5").iterdir())[0]
    (folder / "good.png").write_bytes(good.read_bytes())
    (folder / "gone.png").symlink_to(tmp_path / "nowhere.png")
    (folder / "album.jpg").mkdir()  # a folder named like an image
    proc = run_cli("predict", digits_run.run_dir, folder, tmp_path / "missing.png", "--format", "json")
    assert proc.code == 1
    records = {Path(r["path"]).name: r for r in json.loads(proc.stdout)["predictions"]}
    assert set(records) == {"good.png", "gone.png", "album.jpg", "missing.png"}
    assert records["good.png"]["ok"]
    assert "broken link" in records["gone.png"]["error"]
    assert "is a directory" in records["album.jpg"]["error"]
    assert "not found" in records["missing.png"]["error"]


# ----------------------------------------------------------------------------- runs that fail


def test_a_run_that_fails_after_saving_weights_is_marked_failed(tmp_path, monkeypatch):
    from plainnet.engine.task import ClassificationTask

    step = ClassificationTask.training_step

    def second_epoch_fails(self, batch, batch_idx):
        if self.current_epoch == 1:
            raise RuntimeError("the power went out")
        return step(self, batch, batch_idx)

    monkeypatch.setattr(ClassificationTask, "training_step", second_epoch_fails)
    with pytest.raises(RuntimeError):
        plainnet.train(data=str(digits_folder(tmp_path / "data", 10)), epochs=3, overrides={
            **FP32, "train.runs_dir": str(tmp_path / "runs"), "train.name": "cut", "data.image_size": "8",
            "data.cache_dir": str(tmp_path / "cache")})
    run = tmp_path / "runs" / "cut"
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "failed" and "power went out" in results["error"] and "final" not in results
    assert (run / "best.pt").is_file() and (run / "checkpoints" / "last.ckpt").is_file()  # kept: resumable


# ----------------------------------------------------------------------------- fuzzing the readers


def test_fuzz_image_decoding(tmp_path):
    """Random bytes behind real image headers: the decoder raises plainnet's BadImageError or returns an
    RGB image, nothing else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from plainnet.data.images import BadImageError, load_rgb_array

    png = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 99, 199)).save(png, format="PNG")
    jpeg = io.BytesIO()
    Image.new("RGB", (16, 16), (9, 99, 199)).save(jpeg, format="JPEG")
    seeds = [png.getvalue(), jpeg.getvalue(), _png_claiming(60000, 60000), b"GIF89a", b"BM", b"P6\n"]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(seed=st.sampled_from(seeds), cut=st.integers(0, 400), noise=st.binary(max_size=64),
           at=st.integers(0, 300))
    def check(seed, cut, noise, at):
        data = seed[: max(cut, 1)] if cut < len(seed) else seed
        data = data[:at] + noise + data[at + len(noise):]
        path = tmp_path / "fuzz.img"
        path.write_bytes(data)
        try:
            out = load_rgb_array(path, 8)
            assert out.shape == (8, 8, 3)
        except BadImageError:
            pass

    check()


def test_fuzz_checkpoint_reading(tmp_path, digits_run):
    """Mutated checkpoints: reading raises plainnet's WeightsError or yields tensors, nothing else."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from plainnet.models.weights import read_state_dict

    buf = io.BytesIO()
    torch.save({"a.weight": torch.randn(3, 3), "b": torch.arange(4)}, buf)
    small = buf.getvalue()

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(at=st.integers(0, len(small)), noise=st.binary(min_size=1, max_size=32), cut=st.integers(0, len(small)))
    def check(at, noise, cut):
        data = (small[:at] + noise + small[at + len(noise):])[: max(cut, 1)]
        path = tmp_path / "fuzz.pt"
        path.write_bytes(data)
        try:
            assert all(isinstance(v, torch.Tensor) for v in read_state_dict(path).values())
        except WeightsError:
            pass

    check()
