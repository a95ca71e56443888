"""A training run's directory: the one place that knows its file names, and typed reads and writes of them.

::

    runs/<name>/
      config.yaml          the resolved config (every automatic choice written out, and why)
      classes.json         class names, in output order
      split.json           which file went to which split (image folders)
      best.pt, last.pt     plainnet checkpoints (architecture, weights, classes, preprocessing)
      checkpoints/last.ckpt   the Lightning checkpoint --resume continues from
      metrics.csv, curves.png, train.log, tb/   per-epoch history, its plot, the log, TensorBoard
      results.json         how the run ended and its final scores
      eval-val/            `plainnet eval` of the run's held-out split (metrics.json, confusion.png, ...)
      report.html          the run's report

Everything is written through :mod:`plainnet.files` (atomically), so a killed process never leaves a
half-written record.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

from .config import RunConfig, load_config, save_config
from .errors import ConfigError, WeightsError
from .files import atomic_write, atomic_write_text

__all__ = ["RunDir", "EvalDir"]


class EvalDir:
    """What ``plainnet eval`` writes into its output folder (for a run's own split: ``eval-<split>/``)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.metrics = self.path / "metrics.json"
        self.per_class = self.path / "per_class.csv"
        self.confusion_table = self.path / "confusion.csv"
        self.predictions = self.path / "predictions.csv"
        self.confusion = self.path / "confusion.png"
        self.misclassified = self.path / "misclassified.png"
        self.gradcam = self.path / "gradcam.png"

    def written(self) -> list[Path]:
        """The files an evaluation left here."""
        return [p for p in vars(self).values() if p is not self.path and p.is_file()]

    def read_metrics(self) -> dict | None:
        """metrics.json, or ``None`` when this folder holds no evaluation."""
        return RunDir._json(self.metrics) if self.metrics.is_file() else None


class RunDir:
    """``RunDir(path)``: the files of the run directory at ``path`` (it need not exist yet)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"RunDir({str(self.path)!r})"

    def __fspath__(self) -> str:
        return str(self.path)

    # ------------------------------------------------------------------ what is where
    @property
    def config_file(self) -> Path:
        return self.path / "config.yaml"

    @property
    def classes_file(self) -> Path:
        return self.path / "classes.json"

    @property
    def split_file(self) -> Path:
        return self.path / "split.json"

    @property
    def best(self) -> Path:
        return self.path / "best.pt"

    @property
    def last(self) -> Path:
        return self.path / "last.pt"

    @property
    def best_fused(self) -> Path:
        """``best.pt`` re-parameterized (written by ``plainnet demo``)."""
        return self.path / "best_fused.pt"

    @property
    def checkpoints(self) -> Path:
        """Lightning's checkpoint folder; :attr:`resume_checkpoint` is the one --resume continues from."""
        return self.path / "checkpoints"

    @property
    def resume_checkpoint(self) -> Path:
        return self.checkpoints / "last.ckpt"

    @property
    def results_file(self) -> Path:
        return self.path / "results.json"

    @property
    def metrics_file(self) -> Path:
        return self.path / "metrics.csv"

    @property
    def curves(self) -> Path:
        return self.path / "curves.png"

    @property
    def log_file(self) -> Path:
        return self.path / "train.log"

    #: TensorBoard's folder name inside the run.
    TENSORBOARD = "tb"

    @property
    def report(self) -> Path:
        return self.path / "report.html"

    def eval_dir(self, split: str = "val") -> EvalDir:
        """Where ``plainnet eval`` of the run's ``split`` writes."""
        return EvalDir(self.path / f"eval-{split}")

    # ------------------------------------------------------------------ finding runs
    @staticmethod
    def is_run(path: str | Path) -> bool:
        """Whether ``path`` is a plainnet run directory (it has a config.yaml)."""
        return (Path(path) / "config.yaml").is_file()

    @classmethod
    def of(cls, path: str | Path) -> RunDir | None:
        """The run directory ``path`` is (a folder) or lies in (a file such as its best.pt), if any."""
        p = Path(path)
        for candidate in (p, p.parent) if not p.is_dir() else (p,):
            if cls.is_run(candidate):
                return cls(candidate)
        return None

    def weights(self) -> Path:
        """The run's weights for inference: ``best.pt``, else ``last.pt``."""
        for p in (self.best, self.last):
            if p.is_file():
                return p
        raise WeightsError(f"{self.path} holds no best.pt or last.pt: not a finished plainnet run directory")

    def has_weights(self) -> bool:
        """Saved any weights (best.pt, or a checkpoint to resume from)."""
        return self.best.is_file() or self.resume_checkpoint.is_file()

    # ------------------------------------------------------------------ reading
    def config(self) -> RunConfig:
        if not self.config_file.is_file():
            raise ConfigError(f"{self.path} has no config.yaml: not a plainnet run directory")
        return load_config(self.config_file)

    def config_text(self) -> str:
        return self.config_file.read_text()

    def classes(self) -> list[str]:
        return self._json(self.classes_file)

    def results(self) -> dict:
        """results.json, or ``{}`` while the run has not ended."""
        return self._json(self.results_file) if self.results_file.is_file() else {}

    def split_record(self) -> dict | None:
        """split.json as saved (``Splits.from_json`` reads it), or ``None`` (no split was recorded)."""
        return self._json(self.split_file) if self.split_file.is_file() else None

    def history(self) -> list[dict[str, str]]:
        """metrics.csv rows (values as written; empty where an epoch did not validate)."""
        if not self.metrics_file.is_file():
            return []
        with self.metrics_file.open(newline="") as f:
            return list(csv.DictReader(f))

    @staticmethod
    def _json(path: Path):
        try:
            return json.loads(path.read_text())
        except FileNotFoundError:
            raise ConfigError(f"{path} is missing: the run directory is incomplete") from None
        except (OSError, ValueError):
            raise ConfigError(f"{path} is unreadable or not JSON") from None

    # ------------------------------------------------------------------ writing
    def save_config(self, cfg: RunConfig, notes=()) -> None:
        save_config(cfg, self.config_file, notes)

    def write_classes(self, classes: list[str]) -> None:
        atomic_write_text(self.classes_file, json.dumps(list(classes), indent=1))

    def write_split(self, record: dict) -> None:
        atomic_write_text(self.split_file, json.dumps(record))

    def write_results(self, results: dict) -> None:
        atomic_write_text(self.results_file, json.dumps(results, indent=1))

    def write_history(self, rows: list[dict]) -> None:
        keys: list[str] = []
        for row in rows:
            keys += [k for k in row if k not in keys]
        with atomic_write(self.metrics_file, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=keys)
            writer.writeheader()
            writer.writerows(rows)
