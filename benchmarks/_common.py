"""Shared helpers for benchmark scripts: machine description, medians, and writing a section of
docs/benchmarks.md (each script owns the section between its markers and leaves the rest alone)."""

from __future__ import annotations

import os
import platform
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

from plainnet.cpu import usable_cores

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "benchmarks.md"
SHARED = ROOT.parent / "shared" / "datasets"


#: Codenames of the CPU families these benchmarks have run on, by (vendor, family, model).
CODENAMES = {("AuthenticAMD", "25", "1"): "Zen 3", ("AuthenticAMD", "25", "17"): "Zen 4"}


def cpu() -> tuple[str, str]:
    """(a short key, a readable label) for this CPU: model, family/model numbers and the vector ISA that
    decides plainnet's speed (AVX2, AVX-512, native bf16, VNNI)."""
    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        return platform.machine(), platform.processor() or platform.machine()
    vendor, family, model = info.get("vendor_id", "?"), info.get("cpu family", "?"), info.get("model", "?")
    flags = set(info.get("flags", "").split())
    isa = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_bf16") if f in flags]
    name = info.get("model name", "cpu")
    codename = CODENAMES.get((vendor, family, model))
    label = f"{name} ({codename + ', ' if codename else ''}family {family} model {model}; {' '.join(isa)})"
    short = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}.get(vendor, vendor.lower())
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA")
    if cap:  # ../shared/tools/slow-cpu (or a user's cap): another machine as far as the figures go
        cores = usable_cores()
        label += f" under slow-cpu (oneDNN capped at {cap}, {cores} cores)"
        return f"{short}-{family}-{model}-{cap.lower()}-{cores}c", label
    return f"{short}-{family}-{model}", label


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu()[1]}, {usable_cores()} cores, {gpu}; Python {platform.python_version()}, "
            f"torch {torch.__version__}, {torch.get_num_threads()} threads")


def median_spread(values: list[float]) -> str:
    return f"{statistics.median(values):.1f} ({min(values):.1f}-{max(values):.1f})"


def command_line() -> str:
    return " ".join(["python", *[a if " " not in a else repr(a) for a in sys.argv]])


def write_section(name: str, body: str) -> None:
    """Replace (or append) this CPU's copy of section ``name`` of docs/benchmarks.md: each CPU kind keeps
    its own tables, its model and vector ISA in the heading."""
    key, label = cpu()
    start, end = f"<!-- {name}@{key}:start -->", f"<!-- {name}@{key}:end -->"
    title, _, rest = body.strip().partition("\n")
    body = f"{title} — {label}\n{rest}"
    block = f"{start}\n{body.rstrip()}\n\n_Measured {time.strftime('%Y-%m-%d')} with `{command_line()}` on {machine()}._\n{end}"
    DOC.parent.mkdir(exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# plainnet benchmarks\n\nEach section is written by the script named in it.\n"
    if start in text:
        text = re.sub(re.escape(start) + r".*?" + re.escape(end), lambda _: block, text, flags=re.S)
    elif f"<!-- {name}@" in text:  # beside the same section measured on another CPU
        last = [m.end() for m in re.finditer(re.escape(f"<!-- {name}@") + r"[^>]*:end -->", text)][-1]
        text = text[:last] + "\n\n" + block + text[last:]
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    DOC.write_text(text)
    print(f"wrote section '{name}' ({label}) of {DOC}")


def run(cmd: list[str], **kw) -> tuple[subprocess.CompletedProcess, float]:
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    return proc, time.perf_counter() - t
