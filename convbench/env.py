"""The environment fingerprint written beside every run: what a result can only be read with."""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy
import torch

from convbench import __version__
from convbench.backends.base import has_onednn_matmul, onednn_linear
from convbench.measure.allocator import keep_freed_memory

__all__ = [
    "PEAK_GEMM_N",
    "cpu_count",
    "cpu_model",
    "fingerprint",
    "gemm_peak",
    "gemm_products",
    "gemm_rates",
    "gpu_info",
]


def cpu_count() -> int:
    """Cores this process may run on (the affinity mask, not the machine's total)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


PEAK_GEMM_N = 1024
"""The size of the square GEMM whose rate is the recorded peak."""


def gemm_products(device: str = "cpu", n: int = PEAK_GEMM_N) -> dict[str, Callable[[], object]]:
    """An n×n float32 product on operands made once, by each GEMM library torch reaches on
    ``device``: ``torch.mm`` (the BLAS torch was built with, or cuBLAS) and, on a CPU where
    oneDNN takes it, oneDNN's matmul, which im2col and Winograd may choose.

    Why both: a roofline is the fastest GEMM the machine runs, and which library that is
    depends on the CPU. MKL runs its AVX2 kernels on AMD CPUs: on a Zen 5 (2 threads) the
    1024³ product ran 162–192 GFLOP/s by ``torch.mm`` and 370–413 by oneDNN, so im2col's
    oneDNN products read 178–232 % of a peak taken from ``torch.mm`` alone."""
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)
    c = torch.empty(n, n, device=device)
    products: dict[str, Callable[[], object]] = {"torch.mm": lambda: torch.mm(a, b, out=c)}
    if has_onednn_matmul(a):
        linear = onednn_linear(b.t(), None, n)
        products["oneDNN matmul"] = lambda: linear(a)
    return products


def gemm_rates(
    device: str = "cpu", n: int = PEAK_GEMM_N, repeats: int = 10, warmup_s: float = 0.25
) -> dict[str, float]:
    """Best-of-``repeats`` rate (GFLOP/s) of each of :func:`gemm_products`.

    The repeats follow ``warmup_s`` of the same GEMM: a core that has idled runs its first
    milliseconds slow: a best of five 7 ms calls at the start of a process once read
    234 GFLOP/s on a CPU that sustains 315, and every rate read against so low a roofline
    looks high."""
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    rates = {}
    for library, product in gemm_products(device, n).items():
        times: list[float] = []
        start = time.perf_counter()
        while len(times) < repeats or time.perf_counter() - start < warmup_s:
            sync()
            t0 = time.perf_counter()
            product()
            sync()
            times.append(time.perf_counter() - t0)
        rates[library] = 2 * n**3 / min(times[-repeats:]) / 1e9
    return rates


def gemm_peak(
    device: str = "cpu", n: int = PEAK_GEMM_N, repeats: int = 10, warmup_s: float = 0.25
) -> tuple[str, float]:
    """The fastest library of :func:`gemm_rates` on ``device`` and its float32 rate
    (GFLOP/s): the roofline every convolution algorithm here is measured against."""
    rates = gemm_rates(device, n, repeats, warmup_s)
    library = max(rates, key=rates.__getitem__)
    return library, rates[library]


def _torch_build() -> dict[str, str]:
    config = torch.__config__.show()
    out = {}
    if m := re.search(r"MKL-DNN v([\w.]+)", config):
        out["onednn"] = m.group(1)
    if m := re.search(r"BLAS_INFO=(\w+)", config):
        out["blas"] = m.group(1)
    if m := re.search(r"Math Kernel Library Version ([\w.]+)", config):
        out["mkl"] = m.group(1)
    return out


def _numpy_blas() -> str:
    try:
        cfg = np.show_config(mode="dicts")
        blas = cfg["Build Dependencies"]["blas"]
        return f"{blas.get('name', '')} {blas.get('version', '')}".strip()
    except (TypeError, KeyError):
        return ""


def _git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5
        )
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    if out.returncode != 0:
        return None
    return out.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def gpu_info() -> dict[str, Any] | None:
    """The first CUDA device, its toolkit, cuDNN and driver; ``None`` without one."""
    if not torch.cuda.is_available():
        return None
    props = torch.cuda.get_device_properties(0)
    info: dict[str, Any] = {
        "name": props.name,
        "count": torch.cuda.device_count(),
        "memory_bytes": props.total_memory,
        "capability": f"{props.major}.{props.minor}",
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version(),
        "allow_tf32_conv": torch.backends.cudnn.allow_tf32,
        "allow_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
    }
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
        info["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 else None
    except (OSError, subprocess.SubprocessError, IndexError):
        info["driver"] = None
    return info


@functools.cache
def device_name(device: str) -> str:
    """What ``device`` is on this machine: the CPU model, or the GPU's name and UUID (which
    tells two GPUs of one model apart, as ``CUDA_VISIBLE_DEVICES`` does)."""
    if not device.startswith("cuda"):
        return cpu_model()
    props = torch.cuda.get_device_properties(torch.device(device))
    return f"{props.name} (GPU-{props.uuid})"


def _gemm_peaks(devices: list[str]) -> dict[str, dict[str, Any]]:
    """Each device's GEMM peak (``gemm_gflops``) and the library that ran it."""
    peaks = {d: gemm_peak(d) for d in devices}
    return {
        "gemm_gflops": {d: round(rate, 1) for d, (_, rate) in peaks.items()},
        "gemm_library": {d: library for d, (library, _) in peaks.items()},
    }


def fingerprint(threads: int, devices: list[str]) -> dict[str, Any]:
    """Everything about this machine and software that can change a timing."""
    return {
        "convbench": __version__,
        "git_commit": _git_commit(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "hostname": platform.node(),
        "cpu": cpu_model(),
        "cores": cpu_count(),
        "threads": threads,
        "os": platform.platform(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numpy_blas": _numpy_blas(),
        "scipy": scipy.__version__,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_build": _torch_build(),
        **_gemm_peaks(devices),
        "gpu": gpu_info(),
        # Whether the run kept freed memory in the process (measure/allocator.py).
        "freed_memory_kept": keep_freed_memory(),
        "env": {
            k: v
            for k, v in os.environ.items()
            if k
            in (
                "OMP_NUM_THREADS",
                "MKL_NUM_THREADS",
                "OPENBLAS_NUM_THREADS",
                "OPENBLAS_CORETYPE",
                "CUBLAS_WORKSPACE_CONFIG",
                "CUDA_VISIBLE_DEVICES",
            )
        },
    }
