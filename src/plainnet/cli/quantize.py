"""``plainnet quantize``: int8 post-training quantization, with size, speed and accuracy vs fp32."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import typer
from rich.table import Table

from ._common import console


def register(app: typer.Typer) -> None:
    app.command("quantize")(quantize_command)


def quantize_command(
    model: Path = typer.Argument(..., help="Run directory or plainnet checkpoint."),
    output: Path = typer.Option(None, "--output", "-o", help="Output file (.onnx for ort, .pt2 for pt2e)."),
    calib: Path = typer.Option(None, "--calib", help="Calibration images (default: the run's training images)."),
    method: str = typer.Option("ort", "--method", help="ort (onnxruntime QDQ) or pt2e (torchao + torch.compile)."),
    calibration: str = typer.Option("minmax", "--calibration", help="minmax, percentile or entropy (ort)."),
    calib_images: int = typer.Option(256, "--calib-images"),
    per_tensor: bool = typer.Option(False, "--per-tensor", help="One weight scale per tensor (naive)."),
    keep_ends_float: bool = typer.Option(False, "--keep-ends-float", help="Keep the first conv and the classifier in float."),
    dynamic_linear: bool = typer.Option(False, "--dynamic-linear", help="Dynamic int8 for fully connected layers."),
    reduce_range: bool = typer.Option(None, "--reduce-range/--full-range", help="7-bit weights, for x86 CPUs "
                                      "without VNNI (default: chosen for this CPU)."),
    eval_data: str = typer.Option(None, "--eval", help="Labelled images to compare on (default: held-out split)."),
) -> None:
    """Quantize MODEL to int8 and report size, latency (batch 1 and 16) and accuracy vs fp32."""
    import torch

    from ..deploy.bench import Runner, make_runner, run_bench
    from ..deploy.compare import compare_on
    from ..deploy.export import batch_shapes, export_onnx
    from ..deploy.quantize import QuantOptions, compile_int8, quantize_onnx, quantize_pt2e
    from ..deploy.reparam import reparameterize
    from ..evaluation.evaluate import load_eval_data
    from ..evaluation.inference import load_inference_model
    from ._common import fail
    from .export import check_inputs, export_metadata

    if method not in ("ort", "pt2e"):
        fail(f"--method must be ort or pt2e, not {method!r}")
    loaded = load_inference_model(model)
    if loaded.module is None or loaded.form == "pt2":
        fail(f"{model} is already an export: give the run directory or checkpoint")
    output = output or (loaded.run_dir or Path.cwd()) / f"model.int8.{'onnx' if method == 'ort' else 'pt2'}"
    fused = reparameterize(loaded.module).float()
    calibration_x = check_inputs(loaded, calib, calib_images, "train")
    meta = export_metadata(loaded)
    size = loaded.preprocess.image_size
    with tempfile.TemporaryDirectory() as tmp:
        fp32_path = export_onnx(fused, Path(tmp) / "fp32.onnx", calibration_x[:8], metadata=meta,
                                dynamic_batch=True).path
        fp32_bytes = fp32_path.stat().st_size
        if method == "ort":
            options = QuantOptions(per_channel=not per_tensor, calibration=calibration,
                                   keep_ends_float=keep_ends_float, dynamic_linear=dynamic_linear,
                                   reduce_range=reduce_range)
            quantize_onnx(fp32_path, output, [b.numpy() for b in calibration_x.split(16)], options)
            int8 = load_inference_model(output)
            int8_bytes = output.stat().st_size
        else:
            qmodel = quantize_pt2e(fused, calibration_x[:2], list(calibration_x.split(16)), compile=False)
            program = torch.export.export(qmodel, (calibration_x[:2].clone(),), dynamic_shapes=batch_shapes(),
                                          strict=False)
            pt2_meta = {**meta, "quantization": "torchao-pt2e-int8 (X86InductorQuantizer)", "fixed_batch": None}
            torch.export.save(program, str(output), extra_files={"plainnet.json": json.dumps(pt2_meta)})
            int8 = load_inference_model(output)
            int8.module = compile_int8(int8.module)
            int8_bytes = output.stat().st_size

        ev = load_eval_data(loaded, eval_data)
        batches = [loaded.prepare(ev.images[i : i + 64]) for i in range(0, len(ev.labels), 64)]
        agreement = compare_on(fused, int8, batches, ev.labels)

        runners = []
        for b in (1, 16):
            runners.append(make_runner(fused, "fp32 eager", "eager", "fp32", b, size))
            runners.append(make_runner(fused, "fp32 onnxruntime", "onnxruntime", "fp32", b, size))
            x = torch.randn(b, 3, size, size)
            call = (lambda x=x: int8(x)) if method == "pt2e" else _session_call(int8, x)
            call()
            runners.append(Runner("int8", method, "int8", b, call, 0, 0))
        rows = run_bench(runners, rounds=3, min_seconds=0.3)

    table = Table(title=f"int8 ({method}) vs fp32 on {ev.description}")
    for col in ("", "fp32", "int8"):
        table.add_column(col, justify="right")
    table.add_row("file size", f"{fp32_bytes / 2**20:.1f} MiB (ONNX)", f"{int8_bytes / 2**20:.1f} MiB")
    table.add_row(f"top-1 accuracy ({agreement.images} images)", f"{agreement.reference_acc:.2%}",
                  f"{agreement.candidate_acc:.2%} ({-agreement.drop:+.2%})")
    table.add_row("top-1 agreement with fp32", "", f"{agreement.top1_agreement:.2%}")
    for b in (1, 16):
        eager = next(r for r in rows if r.batch == b and r.model == "fp32 eager")
        ort = next(r for r in rows if r.batch == b and r.model == "fp32 onnxruntime")
        q = next(r for r in rows if r.batch == b and r.model == "int8")
        table.add_row(f"latency p50, batch {b}", f"{eager.p50_ms:.1f} ms eager / {ort.p50_ms:.1f} ms ORT",
                      f"{q.p50_ms:.1f} ms ({eager.p50_ms / q.p50_ms:.2f}x eager)")
    console.print(table)
    report = {"method": method, "output": str(output), "fp32_bytes": fp32_bytes, "int8_bytes": int8_bytes,
              "agreement": agreement.__dict__, "latency": [r.as_dict() for r in rows]}
    output.with_suffix(".json").write_text(json.dumps(report, indent=1))
    console.print(f"int8 model: [bold]{output}[/] (report: {output.with_suffix('.json')})")


def _session_call(model, x):
    session = model.session
    feed = {session.get_inputs()[0].name: x.numpy()}
    return lambda: session.run(None, feed)
