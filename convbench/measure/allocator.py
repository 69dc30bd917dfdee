"""Freed memory stays in the process while convbench measures.

glibc's malloc hands a freed block back to the kernel when it was mapped on its own (at or
above the *mmap threshold*) or when it leaves that much free at the top of the heap (the *trim
threshold*), and the next call of that size page-faults through fresh pages. Both thresholds
move with what the process allocated before, so a call's time depends on its history: on 2
threads, torch's ``irfft2`` of sixteen 140×140 spectra took 0.42 ms in a fresh process, and
1.43 ms (205 page faults a call) once one transform of 128×128 had run before it. A timer must
time the call, not the allocator's past, so the measuring processes fix both thresholds high
(``keep_freed_memory``): then 0.42 ms, and no page fault, whatever ran before. Every
participant of a comparison runs under the same policy, torch's own convolution included.

Memory figures are unaffected: ``memory.py`` counts bytes allocated, not resident pages. A
program that uses convbench's backends as a library keeps its own allocator policy: only
the timer (``Clock``) and the preparation of a timed case (``sweep.make_ready``) call this.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

__all__ = ["MMAP_THRESHOLD", "TRIM_THRESHOLD", "keep_freed_memory"]

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20
"""Bytes from which a block is mapped on its own: the largest value glibc documents for 64-bit
systems. Setting it turns off the threshold's moving with history."""
TRIM_THRESHOLD = 1 << 30
"""Bytes of free heap top kept before any is returned to the kernel."""


@functools.cache
def keep_freed_memory() -> bool:
    """Fix glibc's mmap and trim thresholds for this process (once). False where the C library
    has no ``mallopt`` (not glibc: macOS, musl), whose allocators are left as they are."""
    name = ctypes.util.find_library("c")
    mallopt = getattr(ctypes.CDLL(name), "mallopt", None) if name else None
    if mallopt is None:
        return False
    return bool(
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
