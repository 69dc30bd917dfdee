"""What every Numba kernel of the backends shares: how it is compiled, and the thread pool it
runs on, which must follow torch's thread count (the two share one OpenMP runtime)."""

from __future__ import annotations

import numba
import torch

__all__ = ["JIT", "POOL", "use_threads"]

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
