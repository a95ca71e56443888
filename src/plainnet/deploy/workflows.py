"""The procedures behind ``plainnet export`` and ``plainnet quantize``: from a saved model to a checked
export or int8 model, with what was measured on the way (the commands only print it)."""

from __future__ import annotations

import json
import logging
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..errors import ConfigError
from ..evaluation.inference import InferenceModel, load_inference_model, sample_images
from ..evaluation.metrics import compare_on, predicted_classes
from ..model_files import METADATA_KEY
from .export import ExportResult, batch_shapes, export_onnx, export_pt2

__all__ = ["ExportReport", "QuantizeReport", "export_metadata", "export_model", "quantize_model", "real_or_random"]

log = logging.getLogger(__name__)


def export_metadata(loaded: InferenceModel) -> dict:
    """What an export carries so that it predicts on its own: class names, preprocessing, config, source."""
    return {"classes": loaded.classes, "preprocess": loaded.preprocess.to_dict(), "config": loaded.config,
            "source": str(loaded.source)}


def real_or_random(loaded: InferenceModel, folder: str | Path | None, n: int, split: str) -> torch.Tensor:
    """Real images for checks and calibration (``folder``, else the model's own data), or random ones with
    a warning when none can be found."""
    images = sample_images(loaded, folder, n=n, split=split)
    if len(images) == 0:
        log.warning("no real images found (pass --check/--calib DIR): using random input")
        size = loaded.preprocess.image_size
        images = torch.randn(n, 3, size, size)
    return images


def _trained(model: str | Path) -> InferenceModel:
    loaded = load_inference_model(model)
    if loaded.backend.built is None:
        raise ConfigError(f"{model} is already an export: give the run directory or checkpoint")
    return loaded


@dataclass
class ExportReport:
    export: ExportResult
    #: Images the export was checked on.
    checked: int
    #: ``--int8``: the quantized file and its top-1 agreement with fp32 on the checked images.
    int8_path: Path | None = None
    int8_agreement: float | None = None
    #: ONNX: every runtime's speed and agreement on this CPU, fastest first
    #: (:func:`~plainnet.deploy.bench.compare_runtimes`).
    runtimes: list[dict] = field(default_factory=list)


def export_model(model: str | Path, output: str | Path, fmt: str = "", *, int8: bool = False,
                 dynamic_batch: bool = False, check: str | Path | None = None,
                 calib: str | Path | None = None) -> ExportReport:
    """Re-parameterize ``model`` and export it to ONNX or torch.export (.pt2), verified on real images;
    ``int8``: quantized (onnxruntime static QDQ, per-channel) from the fp32 ONNX."""
    from .bench import compare_runtimes
    from .quantize import quantize_onnx

    output = Path(output)
    fmt = fmt or output.suffix.lstrip(".").lower()
    if fmt not in ("onnx", "pt2"):
        raise ConfigError(f"--format must be onnx or pt2 (or use a .onnx/.pt2 file name), not {fmt!r}")
    if int8 and fmt != "onnx":
        raise ConfigError("--int8 exports ONNX; for PyTorch-native int8 use: plainnet quantize MODEL --method pt2e")
    loaded = _trained(model)
    x = real_or_random(loaded, check, 16, "val")
    meta = export_metadata(loaded)
    if fmt == "pt2":
        return ExportReport(export_pt2(loaded.module, output, x, metadata=meta, dynamic_batch=dynamic_batch), len(x))
    with tempfile.TemporaryDirectory(prefix="plainnet-") as tmp:
        target = Path(tmp) / "fp32.onnx" if int8 else output
        report = ExportReport(export_onnx(loaded.module, target, x, metadata=meta, dynamic_batch=dynamic_batch or int8),
                              len(x))
        if int8:
            calibration = real_or_random(loaded, calib, 128, "train")
            quantize_onnx(report.export.path, output, [b.numpy() for b in calibration.split(16)])
            q = load_inference_model(output)
            report.int8_path = output
            report.int8_agreement = (predicted_classes(q, [x]) == predicted_classes(loaded, [x])).float().mean().item()
    images = real_or_random(loaded, check, 64, "val")
    report.runtimes = compare_runtimes(output, images, loaded(images))
    return report


@dataclass
class QuantizeReport:
    method: str
    output: Path
    fp32_bytes: int
    int8_bytes: int
    #: Accuracy of fp32 and int8 and their agreement (:class:`~plainnet.evaluation.metrics.Agreement`).
    agreement: object
    #: What was compared on.
    data: str
    #: Latency rows (:class:`~plainnet.deploy.bench.BenchResult`): ``fp32 eager``, ``fp32 onnxruntime``
    #: and ``int8`` at batch 1 and 16.
    latency: list

    def as_dict(self) -> dict:
        return {"method": self.method, "output": str(self.output), "fp32_bytes": self.fp32_bytes,
                "int8_bytes": self.int8_bytes, "agreement": self.agreement.__dict__,
                "latency": [r.as_dict() for r in self.latency]}


def quantize_model(model: str | Path, output: str | Path | None = None, *, method: str = "ort",
                   calib: str | Path | None = None, calib_images: int = 256, options=None,
                   eval_data: str | None = None) -> QuantizeReport:
    """Quantize ``model`` to int8 (``ort``: onnxruntime QDQ with ``options``; ``pt2e``: torchao +
    torch.compile) and measure size, latency (batch 1 and 16) and accuracy against fp32; the report is
    also written beside the output as JSON."""
    from ..evaluation.backends import ProgramBackend
    from ..evaluation.evaluate import load_eval_data
    from ..models.reparam import reparameterize
    from .bench import file_runner, make_runner, run_bench
    from .quantize import QuantOptions, compile_int8, quantize_onnx, quantize_pt2e

    if method not in ("ort", "pt2e"):
        raise ConfigError(f"--method must be ort or pt2e, not {method!r}")
    loaded = _trained(model)
    output = Path(output) if output else (loaded.run_dir or Path.cwd()) / f"model.int8.{'onnx' if method == 'ort' else 'pt2'}"
    fused = reparameterize(loaded.module).float()
    calibration = real_or_random(loaded, calib, calib_images, "train")
    meta = export_metadata(loaded)
    size = loaded.preprocess.image_size
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = export_onnx(fused, Path(tmp) / "fp32.onnx", calibration[:8], metadata=meta, dynamic_batch=True).path
        fp32_bytes = fp32_path.stat().st_size
        if method == "ort":
            quantize_onnx(fp32_path, output, [b.numpy() for b in calibration.split(16)], options or QuantOptions())
            int8 = load_inference_model(output)
        else:
            qmodel = quantize_pt2e(fused, calibration[:2], list(calibration.split(16)), compile=False)
            program = torch.export.export(qmodel, (calibration[:2].clone(),), dynamic_shapes=batch_shapes(),
                                          strict=False)
            pt2_meta = {**meta, "quantization": "torchao-pt2e-int8 (X86InductorQuantizer)", "fixed_batch": None}
            torch.export.save(program, str(output), extra_files={f"{METADATA_KEY}.json": json.dumps(pt2_meta)})
            int8 = load_inference_model(output)
            int8.backend = ProgramBackend(compile_int8(int8.backend.torch_module()), int8.backend.fixed_batch)

        ev = load_eval_data(loaded, eval_data)
        batches = [loaded.prepare(ev.images[i : i + 64]) for i in range(0, len(ev.labels), 64)]
        agreement = compare_on(fused, int8, batches, ev.labels)
        runners = []
        for b in (1, 16):
            runners.append(make_runner(fused, "fp32 eager", "eager", "fp32", b, size))
            runners.append(make_runner(fused, "fp32 onnxruntime", "onnxruntime", "fp32", b, size))
            runners.append(file_runner("int8", int8, method, "int8", b))
        rows = run_bench(runners, rounds=3, min_seconds=0.3)
    report = QuantizeReport(method, output, fp32_bytes, output.stat().st_size, agreement, ev.description, rows)
    output.with_suffix(".json").write_text(json.dumps(report.as_dict(), indent=1))
    return report
