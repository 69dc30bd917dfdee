"""A regression gate over pytest-benchmark results that this machine's noise cannot fool.

A time compared with a time from another run carries both runs' noise (a median moves by up to
20 % between identical runs here) and the machine's speed of the day. So the gate compares no
stored time: each benchmark's time is divided by its case's *yardstick* — the same problem
through a bare ``F.conv2d``, measured seconds apart in the same run — and that ratio is set
against the ratio the baseline recorded. What slows the whole machine cancels; a backend that
got slower does not. Ratios use each benchmark's minimum over its rounds: interference from
other processes only ever adds time, so the minimum is the steadiest statistic of the work. The
gate's runs use one thread: on a machine whose other vCPU comes and goes, a two-thread kernel
takes up to twice as long, and no statistic of its times can tell that from a regression.

Whether a run passes is judged in ``convbench.verdicts`` (``judge_ratios``): it fails when one
benchmark got ``threshold`` times slower than in the baseline, or when one backend got
``backend_threshold`` times slower on the geometric mean over its cases.
"""

from __future__ import annotations

import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

__all__ = [
    "STATISTIC",
    "YARDSTICK",
    "GateError",
    "adding",
    "load_run",
    "make_baseline",
    "newest_runs",
    "pick_baseline",
    "ratios",
    "read_baselines",
    "threads_of",
]

YARDSTICK = "yardstick"
STATISTIC = "min"
SEP = " | "
FAMILY = " (family "
"""What separates a CPU's brand from its family and model in :func:`machine_of`."""


class GateError(ValueError):
    """Input the gate cannot judge: says which file and why, in one line."""


def load_run(path: Path) -> dict[str, Any]:
    """A pytest-benchmark JSON file, checked to be one."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise GateError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("benchmarks"), list):
        raise GateError(f"{path} is not a pytest-benchmark JSON file (no 'benchmarks' list)")
    return data


def newest_runs(storage: Path, count: int = 1) -> list[Path]:
    """The ``count`` most recently written pytest-benchmark JSON files under ``storage``,
    oldest first."""
    files = sorted(Path(storage).rglob("*.json"), key=lambda p: p.stat().st_mtime)
    if len(files) < count:
        raise GateError(
            f"{len(files)} pytest-benchmark JSON file(s) under {storage}, {count} wanted; "
            "run the benchmarks first"
        )
    return files[-count:]


def ratios(run: dict[str, Any], statistic: str = STATISTIC) -> dict[str, float]:
    """``"case | device | dtype | backend"`` → the benchmark's time over its yardstick's."""
    times: dict[tuple[str, str, str], dict[str, float]] = defaultdict(dict)
    for bench in run["benchmarks"]:
        info = bench.get("extra_info", {})
        try:
            group = (info["case"], info["device"], info["dtype"])
            times[group][info["backend"]] = float(bench["stats"][statistic])
        except (KeyError, TypeError) as exc:
            raise GateError(
                f"benchmark {bench.get('name', '?')} lacks {exc} (not from tests/perf?)"
            ) from None
    out: dict[str, float] = {}
    for group, by_backend in times.items():
        ref = by_backend.get(YARDSTICK)
        if not ref:
            raise GateError(f"case {' '.join(group)} has no {YARDSTICK} benchmark to divide by")
        for backend, t in by_backend.items():
            if backend != YARDSTICK:
                out[SEP.join((*group, backend))] = t / ref
    return out


def machine_of(run: dict[str, Any]) -> str:
    """The CPU a run was measured on, as pytest-benchmark recorded it: its brand and, where
    recorded, its family and model, for a virtual machine's brand may name only the vendor's
    line ("AMD EPYC" on a Zen 3 and on a Zen 4, where the direct, im2col and FFT backends'
    times over torch's on an 11×11 case read 0.45–0.49 of the other's)."""
    cpu = run.get("machine_info", {}).get("cpu", {})
    brand = str(cpu.get("brand_raw") or "unknown CPU")
    if cpu.get("family") is None or cpu.get("model") is None:
        return brand
    return f"{brand}{FAMILY}{cpu['family']}, model {cpu['model']})"


def _brand(machine: str) -> str:
    """The brand that :func:`machine_of` starts ``machine`` with."""
    return machine.partition(FAMILY)[0]


def threads_of(runs: list[dict[str, Any]]) -> int:
    """The one thread count the benchmarks of ``runs`` used (ratios at other counts differ)."""
    seen = {b.get("extra_info", {}).get("threads") for r in runs for b in r["benchmarks"]}
    if len(seen) != 1 or not isinstance(next(iter(seen)), int):
        raise GateError(f"the runs mix or lack thread counts ({sorted(map(str, seen))})")
    return next(iter(seen))


def make_baseline(runs: list[dict[str, Any]], statistic: str = STATISTIC) -> dict[str, Any]:
    """The median ratio of each benchmark over ``runs``: a baseline steadier than any one run."""
    per_run = [ratios(r, statistic) for r in runs]
    keys = sorted(set().union(*per_run))
    return {
        "statistic": statistic,
        "machine": machine_of(runs[0]),
        "threads": threads_of(runs),
        "runs": len(runs),
        "ratios": {k: statistics.median([r[k] for r in per_run if k in r]) for k in keys},
    }


def read_baselines(path: Path) -> list[dict[str, Any]]:
    """The baselines in ``path``, one per machine and thread count: a file of several
    (``{"baselines": [...]}``) or of one, as :func:`make_baseline` makes it."""
    try:
        data = json.loads(Path(path).read_text())
        entries = data["baselines"] if "baselines" in data else [data]
        if not entries or not all(isinstance(e["ratios"], dict) for e in entries):
            raise ValueError("no ratios")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise GateError(f"cannot read the baseline {path}: {exc}") from None
    return entries


def pick_baseline(
    baselines: list[dict[str, Any]], machine: str, threads: int
) -> tuple[dict[str, Any], bool]:
    """The baseline to judge a run on ``machine`` at ``threads`` against, and whether it was
    measured on that machine. A backend's speed relative to torch's own convolution is the
    CPU's as much as the code's (on an AMD EPYC VM, the code unchanged, the FFT backends' ratios
    on seven cases ran 0.27–0.55 of an Intel Xeon's, a depthwise layer's direct and fft-scipy
    1.96 and 2.29 times it), so each CPU is judged against its own; a CPU without one is judged
    against its brand's, else any, and the caller says so. Within each, one at the run's thread
    count comes first (another is refused by the caller), then the file's order."""

    def likeness(base: dict[str, Any]) -> tuple[bool, bool, bool]:
        named = str(base.get("machine"))
        return named == machine, _brand(named) == _brand(machine), base.get("threads") == threads

    best = max(baselines, key=likeness)  # the first of the likest
    return best, best.get("machine") == machine


def adding(baselines: list[dict[str, Any]], new: dict[str, Any]) -> dict[str, Any]:
    """The baseline file's contents with ``new`` in place of the baseline of its machine and
    thread count, the others kept."""
    kept = [
        b
        for b in baselines
        if (b.get("machine"), b.get("threads")) != (new["machine"], new["threads"])
    ]
    return {"baselines": [*kept, new]}
