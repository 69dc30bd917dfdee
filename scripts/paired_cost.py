"""What paired rounds cost against timing each backend alone, and how well each knows the ratio.

    python scripts/paired_cost.py [--suite representative] [--repeats 3] [--threads 1]

For every problem of the suite (all registered backends, CPU, float32) the prepared backends
are timed ``--repeats`` times each way, the ways alternating: *alone*, each backend by
``measure`` one after the other (every median to ``rel_precision``), and *paired*, by
``measure_rounds`` with the baseline (every speed-up to √2 · ``rel_precision``, the precision a
ratio of two medians known to ``rel_precision`` has). Per problem it prints the wall time of
each way, the precision each *claims* for the speed-ups (alone: the two medians' half-widths
added in quadrature; paired: the paired interval's), and the precision each *achieves*: half
the relative spread of a backend's speed-up over the repeats. Medians over the backends. A
benchmark, not a test: run it on an idle machine.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable
from dataclasses import replace

import torch

from convbench import backends
from convbench.inputs import make_inputs
from convbench.measure.stats import median_ci
from convbench.measure.timing import Clock, Timing, TimingConfig, measure, measure_rounds
from convbench.suites import SUITES
from convbench.sweep import Case, Ready, make_ready, reference

Way = Callable[[dict[str, Ready], TimingConfig, str], tuple[float, dict[str, tuple[float, float]]]]


def _half_width(t: Timing) -> float:
    lo, hi = median_ci(t.samples_s)
    return (hi - lo) / (2 * t.median_s)


def alone(readies: dict[str, Ready], cfg: TimingConfig, baseline: str) -> tuple[float, dict]:
    """Wall seconds, and each backend's (speed-up, claimed precision)."""
    t0 = time.perf_counter()
    timings = {b: measure(r.run, "cpu", cfg) for b, r in readies.items()}
    wall = time.perf_counter() - t0
    base = timings[baseline]
    return wall, {
        b: (base.median_s / t.median_s, math.hypot(_half_width(base), _half_width(t)))
        for b, t in timings.items()
        if b != baseline
    }


def paired(readies: dict[str, Ready], cfg: TimingConfig, baseline: str) -> tuple[float, dict]:
    clock = Clock("cpu")
    t0 = time.perf_counter()
    rounds = measure_rounds(
        {b: clock.sampler(r.run) for b, r in readies.items()}, cfg, baseline=baseline
    )
    wall = time.perf_counter() - t0
    speedups = {b: rounds.speedup(b) for b in rounds.timings if b != baseline}
    return wall, {b: (s.value, s.precision) for b, s in speedups.items() if s is not None}


def _spread(values: list[float]) -> float:
    return (max(values) - min(values)) / (max(values) + min(values))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--suite", default="representative")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--baseline", default="torch")
    for way in ("alone", "paired"):
        ap.add_argument(f"--{way}-budget", type=float, help=f"budget_s of the {way} way")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = TimingConfig()
    ways: dict[str, Way] = {"alone": alone, "paired": paired}
    configs = {
        way: replace(cfg, budget_s=getattr(args, f"{way}_budget") or cfg.budget_s) for way in ways
    }
    totals = dict.fromkeys(ways, 0.0)
    print(f"{'problem':28} {'way':7} {'wall s':>7} {'claimed':>8} {'achieved':>8}")
    for i, w in enumerate(SUITES[args.suite].workloads()):
        inputs = make_inputs(w.spec, w.fill, 0)
        ref = reference(w.spec, inputs)
        readies = {
            name: make_ready(Case(w, name, "cpu", "float32"), inputs, ref)
            for name in backends.names()
            if backends.get(name).supports(w.spec, "cpu", torch.float32) is None
        }
        walls = {label: [] for label in ways}
        got: dict[str, list[dict[str, tuple[float, float]]]] = {label: [] for label in ways}
        with torch.no_grad():
            for r in range(args.repeats):
                for label in sorted(ways, reverse=bool((i + r) % 2)):
                    wall, speedups = ways[label](readies, configs[label], args.baseline)
                    walls[label].append(wall)
                    got[label].append(speedups)
        for label in ways:
            totals[label] += sum(walls[label])
            names = set.intersection(*(set(g) for g in got[label]))
            claimed = statistics.median(p for g in got[label] for _, p in g.values())
            achieved = statistics.median(_spread([g[b][0] for g in got[label]]) for b in names)
            print(
                f"{w.spec.name:28} {label:7} {statistics.fmean(walls[label]):7.2f} "
                f"{100 * claimed:7.1f}% {100 * achieved:7.1f}%"
            )
    print(
        f"total: alone {totals['alone']:.1f} s, paired {totals['paired']:.1f} s, "
        f"paired/alone {totals['paired'] / totals['alone']:.2f}"
    )


if __name__ == "__main__":
    main()
