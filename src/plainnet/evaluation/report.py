"""``report.html``: one self-contained page (every image embedded) describing a training run.

Sections: summary, configuration, dataset (class counts, sample images per class), training curves,
held-out evaluation (per-class table, confusion matrix, misclassified images, test-time augmentation),
Grad-CAM samples, model (parameters, MACs, training vs fused form), timings and environment. It is
regenerated from the run directory by ``plainnet report RUN_DIR`` (evaluating the held-out split first
if that has not been done).
"""

from __future__ import annotations

import base64
import io
import logging
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from ..config import RunConfig
from ..files import atomic_write_text
from ..run_dir import RunDir

log = logging.getLogger(__name__)

__all__ = ["build_report"]

_TEMPLATE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>plainnet report: {{ name }}</title>
<style>
:root { --fg:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f5f7fa; --accent:#2f6fb3; --ok:#207544; --bad:#b42318; }
* { box-sizing: border-box; }
body { margin:0; font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif; color:var(--fg); background:var(--bg); }
header { background:#102a43; color:#fff; padding:28px 0 22px; }
header .wrap { display:flex; flex-wrap:wrap; align-items:baseline; gap:8px 24px; }
header h1 { margin:0; font-size:26px; font-weight:650; }
header p { margin:0; color:#bcccdc; }
.wrap { max-width:1120px; margin:0 auto; padding:0 24px; }
nav { background:#fff; border-bottom:1px solid var(--line); position:sticky; top:0; z-index:2; }
nav .wrap { display:flex; flex-wrap:wrap; gap:4px 18px; padding-top:10px; padding-bottom:10px; }
nav a { color:var(--accent); text-decoration:none; font-size:14px; }
main section { background:#fff; border:1px solid var(--line); border-radius:10px; margin:22px 0; padding:22px 26px; }
h2 { margin:0 0 14px; font-size:19px; }
h3 { margin:20px 0 8px; font-size:15px; color:var(--muted); font-weight:600; }
.cards { display:grid; grid-template-columns:repeat(auto-fit,minmax(160px,1fr)); gap:12px; }
.card { border:1px solid var(--line); border-radius:8px; padding:12px 14px; background:#fbfcfd; }
.card .v { font-size:22px; font-weight:650; }
.card .k { color:var(--muted); font-size:13px; }
table { border-collapse:collapse; width:100%; font-size:14px; }
th, td { text-align:left; padding:6px 10px; border-bottom:1px solid var(--line); }
th { background:#f0f4f8; font-weight:600; }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
tr:nth-child(even) td { background:#fafbfc; }
img.fig { max-width:100%; height:auto; display:block; margin:6px 0; border-radius:4px; }
.two { display:grid; grid-template-columns:repeat(auto-fit,minmax(320px,1fr)); gap:18px; align-items:start; }
.thumbs { display:grid; grid-template-columns:repeat(auto-fill,minmax(96px,1fr)); gap:8px; }
.thumbs figure { margin:0; }
.thumbs img { width:100%; aspect-ratio:1; object-fit:cover; border-radius:4px; image-rendering:auto; }
.cls { margin:14px 0 4px; font-weight:600; }
details { margin-top:8px; }
summary { cursor:pointer; color:var(--accent); }
pre { background:#f0f4f8; padding:12px; border-radius:6px; overflow:auto; font-size:13px; }
.good { color:var(--ok); } .bad { color:var(--bad); }
.muted { color:var(--muted); font-size:13px; }
footer { color:var(--muted); font-size:13px; padding:10px 0 40px; }
</style>
</head>
<body>
<header><div class="wrap">
  <h1>{{ name }}</h1>
  <p>{{ model_name }} &middot; {{ data_path }} &middot; {{ created }}</p>
</div></header>
<nav><div class="wrap">
  <a href="#summary">Summary</a><a href="#data">Data</a><a href="#training">Training</a>
  <a href="#evaluation">Evaluation</a><a href="#gradcam">Grad-CAM</a><a href="#model">Model</a>
  <a href="#config">Configuration</a><a href="#environment">Environment</a>
</div></nav>
<main class="wrap">
<section id="summary">
  <h2>Summary</h2>
  <div class="cards">
  {% for card in cards %}<div class="card"><div class="v">{{ card.value }}</div><div class="k">{{ card.label }}</div></div>
  {% endfor %}
  </div>
</section>

<section id="data">
  <h2>Data</h2>
  <p>{{ data_description }}</p>
  <div class="two">
    <table>
      <thead><tr><th>class</th>{% for s in splits %}<th class="num">{{ s }}</th>{% endfor %}</tr></thead>
      <tbody>{% for row in count_rows %}<tr><td>{{ row.cls }}</td>{% for n in row.counts %}<td class="num">{{ n }}</td>{% endfor %}</tr>{% endfor %}</tbody>
    </table>
    {% if counts_png %}<img class="fig" src="{{ counts_png }}" alt="images per class and split">{% endif %}
  </div>
  <h3>Sample images per class</h3>
  {% for group in samples %}
  <div class="cls">{{ group.cls }}</div>
  <div class="thumbs">{% for src in group.images %}<figure><img src="{{ src }}" alt="{{ group.cls }} sample {{ loop.index }}"></figure>{% endfor %}</div>
  {% endfor %}
  {% if bad_files %}<h3>Skipped files</h3><ul>{% for p, r in bad_files %}<li>{{ p }}: {{ r }}</li>{% endfor %}</ul>{% endif %}
</section>

<section id="training">
  <h2>Training</h2>
  {% if curves_png %}<img class="fig" src="{{ curves_png }}" alt="training curves: loss and accuracy per epoch">{% endif %}
  <details><summary>per-epoch metrics</summary>
  <table><thead><tr>{% for k in history_keys %}<th class="num">{{ k }}</th>{% endfor %}</tr></thead>
  <tbody>{% for row in history %}<tr>{% for k in history_keys %}<td class="num">{{ row.get(k, "") }}</td>{% endfor %}</tr>{% endfor %}</tbody></table>
  </details>
</section>

<section id="evaluation">
  <h2>Held-out evaluation</h2>
  <p class="muted">{{ eval.data }} &middot; {{ eval.images }} images &middot; weights: {{ eval_source }}</p>
  <div class="two">
    <div>
      <table>
        <thead><tr><th>class</th><th class="num">precision</th><th class="num">recall</th><th class="num">F1</th><th class="num">support</th></tr></thead>
        <tbody>{% for r in eval.per_class %}<tr><td>{{ r["class"] }}</td><td class="num">{{ "%.3f"|format(r.precision) }}</td><td class="num">{{ "%.3f"|format(r.recall) }}</td><td class="num">{{ "%.3f"|format(r.f1) }}</td><td class="num">{{ r.support }}</td></tr>{% endfor %}</tbody>
      </table>
      <h3>Overall</h3>
      <table><tbody>
        {% for label, value in overall %}<tr><td>{{ label }}</td><td class="num">{{ value }}</td></tr>{% endfor %}
      </tbody></table>
    </div>
    {% if confusion_png %}<img class="fig" src="{{ confusion_png }}" alt="confusion matrix">{% endif %}
  </div>
  <h3>Misclassified images</h3>
  {% if misclassified_png %}<img class="fig" src="{{ misclassified_png }}" alt="misclassified images">
  {% else %}<p class="good">None: all {{ eval.images }} held-out images are classified correctly.</p>{% endif %}
</section>

<section id="gradcam">
  <h2>Grad-CAM</h2>
  <p class="muted">Where the evidence for the predicted class lies (red: most), one correct image per class, then mistakes.</p>
  {% if gradcam_png %}<img class="fig" src="{{ gradcam_png }}" alt="Grad-CAM heat-maps">{% else %}<p>not available</p>{% endif %}
</section>

<section id="model">
  <h2>Model</h2>
  <table><thead><tr><th></th><th class="num">parameters</th><th class="num">MACs at {{ image_size }} px</th><th class="num">activations / image</th></tr></thead>
  <tbody>{% for row in model_rows %}<tr><td>{{ row.form }}</td><td class="num">{{ row.params }}</td><td class="num">{{ row.macs }}</td><td class="num">{{ row.act }}</td></tr>{% endfor %}</tbody></table>
  {% if diagram_svg %}<img class="fig" id="diagram" src="{{ diagram_svg }}" alt="architecture diagram of the trained model">{% endif %}
</section>

<section id="config">
  <h2>Configuration</h2>
  <p>Every automatic choice, with the reason it was made:</p>
  <ul>{% for note in auto %}<li>{{ note }}</li>{% endfor %}</ul>
  <details><summary>config.yaml (resolved)</summary><pre>{{ config_yaml }}</pre></details>
</section>

<section id="environment">
  <h2>Timings and environment</h2>
  <table><tbody>{% for k, v in environment %}<tr><td>{{ k }}</td><td>{{ v }}</td></tr>{% endfor %}</tbody></table>
</section>
</main>
<footer class="wrap">Generated by plainnet {{ version }} on {{ generated }} &middot; regenerate with <code>plainnet report {{ run_dir }}</code></footer>
</body>
</html>
"""


def _data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def _file_uri(path: Path) -> str | None:
    return _data_uri(path.read_bytes()) if path.is_file() else None


def _thumb_uri(array: np.ndarray, size: int = 112) -> str:
    from PIL import Image

    img = Image.fromarray(array)
    if max(img.size) != size:
        img = img.resize((size, size), Image.Resampling.NEAREST if max(img.size) < 48 else Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=85)
    return _data_uri(buf.getvalue(), "image/jpeg")


def _dataset(run: RunDir, config: RunConfig, classes: list[str], per_class: int):
    """Counts per split and class, sample thumbnails per class, and a one-line description."""
    from ..data.images import BadImageError, load_rgb_array

    record = run.split_record()
    if record is not None:
        from ..data.folder import Splits

        splits = Splits.from_json(record)
        counts = {k: v for k, v in splits.counts().items() if sum(v)}
        samples = []
        for c in range(len(classes)):
            images = []
            for s in (s for s in splits.train if s.label == c):
                try:
                    images.append(_thumb_uri(load_rgb_array(s.path, 112, 1.0)))
                except BadImageError:
                    continue
                if len(images) == per_class:
                    break
            samples.append({"cls": classes[c], "images": images})
        return counts, samples, f"{splits.root} ({splits.layout}, split seed {config.data.seed})"
    from ..data.sources import load_source

    d = config.data
    source = load_source(d.path, val_fraction=d.val_fraction, seed=d.seed)
    counts = {"train": np.bincount(source.train_labels, minlength=len(classes)).tolist(),
              "val": np.bincount(source.test_labels, minlength=len(classes)).tolist()}
    samples = [{"cls": cls, "images": [_thumb_uri(source.train_images[i])
                                       for i in np.flatnonzero(source.train_labels == c)[:per_class]]}
               for c, cls in enumerate(classes)]
    return counts, samples, f"{d.path} (in-memory dataset)"


def _model_rows(best: Path, image_size: int) -> list[dict]:
    import torch

    from ..models import create_model, summarize, traits_of
    from ..models.checkpoint import load_checkpoint

    arch = dict(load_checkpoint(best)["arch"])
    name = arch.pop("name")
    rows = []
    forms = [("training form", False)] + ([] if traits_of(name).foreign else [("fused (deploy) form", True)])
    for label, deploy in forms:
        with torch.device("meta"):
            s = summarize(create_model(name, deploy=deploy, **arch), image_size)
        rows.append({"form": label, "params": f"{s.params:,}", "macs": f"{s.macs / 1e6:,.1f} M",
                     "act": f"{s.activation_bytes / 2**20:.1f} MiB"})
    return rows


def _diagram(best: Path, image_size: int) -> str | None:
    """The trained model's architecture figure (both forms for a RepVGG still in its training form), as
    an SVG data URI."""
    from ..models import is_deployed, load_model, traits_of
    from ..models.draw import draw

    try:
        model = load_model(best)
        name = (getattr(model, "arch", None) or {}).get("name")
        both = bool(name) and traits_of(name).branches and not is_deployed(model)
        with tempfile.TemporaryDirectory() as tmp:
            path = draw(model, Path(tmp) / "model.svg", input_size=image_size, form="both" if both else "train",
                        style="blocks")
            return _data_uri(path.read_bytes(), "image/svg+xml")
    except Exception as e:  # noqa: BLE001 - a figure the drawing cannot make leaves the report without it
        log.warning("no architecture diagram in the report: %s", e)
        return None


def _environment(results: dict, history: list[dict]) -> list[tuple[str, str]]:
    import torch

    from .. import __version__

    speeds = sorted(float(h["train/img_s"]) for h in history if h.get("train/img_s"))
    cpu = platform.processor() or "cpu"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rows = [
        ("total training time", f"{results.get('seconds', 0) / 60:.1f} min ({results.get('epochs_run', '?')} epochs)"),
        ("training speed (median)", f"{speeds[len(speeds) // 2]:.0f} images/s" if speeds else "n/a"),
        ("plainnet", __version__), ("torch", torch.__version__), ("python", platform.python_version()),
        ("CPU", f"{cpu}, {os.cpu_count()} cores"),
        ("GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
    ]
    return rows


def build_report(run_dir: str | Path, *, samples_per_class: int = 6) -> Path:
    """Write ``RUN_DIR/report.html`` and return its path."""
    import jinja2

    from ..errors import DataError
    from .evaluate import evaluate
    from .plots import plot_class_counts

    run_dir = Path(run_dir)
    if not RunDir.is_run(run_dir):
        raise DataError(f"{run_dir} is not a plainnet run directory (no config.yaml)")
    run = RunDir(run_dir)
    best = run.best
    if not best.is_file():
        raise DataError(f"{run_dir} has no best.pt yet: the run has not finished an epoch")
    config, classes, results, history = run.config(), run.classes(), run.results(), run.history()
    eval_dir = run.eval_dir("val")
    if eval_dir.read_metrics() is None:
        evaluate(run_dir, tta=config.augment.tta, out_dir=eval_dir.path)
    ev = eval_dir.read_metrics()

    counts, samples, data_description = _dataset(run, config, classes, samples_per_class)
    counts_png = None
    if counts:
        with tempfile.TemporaryDirectory() as tmp:
            counts_png = _file_uri(plot_class_counts(counts, classes, Path(tmp) / "counts.png"))
    top_k = next(k for k in ev if k.startswith("top") and k not in ("top1", "test_time_augmentation"))
    overall = [("top-1 accuracy", f"{ev['top1']:.2%}"), (f"top-{top_k[3:]} accuracy", f"{ev[top_k]:.2%}"),
               ("balanced accuracy", f"{ev['balanced_accuracy']:.2%}"), ("macro F1", f"{ev['macro_f1']:.3f}"),
               ("loss", f"{ev['loss']:.4f}"), ("calibration error (ECE)", f"{ev['ece']:.4f}")]
    overall += [(f"top-1 with {k}", f"{v['top1']:.2%} ({v['gain']:+.2%})")
                for k, v in ev.get("test_time_augmentation", {}).items()]
    image_size = config.data.image_size
    model_rows = _model_rows(best, image_size)
    diagram_svg = _diagram(best, image_size)
    cards = [
        {"label": "held-out top-1 accuracy", "value": f"{ev['top1']:.2%}"},
        {"label": "balanced accuracy", "value": f"{ev['balanced_accuracy']:.2%}"},
        {"label": "macro F1", "value": f"{ev['macro_f1']:.3f}"},
        {"label": "held-out images", "value": f"{ev['images']:,}"},
        {"label": "parameters (fused)", "value": model_rows[-1]["params"]},
        {"label": "training time", "value": f"{results.get('seconds', 0) / 60:.1f} min"},
    ]
    history_keys = [k for k in ("epoch", "train/loss", "train/acc", "val/loss", "val/acc", "val/balanced_acc",
                                "lr", "train/img_s") if history and k in history[0]]
    fmt_history = [{k: (f"{float(v):.4g}" if k != "epoch" else str(int(v) + 1)) for k, v in row.items() if v != ""}
                   for row in history]
    html = jinja2.Environment(autoescape=True).from_string(_TEMPLATE).render(
        name=run_dir.name, model_name=config.model.name, data_path=config.data.path,
        created=time.strftime("%Y-%m-%d %H:%M", time.localtime(run.config_file.stat().st_mtime)),
        cards=cards, data_description=data_description, splits=list(counts),
        count_rows=[{"cls": c, "counts": [counts[s][i] for s in counts]} for i, c in enumerate(classes)],
        counts_png=counts_png, samples=samples, bad_files=results.get("bad_files", []),
        curves_png=_file_uri(run.curves), history=fmt_history, history_keys=history_keys,
        eval=ev, eval_source=Path(ev["model"]["source"]).name, overall=overall,
        confusion_png=_file_uri(eval_dir.confusion), misclassified_png=_file_uri(eval_dir.misclassified),
        gradcam_png=_file_uri(eval_dir.gradcam), image_size=image_size, model_rows=model_rows,
        diagram_svg=diagram_svg,
        auto=results.get("auto", []), config_yaml=run.config_text(),
        environment=_environment(results, history), version=_version(), generated=time.strftime("%Y-%m-%d %H:%M"),
        run_dir=run_dir)
    return atomic_write_text(run.report, html)


def _version() -> str:
    from .. import __version__

    return __version__
