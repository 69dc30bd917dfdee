"""Wall-clock timing, honest about its spread, of one callable or of several side by side.

Several callables that are to be compared (the backends of one problem, two versions of one
backend) are timed in interleaved *rounds*: every one once per round, in a fresh random order
each round, so whatever the machine does over time — another process, a clock change, a warm
or cold cache — hits all of them alike, and the per-round ratios cancel it (randomised
interleaved trials: Laaber et al., EMSE 2019; duet benchmarking: Bulej et al., ICPE 2020).
One callable alone is the one-participant case of the same loop.

Each participant is warmed up, then its calls are grouped so that one sample lasts at least
``min_sample_s`` (a call far shorter than the clock's resolution is timed ``number`` at a time
and the sample divided by ``number``). Where several take part, a participant's turn in a round
starts with untimed calls (``turn_warmup_s``, one call at least) and its value is the median of
``turn_samples`` samples: the calls that follow another participant's run up to twice as slow
for a few milliseconds (measured here: torch's depthwise layer took 0.81 ms right after the
direct backend, then 0.59, 0.55, 0.52 ms — 0.53 ms alone; Winograd F(4) 8.6 ms twice after
torch, then 7.0 ms), and a round of single cold samples would time each backend in the wake of
whichever one happened to run before it, not the backend itself. Rounds go on until every
participant's figure is known to ``rel_precision`` — its paired ratio to the baseline, or its
own median without one, by the 95 % distribution-free interval (order statistics) — or the time
budget is spent. On CUDA each sample is bracketed by CUDA events and the device is synchronised
before the host reads anything.
"""

from __future__ import annotations

import math
import random
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from convbench.measure.allocator import keep_freed_memory
from convbench.measure.stats import Ratio, median_ci, paired_ratio

__all__ = [
    "Clock",
    "Rounds",
    "Sampler",
    "Timing",
    "TimingConfig",
    "measure",
    "measure_rounds",
    "summarize",
]

Sampler = Callable[[int], float]
"""Seconds taken by ``number`` back-to-back calls of one participant."""


@dataclass(frozen=True)
class TimingConfig:
    """How hard to try. ``quick`` trades precision for a sweep that finishes fast."""

    budget_s: float = 0.5
    warmup_s: float = 0.05
    min_warmup: int = 1
    min_samples: int = 5
    max_samples: int = 200
    rel_precision: float = 0.02
    min_sample_s: float = 1e-3
    noisy_iqr: float = 0.1
    turn_samples: int = 3  # samples in a turn of a round shared with others ...
    turn_warmup_s: float = 2e-3  # ... after untimed calls this long (one at least; 0: none)

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


class Clock:
    """Seconds taken by ``number`` calls of ``fn``, read after the device is synchronised; a
    process that makes one keeps its freed memory (``allocator``), so that a call's time does
    not depend on what the process allocated before it."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda")
        keep_freed_memory()

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

    def sampler(self, fn: Callable[[], object]) -> Sampler:
        return lambda number: self(fn, number)


@dataclass(frozen=True)
class Rounds:
    """The participants' timings, sample ``i`` of each from round ``i``, and the participants
    that raised (their samples are dropped; the others stay paired)."""

    timings: dict[str, Timing]
    errors: dict[str, BaseException]
    baseline: str | None

    def speedup(self, name: str) -> Ratio | None:
        """The baseline's time over ``name``'s, paired by round (above 1: ``name`` is faster),
        over the rounds both took part in."""
        return None if self.baseline is None else self.ratio(self.baseline, name)

    def ratio(self, base: str, name: str) -> Ratio | None:
        """``base``'s time over ``name``'s, paired by round, over the rounds both took part in
        (a participant that raised left the rounds early)."""
        if base not in self.timings or name == base or name not in self.timings:
            return None
        xs, ys = self.timings[base].samples_s, self.timings[name].samples_s
        n = min(len(xs), len(ys))
        return paired_ratio(xs[:n], ys[:n])


def _known(
    name: str, samples: dict[str, list[float]], baseline: str | None, precision: float
) -> bool:
    """Whether ``name``'s figure is known to ``precision``: its own median, or, where there is a
    baseline, its paired ratio to it (over the rounds both took part in) to √2 · ``precision`` —
    what the ratio of two medians each known to ``precision`` would be known to, had they been
    timed apart (and it would carry the drift between them besides)."""
    xs = samples[name]
    if baseline in samples and name != baseline:
        base = samples[baseline][: len(xs)]  # type: ignore[index]
        return paired_ratio(base, xs).precision <= math.sqrt(2) * precision
    lo, hi = median_ci(xs)
    med = statistics.median(xs)
    return med > 0 and (hi - lo) / (2 * med) <= precision


def measure_rounds(
    samplers: dict[str, Sampler],
    config: TimingConfig | None = None,
    *,
    baseline: str | None = None,
    rng: random.Random | None = None,
    now: Callable[[], float] = time.perf_counter,
) -> Rounds:
    """Time the ``samplers`` side by side in interleaved rounds of random order.

    The budget is ``config.budget_s`` per participant, so each gets as much time as it would
    alone. ``now`` is the clock that budgets and warm-ups are read from (a test's own clock);
    ``rng`` orders the rounds (seeded by a test). A participant that raises is dropped with
    its samples, and its exception returned; the others go on.
    """
    cfg = config or TimingConfig()
    rng = rng or random.Random()
    errors: dict[str, BaseException] = {}
    live = dict(samplers)

    def take(name: str, number: int) -> float | None:
        try:
            return live[name](number)
        except Exception as exc:
            errors[name] = exc
            del live[name]
            return None

    # Warm-up: caches, lazy initialisation, allocator pools, cuDNN/oneDNN primitive caches.
    # How many calls make one sample follows from the median warm call (the first excluded):
    # a single call can be an outlier, and a sample of one 200 µs call is mostly noise.
    numbers: dict[str, int] = {}
    for name in list(live):
        start = now()
        calls: list[float] = []
        while len(calls) < max(cfg.min_warmup, 1) or now() - start < cfg.warmup_s:
            one = take(name, 1)
            if one is None:
                break
            calls.append(one)
            if now() - start > cfg.budget_s:
                break
        if name in live:
            one = statistics.median(calls[1:] or calls)
            numbers[name] = (
                1
                if one >= cfg.min_sample_s
                else min(10_000, math.ceil(cfg.min_sample_s / max(one, 1e-9)))
            )

    def turn(name: str) -> float | None:
        """A participant's turn among others: calls to warm what they left cold, then the
        median of ``turn_samples`` samples."""
        if cfg.turn_warmup_s > 0:
            start = now()
            warm = take(name, 1)
            while warm is not None and now() - start < cfg.turn_warmup_s:
                warm = take(name, 1)
            if warm is None:
                return None
        burst = []
        for _ in range(cfg.turn_samples):
            seconds = take(name, numbers[name])
            if seconds is None:
                return None
            burst.append(seconds)
        return statistics.median(burst)

    # Rounds: every active participant once, in a fresh random order. One leaves when its figure
    # is known to the precision asked (after twice the minimum rounds) or when it has had its
    # budget of sampling time, as it would alone; the baseline stays as long as anyone it pairs
    # with, so every ratio is taken over rounds both took part in.
    together = len(live) > 1
    samples: dict[str, list[float]] = {name: [] for name in live}
    spent = dict.fromkeys(live, 0.0)
    active = list(live)
    rounds = 0
    while active and rounds < cfg.max_samples:
        order = list(active)
        rng.shuffle(order)
        for name in order:
            t0 = now()
            seconds = turn(name) if together else take(name, numbers[name])
            spent[name] += now() - t0
            if seconds is None:
                active.remove(name)
                del samples[name]
                continue
            samples[name].append(seconds / numbers[name])
        rounds += 1
        if rounds < cfg.min_samples:
            continue
        enough = rounds >= 2 * cfg.min_samples
        pairs = baseline in samples and len(samples) > 1
        active = [
            name
            for name in active
            if (pairs and name == baseline)
            or not (
                spent[name] > cfg.budget_s
                or (
                    enough and _known(name, samples, baseline if pairs else None, cfg.rel_precision)
                )
            )
        ]
        if pairs and active == [baseline]:
            active = []  # its partners are done: the baseline has had as many rounds as any
    return Rounds(
        {name: summarize(xs, numbers[name], cfg.noisy_iqr) for name, xs in samples.items() if xs},
        errors,
        baseline,
    )


def measure(
    fn: Callable[[], object], device: str = "cpu", config: TimingConfig | None = None
) -> Timing:
    """Time ``fn()`` — which must do the whole work and return — per the ``config``."""
    rounds = measure_rounds({"": Clock(device).sampler(fn)}, config)
    if "" in rounds.errors:
        raise rounds.errors[""]
    return rounds.timings[""]
