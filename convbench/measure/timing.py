"""Wall-clock timing of a callable, honest about its spread.

Warm up, then collect samples until the median is known to a set precision (the 95 %
distribution-free confidence interval of the median, from order statistics) or the time budget
is spent. Calls too short for the clock are grouped so that one sample lasts at least
``min_sample_s``. On CUDA each sample is bracketed by CUDA events and the device is
synchronised before the host reads anything.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

__all__ = ["Timing", "TimingConfig", "measure", "median_ci", "summarize"]


@dataclass(frozen=True)
class TimingConfig:
    """How hard to try. ``quick`` trades precision for a sweep that finishes fast."""

    budget_s: float = 1.0
    warmup_s: float = 0.05
    min_warmup: int = 1
    min_samples: int = 5
    max_samples: int = 200
    rel_precision: float = 0.02
    min_sample_s: float = 1e-3
    noisy_iqr: float = 0.1

    @classmethod
    def quick(cls) -> TimingConfig:
        return cls(budget_s=0.2, warmup_s=0.02, min_samples=3, rel_precision=0.05)


@dataclass(frozen=True)
class Timing:
    """Per-call seconds: each sample is the mean of ``number`` back-to-back calls."""

    samples_s: list[float] = field(repr=False)
    number: int
    median_s: float
    iqr_s: float
    min_s: float
    mean_s: float
    noisy: bool

    @property
    def repeats(self) -> int:
        return len(self.samples_s)


def median_ci(samples: list[float], z: float = 1.96) -> tuple[float, float]:
    """Distribution-free confidence interval of the median (order statistics, normal approx.)."""
    xs = sorted(samples)
    n = len(xs)
    half = z * math.sqrt(n) / 2
    lo = max(0, math.floor(n / 2 - half))
    hi = min(n - 1, math.ceil(n / 2 + half))
    return xs[lo], xs[hi]


def summarize(samples: list[float], number: int = 1, noisy_iqr: float = 0.1) -> Timing:
    """Median, interquartile range, min and mean of ``samples`` (seconds per call)."""
    if not samples:
        raise ValueError("no samples to summarise")
    med = statistics.median(samples)
    if len(samples) >= 2:
        q1, _, q3 = statistics.quantiles(samples, n=4, method="inclusive")
    else:
        q1 = q3 = samples[0]
    iqr = q3 - q1
    return Timing(
        samples_s=list(samples),
        number=number,
        median_s=med,
        iqr_s=iqr,
        min_s=min(samples),
        mean_s=statistics.fmean(samples),
        noisy=med > 0 and iqr / med > noisy_iqr,
    )


class _Clock:
    """Seconds taken by ``number`` calls, with the device synchronised before the reading."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")

    def __call__(self, fn: Callable[[], object], number: int) -> float:
        if self.cuda:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize()
            start.record()
            for _ in range(number):
                fn()
            end.record()
            end.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        return time.perf_counter() - t0


def measure(
    fn: Callable[[], object], device: str = "cpu", config: TimingConfig | None = None
) -> Timing:
    """Time ``fn()`` — which must do the whole work and return — per the ``config``."""
    cfg = config or TimingConfig()
    clock = _Clock(device)
    start = time.perf_counter()

    # Warm-up: caches, lazy initialisation, allocator pools, cuDNN/oneDNN primitive caches.
    one = clock(fn, 1)
    warm = 1
    while warm < cfg.min_warmup or time.perf_counter() - start < cfg.warmup_s:
        one = clock(fn, 1)
        warm += 1
        if time.perf_counter() - start > cfg.budget_s:
            break

    number = (
        1 if one >= cfg.min_sample_s else min(10_000, math.ceil(cfg.min_sample_s / max(one, 1e-9)))
    )
    samples: list[float] = []
    t0 = time.perf_counter()
    while len(samples) < cfg.max_samples:
        samples.append(clock(fn, number) / number)
        n = len(samples)
        if n < cfg.min_samples:
            continue
        if time.perf_counter() - t0 > cfg.budget_s:
            break
        lo, hi = median_ci(samples)
        med = statistics.median(samples)
        if med > 0 and (hi - lo) / (2 * med) <= cfg.rel_precision and n >= 2 * cfg.min_samples:
            break
    return summarize(samples, number, cfg.noisy_iqr)
