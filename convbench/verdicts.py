"""Verdicts in one place: what ``compare``, ``ab``, the gate and the run summary conclude from
records, in one vocabulary. It knows records and statistics, nothing of HTML or terminals.

Speed. Two runs timed at different moments (``compare``) can only be set side by side: a
change counts when it exceeds the threshold and the raw samples differ significantly
(Mann-Whitney U). Samples taken in interleaved rounds (the backends of one problem within a
run; the two versions of ``ab``) are paired: round ``i`` of both saw the same state of the
machine, so the verdict comes from the per-round ratios (Wilcoxon signed-rank test on their
logs, and the order-statistic interval of their median), which cancels the drift that
unpaired samples carry. Every p-value of a set of cases is Holm-corrected, so a 200-case
suite does not raise a false alarm by chance.

Accuracy. A result that crosses its tolerance, or whose error moves by more than a factor
(errors under a thousandth of the tolerance count as rounding), changed; errors are
deterministic for the same seed, so no test is needed there.
"""

from __future__ import annotations

import math
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from convbench.measure.stats import (
    Ratio,
    holm,
    mann_whitney_p,
    min_mann_whitney_p,
    min_wilcoxon_p,
    paired_ratio,
    wilcoxon_p,
)
from convbench.results import Record

__all__ = [
    "AB_THRESHOLD",
    "ALPHA",
    "BACKEND_THRESHOLD",
    "BAD",
    "COUNT_MARGIN",
    "ERROR_FACTOR",
    "GATE_BACKEND_THRESHOLD",
    "GATE_THRESHOLD",
    "SPEEDUP_MARGIN",
    "THRESHOLD",
    "VERDICTS",
    "BackendChange",
    "Change",
    "Comparison",
    "CountChange",
    "Judgement",
    "RatioVerdict",
    "backend_changes",
    "choice_note",
    "compare",
    "count_changes",
    "environment_diff",
    "judge_ratios",
    "record_speedup",
    "speedup_verdict",
]

VERDICTS = (
    "failed",
    "less accurate",
    "slower",
    "untested",
    "faster",
    "more accurate",
    "unchanged",
    "new",
    "missing",
)
BAD = ("failed", "less accurate", "slower")  # what makes ``compare`` and ``ab`` exit 1
THRESHOLD = 10.0  # % of the base median below which no change of speed counts (asv's 1.1x)
# % by which a backend's typical case (the median over its cases) must change to count: what
# one process's memory layout and placement does to one case cancels over many cases.
BACKEND_THRESHOLD = 2.0
# ``ab``: % by which one case must change to count. Two processes of the same code time one case
# up to 15 % apart here (memory placement, for the life of the process), however many rounds
# pair them; a change of a whole backend is judged over its cases, past BACKEND_THRESHOLD.
AB_THRESHOLD = 25.0
# % beyond which a backend's speed-up within one run counts (its interval must clear it).
SPEEDUP_MARGIN = 5.0
MIN_BACKEND_CASES = 3  # a backend's change is judged over at least this many cases
ALPHA = 0.05
ERROR_FACTOR = 2.0
_MEASURED = ("ok", "inaccurate")
_IGNORED_ENV = ("time",)  # differs between any two runs


def record_speedup(r: Record) -> Ratio | None:
    """The paired speed-up a record carries over its run's baseline backend, if any."""
    if r.speedup is None or r.speedup_lo is None or r.speedup_hi is None:
        return None
    return Ratio(r.speedup, r.speedup_lo, r.speedup_hi, r.rounds)


def speedup_verdict(ratio: Ratio | None, margin: float = SPEEDUP_MARGIN) -> str:
    """A backend's paired speed-up over the baseline: ``faster`` or ``slower`` when its 95 %
    interval lies wholly beyond ``margin`` % either side of 1, else ``not significant`` (``-``
    when there is none). The margin is what the process alone does: the same backend against
    the same baseline, in five runs of one selection, gave speed-ups from 0.94x to 1.07x, each
    with an interval of ±3 % — the rounds cancel the machine's drift, not where each run's
    memory landed."""
    if ratio is None:
        return "-"
    edge = 1 + margin / 100
    if ratio.lo > edge:
        return "faster"
    if ratio.hi < 1 / edge:
        return "slower"
    return "not significant"


@dataclass(frozen=True)
class Change:
    key: tuple[str, str, str, str]
    name: str
    verdict: str
    base: Record | None
    new: Record | None
    ratio: float | None = None  # new median / base median (paired: median of per-round ratios)
    p_value: float | None = None  # Holm-adjusted over the cases compared
    error_ratio: float | None = None  # new error / base error
    note: str = ""
    ratio_ci: tuple[float, float] | None = None  # paired only: 95 % interval of ``ratio``


@dataclass(frozen=True)
class BackendChange:
    """One backend's change over all its cases on one device and dtype: the median of its
    cases' ratios (new / base), its 95 % interval, and the Holm-corrected p of the Wilcoxon
    signed-rank test over the cases."""

    backend: str
    device: str
    dtype: str
    verdict: str  # "slower", "faster" or "unchanged"
    ratio: Ratio
    p_value: float | None

    @property
    def label(self) -> str:
        return f"{self.backend} {self.device} {self.dtype}"


@dataclass
class Comparison:
    changes: list[Change]
    environment: list[tuple[str, Any, Any]]
    threshold: float
    alpha: float
    error_factor: float
    paired: bool = False
    backends: list[BackendChange] = field(default_factory=list)
    backend_threshold: float = BACKEND_THRESHOLD

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(ch.verdict for ch in self.changes)
        return {v: c[v] for v in VERDICTS if c[v]}

    @property
    def worse(self) -> list[Change]:
        return [ch for ch in self.changes if ch.verdict in BAD]

    @property
    def worse_backends(self) -> list[BackendChange]:
        return [b for b in self.backends if b.verdict == "slower"]

    @property
    def bad(self) -> bool:
        """What makes ``compare`` and ``ab`` exit 1: a case or a backend got worse."""
        return bool(self.worse or self.worse_backends)

    @property
    def test(self) -> str:
        """The test behind the speed verdicts, as a person reads it."""
        if self.paired:
            return "Wilcoxon signed-rank on the per-round ratios, Holm-corrected"
        return "Mann-Whitney U on the samples, Holm-corrected"


def _flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def environment_diff(base: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """The environment fields that differ: (field, base value, new value)."""
    a, b = _flatten(base), _flatten(new)
    return [
        (k, a.get(k), b.get(k))
        for k in sorted(set(a) | set(b))
        if k not in _IGNORED_ENV and a.get(k) != b.get(k)
    ]


def _error_verdict(base: Record, new: Record, factor: float) -> tuple[str | None, float | None]:
    if base.status == "ok" and new.status == "inaccurate":
        return "less accurate", None
    if base.status == "inaccurate" and new.status == "ok":
        return "more accurate", None
    if base.rel_l2_error is None or new.rel_l2_error is None:
        return None, None
    # Errors under a thousandth of the tolerance are rounding: 0 against 1e-18 (float64 torch
    # takes the reference's own path) is no change.
    tolerance = new.tolerance or base.tolerance or 0.0
    floor = tolerance * 1e-3
    a, b = max(base.rel_l2_error, floor), max(new.rel_l2_error, floor)
    ratio = b / a if a > 0 else (1.0 if b == 0 else math.inf)
    if ratio > factor:
        return "less accurate", ratio
    if ratio < 1 / factor:
        return "more accurate", ratio
    return None, ratio


@dataclass(frozen=True)
class _Speed:
    """A speed comparison before the correction: its raw p (None: not testable)."""

    ratio: float | None
    p: float | None
    ci: tuple[float, float] | None = None
    note: str = ""


def choice_note(base: Record, new: Record) -> str:
    """How the two sides' ``prepare`` chose to compute the case, where they differ ("" if
    not): a backend that times candidates may pick another way on either side of a near tie,
    and a change in speed is then the choice's, not the code's."""
    a = {"algorithm": base.algorithm, **base.algorithm_params}
    b = {"algorithm": new.algorithm, **new.algorithm_params}
    a.pop("tuned_ms", None)
    b.pop("tuned_ms", None)
    moved = [f"{k} {x} -> {y}" for k, x, y in environment_diff(a, b)]
    return "prepare chose differently: " + "; ".join(moved) if moved else ""


def _speed(base: Record, new: Record, alpha: float, paired: bool) -> _Speed:
    if not (base.median_s and new.median_s):
        return _Speed(None, None, note="no timing")
    a, b = base.samples_s, new.samples_s
    if paired:
        if len(a) != len(b) or not a:
            return _Speed(None, None, note=f"{len(a)} and {len(b)} rounds do not pair")
        r = paired_ratio(b, a)
        if min_wilcoxon_p(len(a)) >= alpha:
            return _Speed(
                r.value, None, (r.lo, r.hi), f"{len(a)} rounds cannot reach p < {alpha:g}"
            )
        return _Speed(r.value, wilcoxon_p(b, a), (r.lo, r.hi))
    ratio = new.median_s / base.median_s
    # With 3 and 3 samples (a --quick run) the smallest p is 0.1: nothing could be significant.
    if min_mann_whitney_p(len(a), len(b)) >= alpha:
        return _Speed(ratio, None, note=f"{len(a)} and {len(b)} samples cannot reach p < {alpha:g}")
    return _Speed(ratio, mann_whitney_p(a, b))


def _judge(
    base: Record, new: Record, speed: _Speed, p: float | None, threshold: float, factor: float,
    alpha: float,
) -> Change:  # fmt: skip
    key, name = new.key, new.name or new.spec
    if new.status == "failed" and base.status != "failed":
        return Change(key, name, "failed", base, new, note=new.reason)
    if base.status not in _MEASURED and new.status in _MEASURED:
        return Change(key, name, "new", base, new, note=f"was {base.status}")
    if base.status in _MEASURED and new.status not in _MEASURED:
        return Change(key, name, "missing", base, new, note=f"now {new.status}: {new.reason}")
    accuracy, error_ratio = _error_verdict(base, new, factor)
    ratio = speed.ratio
    over = ratio is not None and abs(ratio - 1) * 100 > threshold
    verdict_speed = None
    if over and speed.p is None and speed.note != "no timing":
        verdict_speed = "untested"
    elif over and p is not None and p < alpha:
        verdict_speed = "slower" if ratio > 1 else "faster"  # type: ignore[operator]
    # The worse of the two is what the case is listed under; both figures are kept.
    for verdict in ("less accurate", "slower", "untested", "faster", "more accurate"):
        if verdict in (accuracy, verdict_speed):
            break
    else:
        verdict = "unchanged"
    note = "; ".join(filter(None, [speed.note, choice_note(base, new)]))
    return Change(key, name, verdict, base, new, ratio, p, error_ratio, note, speed.ci)


def compare(
    base: list[Record],
    new: list[Record],
    base_env: dict[str, Any] | None = None,
    new_env: dict[str, Any] | None = None,
    *,
    threshold: float = THRESHOLD,
    alpha: float = ALPHA,
    error_factor: float = ERROR_FACTOR,
    paired: bool = False,
    backend_threshold: float = BACKEND_THRESHOLD,
) -> Comparison:
    """Every case of either side, classified; ``threshold`` is a percentage of the base median.

    ``paired``: the samples of a case were taken in alternating rounds (``ab``), sample ``i``
    of one side beside sample ``i`` of the other.
    """
    was, now = {r.cache for r in base}, {r.cache for r in new}
    if was and now and was != now:
        raise ValueError(
            f"the runs were timed with different caches (base {'/'.join(sorted(was))}, new "
            f"{'/'.join(sorted(now))}): a cold call is slower by design, not a regression"
        )
    # Runs that span several machines are matched machine by machine: a time from one host is
    # never set against another's. (One run on each of two machines is the user's own question.)
    hosts = max(len({r.host for r in base}), len({r.host for r in new}))
    match: Callable[[Record], tuple[str, ...]] = (
        (lambda r: (*r.key, r.host)) if hosts > 1 else (lambda r: r.key)
    )
    old = {match(r): r for r in base}
    now = {match(r): r for r in new}
    both = [(old[k], r) for k, r in now.items() if k in old]
    speeds = [_speed(b, n, alpha, paired) for b, n in both]
    tested = [i for i, s in enumerate(speeds) if s.p is not None]
    adjusted: list[float | None] = [None] * len(both)
    for i, p in zip(tested, holm([speeds[i].p for i in tested]), strict=True):  # type: ignore[misc]
        adjusted[i] = p
    changes = [
        _judge(b, n, s, p, threshold, error_factor, alpha)
        for (b, n), s, p in zip(both, speeds, adjusted, strict=True)
    ]
    changes += [Change(k, r.name or r.spec, "new", None, r) for k, r in now.items() if k not in old]
    changes += [
        Change(k, r.name or r.spec, "missing", r, None) for k, r in old.items() if k not in now
    ]
    changes.sort(key=lambda ch: VERDICTS.index(ch.verdict))
    return Comparison(
        changes,
        environment_diff(base_env or {}, new_env or {}),
        threshold,
        alpha,
        error_factor,
        paired,
        backend_changes(changes, backend_threshold, alpha),
        backend_threshold,
    )


def backend_changes(
    changes: list[Change], threshold: float = BACKEND_THRESHOLD, alpha: float = ALPHA
) -> list[BackendChange]:
    """Each backend's change over its timed cases (per device and dtype).

    A case's ratio carries, beside the change itself, what its process did to it — memory
    layout, the core it ran on — which rounds inside one process cannot cancel: two processes
    of the same code differ by a few percent on one case. Across a backend's cases these
    effects are independent and cancel, while a real slowdown of the backend moves them all;
    so the cases are the pairs of a Wilcoxon signed-rank test (Holm-corrected over the
    backends), and the median of their ratios must change by more than ``threshold`` %.
    """
    groups: dict[tuple[str, str, str], list[Change]] = {}
    for ch in changes:
        if ch.ratio is not None and ch.base is not None and ch.new is not None:
            groups.setdefault(ch.key[1:], []).append(ch)
    judged = [(k, v) for k, v in groups.items() if len(v) >= MIN_BACKEND_CASES]
    ratios = [paired_ratio([ch.ratio for ch in v], [1.0] * len(v)) for _, v in judged]  # type: ignore[misc]
    raw = [
        wilcoxon_p([ch.ratio for ch in v], [1.0] * len(v))  # type: ignore[misc]
        if min_wilcoxon_p(len(v)) < alpha
        else None
        for _, v in judged
    ]
    tested = [i for i, p in enumerate(raw) if p is not None]
    adjusted: list[float | None] = [None] * len(judged)
    for i, p in zip(tested, holm([raw[i] for i in tested]), strict=True):  # type: ignore[misc]
        adjusted[i] = p
    out = []
    for ((backend, device, dtype), _), r, p in zip(judged, ratios, adjusted, strict=True):
        verdict = "unchanged"
        if p is not None and p < alpha and abs(r.value - 1) * 100 > threshold:
            verdict = "slower" if r.value > 1 else "faster"
        out.append(BackendChange(backend, device, dtype, verdict, r, p))
    return out


COUNT_MARGIN = 2.0  # % more instructions than the baseline that the instruction gate fails on


@dataclass(frozen=True)
class CountChange:
    """One case's instructions per call now against the baseline's."""

    key: str
    verdict: str  # "slower", "faster", "unchanged", "new" or "missing"
    now: float | None
    base: float | None

    @property
    def change_pct(self) -> float | None:
        """How many percent more instructions than the baseline (negative: fewer)."""
        if self.now is None or not self.base:
            return None
        return (self.now / self.base - 1) * 100


def count_changes(
    now: dict[str, float], base: dict[str, float], margin: float = COUNT_MARGIN
) -> list[CountChange]:
    """Instruction counts against a baseline, case by case, worst first.

    Counts do not drift (two counts of a case agree to hundredths of a percent), so no test is
    needed: more than ``margin`` % more instructions is ``slower``, more than ``margin`` %
    fewer is ``faster``; a case on one side only is ``new`` or ``missing``.
    """
    changes = []
    for key in sorted(set(now) | set(base)):
        n, b = now.get(key), base.get(key)
        if n is None:
            verdict = "missing"
        elif b is None:
            verdict = "new"
        elif n > b * (1 + margin / 100):
            verdict = "slower"
        elif n < b * (1 - margin / 100):
            verdict = "faster"
        else:
            verdict = "unchanged"
        changes.append(CountChange(key, verdict, n, b))
    changes.sort(key=lambda ch: VERDICTS.index(ch.verdict))
    return changes


# The pytest-benchmark gate: each benchmark's time over its case's yardstick (``gate.ratios``),
# now against the committed baseline. Between two runs on a shared machine one benchmark's
# ratio moves by up to 1.5x; a whole backend's geometric mean by far less.
GATE_THRESHOLD = 1.8
GATE_BACKEND_THRESHOLD = 1.25


@dataclass(frozen=True)
class RatioVerdict:
    """One benchmark's ratio to its yardstick, now and in the baseline."""

    key: str
    backend: str
    now: float | None
    base: float | None
    status: str  # "slower", "faster", "unchanged", "new", "missing"

    @property
    def change(self) -> float | None:
        """How many times slower than in the baseline (relative to the yardstick)."""
        if self.now is None or self.base is None:
            return None
        return self.now / self.base


@dataclass(frozen=True)
class Judgement:
    verdicts: list[RatioVerdict]
    backend_change: dict[str, float]  # geometric mean of each backend's changes
    threshold: float
    backend_threshold: float

    @property
    def slower_backends(self) -> list[str]:
        return [b for b, c in self.backend_change.items() if c > self.backend_threshold]

    def having(self, status: str) -> list[RatioVerdict]:
        return [v for v in self.verdicts if v.status == status]

    @property
    def passed(self) -> bool:
        return not (self.having("slower") or self.having("missing") or self.slower_backends)


def judge_ratios(
    now: dict[str, float],
    base: dict[str, float],
    threshold: float = GATE_THRESHOLD,
    backend_threshold: float = GATE_BACKEND_THRESHOLD,
) -> Judgement:
    """Each benchmark against the baseline: ``slower`` past ``threshold`` times its baseline
    ratio, ``faster`` below its inverse, ``new`` or ``missing`` when only one side has it;
    and each backend's geometric-mean change over the cases both sides have."""
    verdicts: list[RatioVerdict] = []
    logs: dict[str, list[float]] = defaultdict(list)
    for key in sorted(set(now) | set(base)):
        backend = key.rsplit(" | ", 1)[1]  # keys of gate.ratios: "case | device | dtype | backend"
        r_now, r_base = now.get(key), base.get(key)
        if r_now is None:
            status = "missing"
        elif r_base is None:
            status = "new"
        else:
            change = r_now / r_base
            logs[backend].append(math.log(change))
            if change > threshold:
                status = "slower"
            elif change < 1 / threshold:
                status = "faster"
            else:
                status = "unchanged"
        verdicts.append(RatioVerdict(key, backend, r_now, r_base, status))
    means = {b: math.exp(statistics.fmean(v)) for b, v in sorted(logs.items())}
    return Judgement(verdicts, means, threshold, backend_threshold)
