"""What this CPU can do, read once from the operating system (no torch import).

plainnet chooses some defaults by CPU feature rather than by assumption: int8 weights are quantized to
7 bits on x86 CPUs without VNNI (see :func:`int8_pairs_saturate`), and the machine is named beside
every benchmark figure.
"""

from __future__ import annotations

import functools
import os
import platform
from pathlib import Path

__all__ = ["cpu_flags", "cpu_name", "has_vnni", "int8_pairs_saturate", "native_bf16", "usable_cores", "describe_cpu"]


@functools.cache
def _cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""


@functools.cache
def cpu_flags() -> frozenset[str]:
    """Lower-case feature flags as Linux names them (``avx2``, ``avx512_vnni``, ...).

    From ``/proc/cpuinfo`` on Linux; elsewhere from NumPy's runtime dispatch table, whose names are
    mapped to the Linux spelling for the flags plainnet looks at.
    """
    for line in _cpuinfo().splitlines():
        if line.startswith(("flags", "Features")):
            return frozenset(line.split(":", 1)[1].split())
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as features
    except ImportError:  # NumPy < 2
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as features
        except ImportError:
            return frozenset()
    linux_names = {"AVX512VNNI": "avx512_vnni", "AVX512BF16": "avx512_bf16", "FMA3": "fma", "ASIMDDP": "asimddp"}
    return frozenset(linux_names.get(k, k.lower()) for k, on in features.items() if on)


@functools.cache
def cpu_name() -> str:
    for line in _cpuinfo().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine() or "unknown CPU"


def _is_x86() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64", "i386", "i686")


def has_vnni() -> bool:
    """AVX-512 VNNI, AVX-VNNI or AMX: int8 dot products accumulate straight into int32."""
    return bool(cpu_flags() & {"avx512_vnni", "avx_vnni", "amx_int8"})


def int8_pairs_saturate() -> bool:
    """True on x86 CPUs without VNNI (e.g. AMD Zen 2/3, Intel before Ice Lake / Alder Lake).

    There onnxruntime's u8 x s8 int8 kernels use ``vpmaddubsw``, which adds two 8-bit products in a
    *saturating* int16: 255 x 127 x 2 = 64,770 does not fit in 32,767, so large activations meeting
    large weights are clipped and accuracy drops (measured under an emulated Zen 3: a CIFAR-10 RepVGG-A0
    agreed with fp32 on 83% of images with 8-bit weights, 89% with 7-bit; docs/benchmarks.md). 7-bit
    weights (``reduce_range``) keep every pair sum in range at the same speed. ARM and VNNI CPUs
    accumulate in int32 and need no such care.
    """
    return _is_x86() and not has_vnni()


#: oneDNN's ISA caps (``ONEDNN_MAX_CPU_ISA``) below which it has no bf16 dot-product instructions: a
#: process started with one of these runs bf16 convolutions emulated, whatever the CPU has.
_ONEDNN_CAPS_WITHOUT_BF16 = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE",
                                       "AVX512_CORE_VNNI"})
#: ATen's kernel levels (``ATEN_CPU_CAPABILITY``) without AVX-512: its own bf16 kernels are emulated there.
_ATEN_CAPS_WITHOUT_BF16 = frozenset({"default", "avx2"})


def native_bf16(environ=None) -> tuple[bool, str]:
    """Whether this process can run bf16 natively on this CPU, and why (one phrase).

    Native means the CPU has AVX-512 BF16 or AMX-BF16 *and* neither oneDNN nor ATen was capped below
    them for this process (``ONEDNN_MAX_CPU_ISA``/``DNNL_MAX_CPU_ISA``, ``ATEN_CPU_CAPABILITY``: a
    process started with ``ONEDNN_MAX_CPU_ISA=AVX2`` emulates bf16 even on a CPU that has it). Emulated
    bf16 trains several times slower than fp32, so plainnet never times or picks it.
    """
    env = os.environ if environ is None else environ
    flags = cpu_flags()
    if not flags & {"avx512_bf16", "amx_bf16"}:
        return False, "the CPU has no AVX-512 BF16 or AMX"
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        cap = env.get(var, "").strip().upper()
        if cap in _ONEDNN_CAPS_WITHOUT_BF16:
            return False, f"{var}={cap} caps oneDNN below its bf16 instructions"
    cap = env.get("ATEN_CPU_CAPABILITY", "").strip().lower()
    if cap in _ATEN_CAPS_WITHOUT_BF16:
        return False, f"ATEN_CPU_CAPABILITY={cap} caps ATen below AVX-512"
    return True, "AMX" if "amx_bf16" in flags else "AVX-512 BF16"


def usable_cores() -> int:
    """The cores this process may run on (``taskset``, cgroups' cpusets), not all the machine has."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def describe_cpu() -> str:
    """One line naming the CPU and the features plainnet's defaults depend on."""
    wanted = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")
    found = [f for f in wanted if f in cpu_flags()]
    bf16 = "native bf16" if native_bf16()[0] else "no native bf16"
    return f"{cpu_name()}, {usable_cores()} cores ({', '.join(found) or 'no AVX2'}; {bf16})"
