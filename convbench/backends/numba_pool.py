"""What every Numba kernel of the backends shares: how it is compiled, and the thread pool it
runs on, which must follow torch's thread count (the two share one OpenMP runtime); and a way
to run Python work that releases the GIL (another library's C code) on that pool's threads."""

from __future__ import annotations

import functools
import itertools
import warnings
from collections.abc import Callable

import numba
import torch
from numba import njit, objmode, prange

__all__ = ["JIT", "POOL", "on_pool", "use_threads"]

POOL = numba.config.NUMBA_NUM_THREADS
"""Threads in Numba's pool: the rows of a scratch array."""

JIT = {"parallel": True, "cache": True, "boundscheck": False, "fastmath": {"contract"}}
"""Cached, so that a process (and a counting pass under valgrind) loads the machine code
instead of compiling it; of fast-math only multiply-add contraction is allowed: no NaN or
infinity is assumed away, and every sum is taken in the order written."""


def use_threads(n: int) -> None:
    """Run the kernels on ``n`` threads, as many as torch runs its operators on (at most
    Numba's pool): a run on one thread must not compute a stage on two."""
    numba.set_num_threads(max(1, min(n, POOL)))
    # The first call launches Numba's pool, which sets the thread count of the OpenMP runtime
    # it shares with torch to the pool's size: torch's own count is put back.
    if torch.get_num_threads() != n:
        torch.set_num_threads(n)


_JOBS: dict[int, Callable[[int], None]] = {}
"""The jobs of the ``on_pool`` calls under way, by key: what the compiled loop calls back."""
_KEYS = itertools.count()


def _run_part(key: int, part: int) -> None:
    _JOBS[key](part)


@njit(parallel=True, nogil=True)
def _parts(key: int, parts: int) -> None:
    """Part p of job ``key`` on the pool's thread p, in the interpreter (the GIL released on
    entry, so that each part takes it only for its own Python steps). Not cached: loaded from
    Numba's cache, a parallel loop around an object-mode block fails for want of its
    environment ("missing Environment"); it compiles in half a second, once a process."""
    for p in prange(parts):
        with objmode():
            _run_part(key, p)


@functools.cache
def _compiled() -> Callable[[int, int], None]:
    """``_parts``, compiled once, without the warning Numba gives for an object-mode block in
    a ``nogil`` function: that block is the point."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", numba.NumbaWarning)
        _parts(-1, 0)
    return _parts


def on_pool(job: Callable[[int], None], parts: int) -> None:
    """``job(0)``, …, ``job(parts − 1)`` at once, each on a thread of the OpenMP pool that
    torch's operators and the Numba kernels run on (at most ``use_threads``'s count at once);
    the first exception a part raises is raised here once all have ended.

    For a library with threads of its own (pocketfft's ``workers``): after each of torch's
    operators its OpenMP threads spin-wait for more work, so a library's own threads started
    then share the cores with them. Split into parts, each on one thread of the library and
    run on the pool's threads, its work has the cores to itself: eight complex 140×140 FFTs
    by ``scipy.fft``, each call after a torch GEMM and a Numba loop, took 746–926 µs so
    against 994–1017 with ``workers=2`` and 1063–1149 on one thread (2 threads, medians of
    300 calls, two runs). The parts must release the GIL for most of their time, or they run
    one after the other."""
    key = next(_KEYS)
    errors: list[BaseException] = []

    def guarded(part: int) -> None:
        try:
            job(part)
        except BaseException as e:  # raised below, in the caller's thread
            errors.append(e)

    _JOBS[key] = guarded
    try:
        _compiled()(key, parts)
    finally:
        del _JOBS[key]
    if errors:
        raise errors[0]
