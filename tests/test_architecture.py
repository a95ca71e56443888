"""The package's dependency rules (docs/architecture.md), read from the source: every import -- at the top
of a module or inside a function -- points down the layers, no two modules import each other (directly
or round a circle), commands do not import commands, and ``plainnet predict`` never loads Lightning."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import torch

SRC = Path(__file__).resolve().parents[1] / "src"

#: Lower layers first; a module may import its own layer and those below it, never one above.
LAYERS = [
    ("plainnet", "plainnet.errors", "plainnet.cpu", "plainnet.files", "plainnet.model_files", "plainnet.config"),
    ("plainnet.layers",),
    ("plainnet.models",),
    ("plainnet.data",),
    ("plainnet.run_dir",),
    ("plainnet.evaluation",),
    ("plainnet.deploy",),
    ("plainnet.engine",),
    ("plainnet.compress", "plainnet.doctor"),
    ("plainnet.cli", "plainnet.__main__"),
]


def _layer(module: str) -> int:
    best = None
    for rank, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and (best is None or len(prefix) > best[1]):
                best = (rank, len(prefix))
    assert best is not None, f"{module} is in no layer of LAYERS: add it"
    return best[0]


def _modules() -> dict[str, Path]:
    found = {}
    for path in (SRC / "plainnet").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """Every plainnet module ``module`` imports, wherever the import statement is (but under
    ``if TYPE_CHECKING:``, which never runs)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "plainnet")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] == "plainnet":
                for a in node.names:  # `from . import _app` imports a module
                    found.add(f"{target}.{a.name}" if f"{target}.{a.name}" in known else target)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(ast.parse(path.read_text()))
    found.discard(module)
    return found


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {m: _imports(m, p, set(modules)) for m, p in modules.items()}


def test_every_import_points_down_the_layers():
    upward = [f"{m} (layer {_layer(m)}) imports {t} (layer {_layer(t)})"
              for m, targets in _graph().items() for t in sorted(targets) if _layer(t) > _layer(m)]
    assert upward == []


def test_no_module_imports_one_that_imports_it_back():
    graph = _graph()
    # Tarjan's strongly connected components: any component of two or more modules is a circle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for v in graph:
        if v not in index:
            connect(v)
    assert circles == []


def test_commands_do_not_import_commands():
    shared = {"plainnet.cli", "plainnet.cli._app", "plainnet.cli._render"}
    crossing = [f"{m} imports {t}" for m, targets in _graph().items()
                if m.startswith("plainnet.cli.") and m not in shared
                for t in targets if t.startswith("plainnet.cli") and t not in shared]
    assert crossing == []


def test_the_rules_catch_an_upward_import_and_a_circle(tmp_path, monkeypatch):
    """The checks above are not vacuous: a models module importing the trainer breaks both."""
    fake = tmp_path / "plainnet" / "models"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "bad.py").write_text("def f():\n    from ..engine import train\n")
    (tmp_path / "plainnet" / "engine").mkdir()
    (tmp_path / "plainnet" / "engine" / "__init__.py").write_text("from ..models import bad\n")
    (tmp_path / "plainnet" / "__init__.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "SRC", tmp_path)
    graph = _graph()
    assert "plainnet.engine" in graph["plainnet.models.bad"]
    assert _layer("plainnet.engine") > _layer("plainnet.models.bad")
    assert "plainnet.models.bad" in graph["plainnet.engine"]  # ... and back: a circle


def test_predict_does_not_import_lightning(tmp_path):
    import plainnet
    from plainnet.models import save_checkpoint

    model = plainnet.create_model("repvgg_a0", num_classes=2)
    ckpt = save_checkpoint(model, tmp_path / "m.pt", classes=["a", "b"],
                           preprocess={"image_size": 32, "crop_ratio": 1.0, "mean": [0.5] * 3, "std": [0.25] * 3})
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray((torch.rand(40, 40, 3) * 255).byte().numpy()).save(image)
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "plainnet", "predict", str(ckpt), str(image)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "x.png" in proc.stdout  # it did predict
    imported = re.findall(r"^import time:\s+\d+ \|\s+\d+ \| ( *)(\S+)$", proc.stderr, flags=re.M)
    assert len(imported) > 100 and any(name == "torch" for _, name in imported)  # the trace is read right
    assert [name for _, name in imported if name.split(".")[0] in ("lightning", "pytorch_lightning")] == []


#: The longest a function may be (docs/architecture.md, "How the code reads"): longer ones mix steps.
MAX_FUNCTION_LINES = 80


def test_no_function_is_longer_than_the_limit():
    long = [f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for path in (SRC / "plainnet").rglob("*.py") for node in ast.walk(ast.parse(path.read_text()))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert long == []


def test_no_config_field_is_cast_after_the_recipe():
    """What leaves ``engine.recipe.resolve`` is concrete (tests/test_config.py checks that): a cast of a
    config field elsewhere would hide an ``auto`` that got through."""
    cast = re.compile(r"\b(int|float|bool)\((cfg|config|self\.cfg|run\.cfg)?\.?(data|augment|model|optim|schedule|"
                      r"train|distill|d|a|m|o|s|t)\.[a-z_]+\)")
    found = [f"{path.relative_to(SRC)}:{i}: {line.strip()}"
             for path in (SRC / "plainnet").rglob("*.py") if path.name != "recipe.py"
             for i, line in enumerate(path.read_text().splitlines(), 1) if cast.search(line)]
    assert found == []
