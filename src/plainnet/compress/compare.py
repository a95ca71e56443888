"""``plainnet compress``: apply lightweighting methods to one trained model and measure them side by side.

Methods (``--methods``, comma-separated; ``:`` takes a parameter):

- ``prune:R``: structured channel pruning of ratio R (Torch-Pruning), then fine-tuning.
- ``unstructured:R``: global L1 unstructured pruning (zeros only: no smaller, no faster; the honest row).
- ``int8``: onnxruntime static int8 of the fused model; ``prune:R+int8`` combines both.
- ``distill``: a smaller student trained from scratch with knowledge distillation from the base (for a
  RepVGG base, its 50%-pruned architecture; for VGG, RepVGG-A0; ``distill:NAME`` picks the student).
- VGG bases only: ``slim-head`` and ``gap-head`` (the base's convolutions, a new 1024-256 or global
  average pool head, fine-tuned) and ``dws`` (depthwise-separable VGG-16 distilled from the base).

Each row reports parameters, MACs, file size, CPU latency at batch 1 and 16 (interleaved rounds),
held-out accuracy and its change vs the base, and the training time spent. The verdict names the
smallest and the fastest model within 1 point of the base accuracy.
"""

from __future__ import annotations

import copy
import csv
import json
import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from ..run_dir import RunDir

__all__ = ["MethodRow", "CompressResult", "compress", "check_methods", "DEFAULT_METHODS", "METHODS"]

log = logging.getLogger(__name__)

DEFAULT_METHODS = ("prune:0.3", "prune:0.5", "prune:0.7", "unstructured:0.5", "int8", "prune:0.5+int8",
                   "distill", "slim-head", "gap-head", "dws")


@dataclass
class MethodRow:
    method: str
    params: int
    macs: int
    file_bytes: int
    accuracy: float
    train_seconds: float
    latency_ms: dict = field(default_factory=dict)  # batch -> p50 ms
    note: str = ""
    artifact: str = ""


@dataclass
class CompressResult:
    rows: list[MethodRow]
    base_accuracy: float
    out_dir: Path
    verdict: str
    skipped: list[str]


def _fused_summary(model: nn.Module, size: int) -> tuple[int, int]:
    from ..models import summarize
    from ..models.reparam import reparameterize

    s = summarize(reparameterize(model), size)
    return s.params, s.macs


def _load_backbone(model: nn.Module, state: dict) -> None:
    """Copy the convolutional trunk (``features.*``) of a VGG state dict, strictly for that part."""
    trunk = {k: v for k, v in state.items() if k.startswith("features.")}
    own = {k: v for k, v in model.state_dict().items() if k.startswith("features.")}
    bad = [k for k in own if k not in trunk or trunk[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"the trunks differ ({len(bad)} tensors, e.g. {bad[0]})")
    model.load_state_dict(trunk, strict=False)


def _clear_previous_runs(runs: Path) -> None:
    """A repeated ``compress`` replaces its earlier fine-tuning runs; a folder holding anything but
    plainnet runs is left alone (and the first clashing run name then fails with a clear error)."""
    if runs.is_dir() and all(RunDir.is_run(child) for child in runs.iterdir()):
        shutil.rmtree(runs)


def compress(run_dir: str | Path, *, methods: tuple[str, ...] | list[str] = DEFAULT_METHODS,
             finetune_epochs: int = 5, distill_epochs: int | None = None, out_dir: str | Path | None = None,
             data: str | None = None, rounds: int = 5, min_seconds: float = 0.3) -> CompressResult:
    """Apply ``methods`` to the best model of ``run_dir`` and measure everything side by side (latency:
    ``rounds`` interleaved rounds, each timing every model for about ``min_seconds``)."""
    from ..deploy.bench import run_bench

    check_methods(methods)
    out = Path(out_dir) if out_dir else Path(run_dir) / "compress"
    out.mkdir(parents=True, exist_ok=True)
    _clear_previous_runs(out / "runs")
    session = _Session.open(Path(run_dir), out, data, finetune_epochs, distill_epochs or 3 * finetune_epochs)
    session.torch_row("base", session.base, 0.0, "the trained model, fused")
    base_acc = session.rows[0].accuracy
    for method in methods:
        kind, _, arg = method.partition(":")
        METHODS[kind].apply(session, method, arg)
    for note in session.skipped:
        log.warning("skipped %s", note)
    rows = session.rows
    results = run_bench([r for rs in session.runners.values() for r in rs], rounds=rounds, min_seconds=min_seconds)
    for row in rows:
        row.latency_ms = {r.batch: r.p50_ms for r in results if r.model == row.method}
    verdict = _verdict(rows, base_acc)
    _write(rows, base_acc, out, verdict, session.skipped, session.name, session.data, session.size)
    return CompressResult(rows, base_acc, out, verdict, session.skipped)


@dataclass
class _Session:
    """One ``compress`` call: the base model and its data, and the rows measured so far."""
    run: RunDir
    loaded: object  # the base's InferenceModel
    base: nn.Module
    out: Path
    data: str
    payload_meta: dict
    eval_batches: list
    labels: object
    calibration: torch.Tensor
    example: torch.Tensor
    finetune_epochs: int
    distill_epochs: int
    #: The base run's output stride, which new students and heads are built with.
    output_stride: int
    rows: list[MethodRow] = field(default_factory=list)
    runners: dict = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)

    @classmethod
    def open(cls, run_dir: Path, out: Path, data: str | None, finetune_epochs: int, distill_epochs: int):
        from ..evaluation.evaluate import load_eval_data
        from ..evaluation.inference import load_inference_model, sample_images
        from ..models import load_model
        from ..models.checkpoint import load_checkpoint

        run = RunDir(run_dir)
        loaded, config = load_inference_model(run_dir), run.config()
        data = data or config.data.path
        ev = load_eval_data(loaded, None if data == config.data.path else data)
        calibration = sample_images(loaded, n=256, split="train")
        size = loaded.preprocess.image_size
        return cls(run=run, loaded=loaded, base=load_model(loaded.source), out=out, data=data,
                   payload_meta={k: v for k, v in load_checkpoint(loaded.source).items()
                                 if k in ("classes", "preprocess", "config")},
                   eval_batches=[loaded.prepare(ev.images[i : i + 64]) for i in range(0, len(ev.labels), 64)],
                   labels=ev.labels, calibration=calibration,
                   example=calibration[:2] if len(calibration) else torch.randn(2, 3, size, size),
                   finetune_epochs=finetune_epochs, distill_epochs=distill_epochs,
                   output_stride=config.model.output_stride)

    @property
    def name(self) -> str:
        return self.base.arch["name"]

    @property
    def size(self) -> int:
        return self.loaded.preprocess.image_size

    @property
    def fc_head(self) -> bool:
        """VGG's wide classifier: the head compressions apply."""
        from ..models import traits_of

        return traits_of(self.name).fc_head

    def new_model(self, name: str, **kwargs) -> nn.Module:
        from ..models import create_model

        return create_model(name, num_classes=len(self.loaded.classes), output_stride=self.output_stride, **kwargs)

    def torch_row(self, method: str, model: nn.Module, seconds: float, note: str = "") -> None:
        from ..deploy.bench import make_runner
        from ..evaluation.metrics import accuracy
        from ..models import save_checkpoint
        from ..models.reparam import reparameterize

        fused = reparameterize(model).float()
        path = save_checkpoint(fused, self.out / f"{method.replace(':', '-')}.pt", **self.payload_meta)
        params, macs = _fused_summary(model, self.size)
        acc = accuracy(fused, self.eval_batches, self.labels)
        self.rows.append(MethodRow(method, params, macs, path.stat().st_size, acc, seconds, note=note,
                                   artifact=str(path)))
        self.runners[method] = [make_runner(fused, method, "eager", "fp32", b, self.size) for b in (1, 16)]

    def int8_row(self, method: str, model: nn.Module, seconds: float) -> None:
        from ..deploy.bench import file_runner
        from ..deploy.export import export_onnx
        from ..deploy.quantize import quantize_onnx
        from ..evaluation.inference import load_inference_model
        from ..evaluation.metrics import accuracy
        from ..models.reparam import reparameterize

        fused = reparameterize(model).float()
        fp32 = export_onnx(fused, self.out / f"{method.replace(':', '-').replace('+', '_')}.fp32.onnx", self.example,
                           dynamic_batch=True, metadata=self.payload_meta).path
        q = quantize_onnx(fp32, fp32.with_name(fp32.name.replace(".fp32.", ".int8.")),
                          [b.numpy() for b in self.calibration.split(16)])
        fp32.unlink()
        session = load_inference_model(q)
        params, macs = _fused_summary(model, self.size)
        acc = accuracy(session, self.eval_batches, self.labels)
        self.rows.append(MethodRow(method, params, macs, q.stat().st_size, acc, seconds,
                                   note="onnxruntime int8 (QDQ, per-channel)", artifact=str(q)))
        self.runners[method] = [file_runner(method, session, "onnxruntime", "int8", b, macs=macs, params=params)
                                for b in (1, 16)]

    def tune(self, model: nn.Module, tag: str, epochs: int, teacher: bool = False,
             from_scratch: bool = False) -> tuple[nn.Module, float]:
        from ..models import load_model
        from .finetune import finetune

        t0 = time.perf_counter()
        result = finetune(model, self.run, epochs=epochs, runs_dir=self.out / "runs", name=tag, data=self.data,
                          progress=False, teacher=self.loaded.source if teacher else None, from_scratch=from_scratch)
        return load_model(result.best_checkpoint), time.perf_counter() - t0

    def pruned(self, ratio: float) -> nn.Module:
        from .prune import structured_prune

        return structured_prune(copy.deepcopy(self.base).train(), ratio, self.example)


def _prune(s: _Session, method: str, arg: str) -> None:
    from ..models import load_model
    from ..models.reparam import reparameterize, verify_equivalence

    if arg.endswith("+int8"):  # the pruned model of the same ratio (tuned now unless its row exists)
        ratio = arg.removesuffix("+int8")
        pruned_method = f"prune:{ratio}"
        source = next((r for r in s.rows if r.method == pruned_method), None)
        if source is None:
            pruned, secs = s.tune(s.pruned(float(ratio)), pruned_method, s.finetune_epochs)
        else:
            pruned, secs = load_model(source.artifact), source.train_seconds
        s.int8_row(method, pruned, secs)
        return
    ratio = float(arg)
    tuned, secs = s.tune(s.pruned(ratio), method.replace(":", "-"), s.finetune_epochs)
    verify_equivalence(tuned, reparameterize(tuned), s.example)  # pruned RepVGG still fuses exactly
    s.torch_row(method, tuned, secs, f"{ratio:.0%} of channels removed, fine-tuned {s.finetune_epochs} epochs")


def _unstructured(s: _Session, method: str, arg: str) -> None:
    from .prune import unstructured_prune, weight_sparsity

    sparse = unstructured_prune(copy.deepcopy(s.base), float(arg or 0.5))
    s.torch_row(method, sparse, 0.0, f"{weight_sparsity(sparse):.0%} of weights zero; dense kernels: "
                "no smaller, no faster")


def _int8(s: _Session, method: str, arg: str) -> None:
    s.int8_row(method, s.base, 0.0)


def _distill(s: _Session, method: str, arg: str) -> None:
    if arg or s.fc_head:  # the named student; for VGG, RepVGG-A0
        label = arg or "repvgg_a0"
        student = s.new_model(label)
    else:  # the 50%-pruned architecture, freshly initialized
        student = s.pruned(0.5)
        for m in student.modules():
            if hasattr(m, "reset_parameters") and m is not student:
                m.reset_parameters()
        label = f"{s.name} with 50% of channels"
    trained, secs = s.tune(student, "distill", s.distill_epochs, teacher=True, from_scratch=True)
    s.torch_row(method, trained, secs, f"student {label}, KD from the base, {s.distill_epochs} epochs")


def _vgg_only(apply):
    """A method for VGG bases (their wide fully connected head); skipped, with the reason, otherwise."""
    def checked(s: _Session, method: str, arg: str) -> None:
        if not s.fc_head:
            s.skipped.append(f"{method}: for VGG bases (this {s.name} has a GAP head and plain 3x3 convs already)")
            return
        apply(s, method, arg)
    return checked


@_vgg_only
def _new_head(s: _Session, method: str, arg: str) -> None:
    head = method.split("-")[0]
    new = s.new_model(s.name, head=head)
    _load_backbone(new, s.base.state_dict())
    tuned, secs = s.tune(new, method, s.finetune_epochs)
    s.torch_row(method, tuned, secs, f"{head} head on the base's convolutions, fine-tuned {s.finetune_epochs} epochs")


@_vgg_only
def _dws(s: _Session, method: str, arg: str) -> None:
    student = s.new_model("vgg16_dws", head="gap")
    trained, secs = s.tune(student, "dws", s.distill_epochs, teacher=True, from_scratch=True)
    s.torch_row(method, trained, secs, f"depthwise-separable VGG-16, KD from the base, {s.distill_epochs} epochs")


@dataclass(frozen=True)
class _Method:
    #: What the ``:`` parameter is: ``ratio`` (in (0, 1)), ``model`` (a student's name), ``?``: optional.
    parameter: str
    apply: Callable[[_Session, str, str], None]


#: The methods (``kind[:parameter]``), checked by :func:`check_methods` before anything trains.
METHODS = {"prune": _Method("ratio", _prune), "unstructured": _Method("ratio?", _unstructured),
           "int8": _Method("", _int8), "distill": _Method("model?", _distill),
           "slim-head": _Method("", _new_head), "gap-head": _Method("", _new_head), "dws": _Method("", _dws)}


def check_methods(methods) -> None:
    """Raise :class:`~plainnet.errors.ConfigError` for the first method that is not in :data:`METHODS`
    or has a wrong parameter, before anything is trained."""
    from ..errors import ConfigError
    from ..models import traits_of

    for method in methods:
        kind, _, arg = method.partition(":")
        if kind == "prune" and arg.endswith("+int8"):
            arg = arg.removesuffix("+int8")
        if kind not in METHODS:
            raise ConfigError(f"unknown compression method {method!r}: one of {', '.join(METHODS)} "
                              "(prune:R, unstructured:R, distill:NAME, prune:R+int8)")
        wants = METHODS[kind].parameter
        if not wants and arg:
            raise ConfigError(f"compression method {kind} takes no parameter, got {method!r}")
        if wants.startswith("ratio") and (arg or not wants.endswith("?")):
            try:
                ok = 0 < float(arg) < 1
            except ValueError:
                ok = False
            if not ok:
                raise ConfigError(f"{method}: the ratio must be a number between 0 and 1, e.g. {kind}:0.5")
        if wants.startswith("model") and arg:
            traits_of(arg)  # (an unknown name: UnknownModelError with close matches)


def _verdict(rows: list[MethodRow], base_acc: float) -> str:
    ok = [r for r in rows if r.accuracy >= base_acc - 0.01]
    smallest = min(ok, key=lambda r: r.file_bytes)
    fastest = min(ok, key=lambda r: r.latency_ms.get(16, float("inf")))
    base = rows[0]
    return (f"Within 1 point of the base accuracy ({base_acc:.2%}): smallest is {smallest.method} "
            f"({smallest.file_bytes / 2**20:.1f} MiB, {base.file_bytes / smallest.file_bytes:.1f}x smaller, "
            f"{smallest.accuracy:.2%}); fastest is {fastest.method} ({fastest.latency_ms[16]:.1f} ms at batch 16, "
            f"{base.latency_ms[16] / fastest.latency_ms[16]:.1f}x faster, {fastest.accuracy:.2%}).")


def _write(rows, base_acc, out: Path, verdict: str, skipped, name: str, data: str, size: int) -> None:
    from ..evaluation.plots import _pyplot

    base = rows[0]
    header = ["method", "params", "GMACs", "file MiB", "latency b1 ms", "latency b16 ms", "speed-up b16",
              "accuracy", "change", "training s", "note"]
    table = []
    for r in rows:
        table.append([r.method, f"{r.params:,}", f"{r.macs / 1e9:.3f}", f"{r.file_bytes / 2**20:.1f}",
                      f"{r.latency_ms.get(1, 0):.2f}", f"{r.latency_ms.get(16, 0):.1f}",
                      f"{base.latency_ms[16] / r.latency_ms[16]:.2f}x" if r.latency_ms.get(16) else "",
                      f"{r.accuracy:.2%}", f"{r.accuracy - base_acc:+.2%}", f"{r.train_seconds:.0f}", r.note])
    with (out / "compression.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(table)
    md = [f"Base: {name} trained on `{data}` at {size} px; accuracy on the held-out split; latency: CPU, "
          "p50, interleaved rounds (PyTorch eager fp32 for float models, onnxruntime for int8).", "",
          "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    md += ["| " + " | ".join(row) + " |" for row in table]
    md += ["", f"**Verdict:** {verdict}"]
    if skipped:
        md += ["", "Not applicable here: " + "; ".join(skipped) + "."]
    (out / "compression.md").write_text("\n".join(md) + "\n")
    (out / "compression.json").write_text(json.dumps([r.__dict__ for r in rows], indent=1))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for r in rows:
        ax.scatter(r.latency_ms.get(16, 0), r.accuracy * 100, s=30 + r.file_bytes / 2**20, alpha=0.7)
        ax.annotate(r.method, (r.latency_ms.get(16, 0), r.accuracy * 100), fontsize=8, xytext=(4, 3),
                    textcoords="offset points")
    ax.axhline((base_acc - 0.01) * 100, color="gray", lw=0.8, ls="--", label="base - 1 point")
    ax.set_xlabel("CPU latency at batch 16 (ms, p50)")
    ax.set_ylabel("held-out accuracy (%)")
    ax.set_title("accuracy vs latency (marker area: file size)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "compression.png")
    plt.close(fig)
