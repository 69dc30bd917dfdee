"""Cold caches: each timed call finds what the backend keeps from call to call evicted (its
weights, their transforms, its workspaces), while its input is warm.

That is a layer's lot inside a network, where the other layers run in between and the layer
before has just written the input. Timed call after call, as benchmarks do, a backend's own
data stays in the caches, and a backend that keeps a lot of it gains most: fft-torch keeps
10 MB of weight spectrum for one 128² image of 8 → 16 channels with an 11×11 kernel (41 MB
for 8 → 64), where torch keeps the kernel's 62 KB. ``convbench run --spec
mb1ic8ih128oc16oh128kh11ph5 --spec mb8ic128ih28oc128oh28kh3ph1 --backend
torch,fft-torch,winograd-f4``, warm and then with ``--cold-cache``: fft-torch 1.31× torch
warm, 1.04× cold (that 8 → 16-channel image); Winograd F(4) 1.66× warm, 1.44× cold (128
channels of 28², minibatch 8). oneDNN's benchdnn offers the same choice (``--cold-cache``).

Before each timed call the device reads (CPU) or writes (CUDA) a buffer of twice its
last-level cache, outside the timed interval, then reads the input once; each sample is a
single call.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import torch

from convbench.measure.timing import Clock, Sampler, TimingConfig

__all__ = [
    "Flush",
    "cold_sampler",
    "cold_timing",
    "last_level_cache_bytes",
    "regime_sampler",
    "regime_timing",
]

CPU_CACHES = Path("/sys/devices/system/cpu/cpu0/cache")
FALLBACK_BYTES = 256 << 20
"""What a last-level cache is taken to hold where the system does not say (not Linux): a guess,
as large as this machine's 260 MiB L3; a larger cache is then only partly evicted."""
COLD_BUDGET = 4
"""How many times the budget of warm timing a participant gets: each of its samples also pays
for a flush (about 30 ms on a 260 MiB L3), which the budget counts."""


def _size(text: str) -> int:
    """Bytes from sysfs's ``32K``, ``2048K``, ``260M``."""
    text = text.strip()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def last_level_cache_bytes(device: str) -> int:
    """The largest cache of ``device``: the CPU's last level as Linux reports it for its first
    core, or the CUDA device's L2."""
    if device == "cuda":
        return int(torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size)
    texts = [p.read_text().strip() for p in CPU_CACHES.glob("index*/size")]
    return max((_size(t) for t in texts if t), default=FALLBACK_BYTES)


class Flush:
    """Evicts ``device``'s caches: a pass over a buffer of twice the last-level cache (or of
    ``nbytes``), kept for the whole run."""

    def __init__(self, device: str, nbytes: int | None = None) -> None:
        self.device = device
        self.nbytes = nbytes or 2 * last_level_cache_bytes(device)
        self.buffer = torch.ones(self.nbytes // 4, dtype=torch.float32, device=device)

    def __call__(self) -> float:
        """One pass; returns the CPU buffer's sum (its length: every element was read)."""
        if self.device == "cuda":
            self.buffer.fill_(1.0)  # writes: the L2 keeps what a kernel wrote, not only read
            return float(self.buffer.numel())
        return float(self.buffer.sum())  # float32: a float64 sum ran 14× slower (420 ms)


@functools.cache
def flush_for(device: str) -> Flush:
    """The one flush buffer of ``device`` in this process."""
    return Flush(device)


def cold_sampler(
    clock: Clock, fn: Callable[[], object], warm: torch.Tensor, flush: Callable[[], object]
) -> Sampler:
    """A sampler of ``number`` calls of ``fn``, each timed alone after ``flush`` and a read of
    ``warm`` (the input), neither of which is timed; returns their summed seconds."""

    def sample(number: int) -> float:
        total = 0.0
        for _ in range(number):
            flush()
            warm.sum()
            total += clock(fn, 1)
        return total

    return sample


def cold_timing(config: TimingConfig) -> TimingConfig:
    """``config`` for cold calls: one call a sample (a call after another is warm), no untimed
    calls before a turn (they would warm it), and COLD_BUDGET times the budget."""
    return replace(
        config, min_sample_s=0.0, turn_warmup_s=0.0, budget_s=config.budget_s * COLD_BUDGET
    )


def regime_sampler(clock: Clock, fn: Callable[[], object], x: torch.Tensor, cold: bool) -> Sampler:
    """``fn``'s sampler: calls back to back, or with ``cold`` each alone after a flush of the
    device ``x`` lives on and a read of ``x`` (its input)."""
    if cold:
        return cold_sampler(clock, fn, x, flush_for(x.device.type))
    return clock.sampler(fn)


def regime_timing(config: TimingConfig, cold: bool) -> TimingConfig:
    """``config``, or with ``cold`` its cold form (:func:`cold_timing`)."""
    return cold_timing(config) if cold else config
