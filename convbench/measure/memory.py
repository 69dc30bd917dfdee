"""Bytes a call allocates: its peak above what was live before it, and what it leaves behind.

Measured, not estimated. On CUDA the caching allocator keeps exact statistics: the peak is
``max_memory_allocated`` after a reset, minus what was allocated before. On the CPU torch keeps
no statistics, but the profiler sees every allocation and free as a ``[memory]`` event with its
size, so the running sum of those events, in time order, gives the peak and the net. NumPy and
SciPy allocate outside torch, where the profiler is blind and ``tracemalloc`` sees them; both
are counted. The profiler slows the call it watches, so this is never the timed call.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tracemalloc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch.autograd.profiler import profile

__all__ = ["Allocation", "allocation", "quiet_stderr"]

T = TypeVar("T")


@dataclass(frozen=True)
class Allocation:
    """``peak_bytes``: most bytes allocated at once during the call, above what was live before
    it; ``net_bytes``: bytes it allocated and had not freed when it returned."""

    peak_bytes: int
    net_bytes: int


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2: kineto logs two lines to it each time a profiler starts and
    stops, which would bury the harness's own output."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cuda(fn: Callable[[], T]) -> tuple[T, Allocation]:
    torch.cuda.synchronize()
    before = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    out = fn()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    return out, Allocation(max(peak, 0), torch.cuda.memory_allocated() - before)


def _cpu(fn: Callable[[], T]) -> tuple[T, Allocation]:
    tracing = tracemalloc.is_tracing()
    if not tracing:
        tracemalloc.start()
    try:
        # The autograd profiler, not torch.profiler.profile: that one imports torch._inductor
        # (and sympy) on its first use, seconds in every fresh or forked process.
        prof = profile(profile_memory=True)
        with quiet_stderr():
            prof.__enter__()
        try:
            # Inside the profiler: its own start-up allocates tens of MB of Python objects.
            py_before, _ = tracemalloc.get_traced_memory()
            tracemalloc.reset_peak()
            out = fn()
            py_now, py_peak = tracemalloc.get_traced_memory()
        finally:
            with quiet_stderr():
                prof.__exit__(None, None, None)
    finally:
        if not tracing:
            tracemalloc.stop()
    events = sorted(
        (e.start_ns(), e.nbytes())
        for e in prof.kineto_results.events()
        if e.name() == "[memory]" and str(e.device_type()).endswith(".CPU")
    )
    total = peak = 0
    for _, nbytes in events:
        total += nbytes
        peak = max(peak, total)
    return out, Allocation(peak + max(py_peak - py_before, 0), total + py_now - py_before)


def allocation(fn: Callable[[], T], device: str = "cpu") -> tuple[T, Allocation]:
    """Call ``fn()`` once and return its result and the bytes it allocated on ``device``."""
    return _cuda(fn) if device.startswith("cuda") else _cpu(fn)
