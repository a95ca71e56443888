"""Every model file a user hands to plainnet is opened here, so that no code in it can run.

- ``.pt`` / ``.pth`` / ``.ckpt`` / ``.bin``: ``torch.load(weights_only=True)``: tensors and plain data
  only, never arbitrary pickled objects.
- ``.safetensors``: the safetensors format, which holds nothing but tensors.
- ``.pt2`` (``torch.export``): ``torch.export.load`` unpickles with ``weights_only=False`` whatever the
  archive marks as pickled (weights, constants, opaque objects) and retries sample inputs that the
  safe unpickler refuses without it, so the archive is read into memory and checked first: only the
  plain-tensor entries that ``torch.export.save`` writes for ordinary models (plainnet's fp32 and
  int8 exports among them) are accepted; anything pickled, any compiled code (AOTInductor ``.so``
  files) or any unknown entry is refused before torch sees the file. The checked bytes are what is
  loaded, so the file cannot change in between.
- ``.onnx``: onnxruntime runs a graph of known operators; external weight files must lie beside the
  model (a path leaving its folder is refused).

Errors are :class:`~plainnet.errors.WeightsError` with one sentence in plainnet's words: what the file
is, what was expected. They never advise turning safe loading off.
"""

from __future__ import annotations

import io
import json
import os
import pickle
import zipfile
from pathlib import Path, PurePosixPath

import torch

from .errors import WeightsError

__all__ = ["METADATA_KEY", "read_torch_file", "read_safetensors", "read_pt2", "onnx_session", "check_readable"]

#: Where exports carry plainnet's metadata (class names, preprocessing): the ONNX ``metadata_props`` key,
#: and ``extra/<key>.json`` in a .pt2 archive.
METADATA_KEY = "plainnet"

#: What a torch.export archive may hold, below its root folder (torch/export/pt2_archive/constants.py).
_PT2_ALLOWED = ("archive_format", "archive_version", "byteorder", ".data/version", ".data/serialization_id",
                "models/", "data/weights/", "data/constants/", "data/sample_inputs/", "extra/")


def check_readable(path: str | os.PathLike, what: str) -> Path:
    """``path`` as a Path, or a WeightsError saying why it cannot be a ``what`` file."""
    path = Path(path)
    if not path.exists():
        raise WeightsError(f"{what} not found: {path}" + (" (a broken link)" if path.is_symlink() else ""))
    if path.is_dir():
        raise WeightsError(f"{path} is a folder, not a {what} file")
    try:
        size = path.stat().st_size
    except OSError as e:
        raise WeightsError(f"cannot read {path}: {e.strerror}") from None
    if size == 0:
        raise WeightsError(f"{path} is empty (0 bytes): not a {what} file; it may have been cut off while saving")
    if not os.access(path, os.R_OK):
        raise WeightsError(f"cannot read {path}: permission denied")
    return path


def read_torch_file(path: str | os.PathLike, what: str = "checkpoint"):
    """A PyTorch file (``torch.save``) loaded with ``weights_only=True``, onto the CPU."""
    path = check_readable(path, what)
    with open(path, "rb") as f:
        head = f.read(4)
    if head != b"PK\x03\x04" and not head.startswith(b"\x80"):  # torch.save's zip, or its legacy pickle
        raise WeightsError(f"{path} is not a PyTorch {what} file (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        reason = str(e).rsplit("WeightsUnpickler error:", 1)[-1]
        if "global" not in reason.lower():  # weights_only refuses classes and functions (globals); else: damage
            raise WeightsError(f"{path} is not a PyTorch {what} file, or it is truncated (its pickled "
                               "contents cannot be read)") from None
        raise WeightsError(
            f"{path} holds Python objects other than tensors and plain data, which plainnet does not load "
            "(unpickling them could run code): save the weights alone, e.g. torch.save(model.state_dict(), "
            "path), or as .safetensors") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, KeyError, AttributeError,
            TypeError, IndexError, UnicodeDecodeError, MemoryError) as e:
        raise WeightsError(f"{path} is not a PyTorch {what} file, or it is truncated "
                           f"({_short(e)})") from None


def read_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The tensors of a ``.safetensors`` file."""
    path = check_readable(path, "safetensors")
    try:
        from safetensors.torch import load_file
    except ImportError:  # pragma: no cover - a declared dependency
        raise WeightsError("reading .safetensors files needs the safetensors package: pip install safetensors") from None
    try:
        return load_file(str(path), device="cpu")
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error types
        raise WeightsError(f"{path} is not a valid safetensors file ({_short(e)})") from None


def read_pt2(path: str | os.PathLike) -> tuple[torch.nn.Module, dict]:
    """The module of a ``torch.export`` archive and plainnet's metadata (``extra/plainnet.json``),
    after checking the archive holds nothing that could run code (see the module docstring)."""
    path = check_readable(path, ".pt2")
    data = path.read_bytes()
    _check_pt2(data, path)
    try:  # a PT2E int8 program uses the quantize/dequantize ops torchao registers
        import torchao.quantization.pt2e  # noqa: F401
    except ImportError:
        pass
    extra = {f"{METADATA_KEY}.json": ""}
    try:
        program = torch.export.load(io.BytesIO(data), extra_files=extra)
        module = program.module()
    except Exception as e:  # noqa: BLE001 - the deserializer raises many types
        raise WeightsError(f"{path} is a torch.export archive that cannot be loaded ({_short(e)})") from None
    try:
        info = json.loads(extra[f"{METADATA_KEY}.json"] or "{}")
    except json.JSONDecodeError:
        raise WeightsError(f"{path}: its plainnet metadata (extra/plainnet.json) is not valid JSON") from None
    return module, info


def _check_pt2(data: bytes, path: Path) -> None:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        names = archive.namelist()
    except (zipfile.BadZipFile, ValueError, OSError):
        raise WeightsError(f"{path} is not a torch.export archive (.pt2): not a zip file") from None
    roots = {n.split("/", 1)[0] for n in names}
    if len(roots) != 1 or any("/" not in n for n in names):
        raise WeightsError(f"{path} is not a torch.export archive (.pt2): no single archive folder")
    root = roots.pop() + "/"

    def refuse(reason: str):
        return WeightsError(f"{path} is refused: {reason}. plainnet opens .pt2 files only when they hold "
                            "plain tensors (as plainnet export writes them), because anything else is "
                            "unpickled by torch in a way that can run code")

    for name in names:
        inner = name[len(root):]
        parts = PurePosixPath(inner).parts
        if ".." in parts or inner.startswith("/"):
            raise refuse(f"entry {name!r} points outside the archive")
        if not inner.startswith(_PT2_ALLOWED):
            raise refuse(f"it contains {inner!r}, which is neither an exported program nor plain weights "
                         "(compiled code or a legacy format)")
    try:
        if archive.read(root + "archive_format").decode().strip() != "pt2":
            raise refuse("its archive_format is not pt2")
        for name in names:
            inner = name[len(root):]
            if inner.startswith(("data/weights/", "data/constants/")) and inner.endswith("_config.json"):
                for key, meta in json.loads(archive.read(name)).get("config", {}).items():
                    if meta.get("use_pickle"):
                        raise refuse(f"{key!r} is stored pickled")
                    if inner.startswith("data/constants/") and not str(meta.get("path_name", "")).startswith("tensor"):
                        raise refuse(f"constant {key!r} is a Python object, not a tensor")
            elif inner.startswith("data/sample_inputs/"):
                # torch would retry these with weights_only=False if the safe unpickler refuses them
                torch.load(io.BytesIO(archive.read(name)), map_location="cpu", weights_only=True)
    except KeyError:
        raise refuse("it has no archive_format entry") from None
    except WeightsError:
        raise
    except pickle.UnpicklingError:
        raise refuse("its sample inputs are not plain tensors") from None
    except Exception as e:  # noqa: BLE001 - a malformed config or a corrupt member
        raise WeightsError(f"{path} is a damaged torch.export archive ({_short(e)})") from None


def onnx_session(path: str | os.PathLike, *, threads: int = 0, providers: list[str] | None = None,
                 optimize: bool = True):
    """An onnxruntime inference session for ``path`` (CPU unless ``providers`` says otherwise)."""
    path = check_readable(path, "ONNX")
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:  # pragma: no cover - declared dependencies
        raise WeightsError("reading ONNX files needs onnx and onnxruntime: pip install onnx onnxruntime") from None
    from onnx.external_data_helper import ExternalDataInfo, uses_external_data

    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as e:  # noqa: BLE001 - protobuf decode errors of all kinds
        raise WeightsError(f"{path} is not an ONNX model, or it is truncated ({_short(e)})") from None
    for tensor in graph.initializer:
        if uses_external_data(tensor):
            location = PurePosixPath(ExternalDataInfo(tensor).location.replace("\\", "/"))
            if location.is_absolute() or ".." in location.parts:
                raise WeightsError(f"{path} is refused: its weight {tensor.name!r} is read from {location}, "
                                   "outside the model's folder")
    options = ort.SessionOptions()
    options.graph_optimization_level = (ort.GraphOptimizationLevel.ORT_ENABLE_ALL if optimize
                                        else ort.GraphOptimizationLevel.ORT_DISABLE_ALL)
    if threads:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=providers or ["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime's errors are untyped
        raise WeightsError(f"onnxruntime cannot load {path} ({_short(e)})") from None


def _short(e: BaseException) -> str:
    """The first line of an exception's message, cut at a word boundary (never mid-word)."""
    text = " ".join(str(e).split("\n", 1)[0].split()) or type(e).__name__
    if "weights_only" in text or "Weights only load failed" in text:  # torch's advice is not ours to give
        return "it holds objects plainnet does not unpickle"
    if len(text) <= 160:
        return text
    return text[:160].rsplit(" ", 1)[0] + " ..."
