"""The per-case summary printed at the end of a run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from convbench.measure.stats import Ratio
from convbench.results import Record
from convbench.verdicts import record_speedup, speedup_verdict

__all__ = [
    "CaseSummary",
    "format_seconds",
    "ratio_text",
    "speedup_of",
    "status_counts",
    "summarize_cases",
]


@dataclass(frozen=True)
class CaseSummary:
    """One problem on one device and dtype of one machine: who won, by how much, and the worst
    error."""

    spec: str
    name: str
    device: str
    dtype: str
    fastest: str | None
    median_s: float | None
    speedup: Ratio | None  # the baseline's time over the fastest's, paired within the run
    baseline: str
    tied_with: str | None  # a backend the fastest is not significantly faster than
    worst_error: float | None
    worst_error_backend: str | None
    statuses: dict[str, int]
    peak_bytes: int | None = None  # the fastest backend's
    least_bytes: int | None = None  # the smallest peak among correct results
    least_bytes_backend: str | None = None
    host: str = ""  # the machine its records name

    @property
    def problem(self) -> tuple[str, str, str, str]:
        return (self.spec, self.device, self.dtype, self.host)

    def where(self, hosts: int) -> str:
        """The device, and the machine where a run spans ``hosts`` > 1 of them."""
        return f"{self.device} @ {self.host}" if hosts > 1 else self.device

    @property
    def verdict(self) -> str:
        """``faster``/``slower`` than the baseline, ``not significant``, or ``-``."""
        return speedup_verdict(self.speedup)

    @property
    def winner_text(self) -> str:
        """``im2col``, or ``im2col ≈ torch`` when the lead is within the noise."""
        if self.fastest is None:
            return "-"
        return f"{self.fastest} ≈ {self.tied_with}" if self.tied_with else self.fastest

    @property
    def speedup_text(self) -> str:
        """``1.32x [1.28-1.36]``, ``1.02x n.s. [0.97-1.06]``, or ``1.50x`` without rounds."""
        if self.speedup is None:
            return "(baseline)" if self.fastest == self.baseline else "-"
        return ratio_text(self.speedup)

    @property
    def least_bytes_text(self) -> str:
        """``785 KiB (im2col)``: the least memory and whose it is."""
        if self.least_bytes is None:
            return "-"
        return f"{format_bytes(self.least_bytes)} ({self.least_bytes_backend})"

    @property
    def worst_error_text(self) -> str:
        """``3.6e-06 (winograd-f6)``: the worst error and whose it is."""
        if self.worst_error is None:
            return "-"
        return f"{self.worst_error:.1e} ({self.worst_error_backend})"


def speedup_of(r: Record, ref: Record | None) -> Ratio | None:
    """``r``'s paired speed-up over the baseline, or the ratio of medians (``n == 0``: no
    interval) for records timed before rounds were paired."""
    paired = record_speedup(r)
    if paired is not None:
        return paired
    if ref is None or not r.median_s or not ref.median_s:
        return None
    ratio = ref.median_s / r.median_s
    return Ratio(ratio, ratio, ratio, 0)


def _tie(fastest: Record, timed: list[Record], baseline: str) -> str | None:
    """The backend the fastest is statistically tied with: the baseline when the fastest's
    speed-up interval contains 1, or, when the baseline is fastest, a runner-up whose own
    interval contains 1."""
    if fastest.backend != baseline:
        r = record_speedup(fastest)
        return baseline if r is not None and speedup_verdict(r) == "not significant" else None
    for other in sorted(timed, key=lambda r: r.median_s or 0.0):
        r = record_speedup(other)
        if other is not fastest and r is not None and speedup_verdict(r) == "not significant":
            return other.backend
    return None


def summarize_cases(records: list[Record], reference_backend: str = "torch") -> list[CaseSummary]:
    """Group records by (spec, device, dtype), in the order they were first seen.

    The fastest backend is chosen among correct (``ok``) results only: an inaccurate answer is
    not a win. The speed-up is the baseline backend's time over the fastest one's: the paired
    ratio with its interval that the run's rounds measured (the baseline is what the records
    name, ``reference_backend`` for records without one). A lead whose interval contains 1 is
    a tie, not a win.
    """
    groups: dict[tuple[str, str, str, str], list[Record]] = {}
    for r in records:
        groups.setdefault(r.problem, []).append(r)
    out = []
    for (spec, device, dtype, host), rs in groups.items():
        baseline = next((r.baseline for r in rs if r.baseline), reference_backend)
        timed = [r for r in rs if r.status == "ok" and r.median_s]
        fastest = min(timed, key=lambda r: r.median_s) if timed else None  # type: ignore[arg-type,return-value]
        ref = next((r for r in timed if r.backend == baseline), None)
        errs = [r for r in rs if r.rel_l2_error is not None]
        worst = max(errs, key=lambda r: r.rel_l2_error) if errs else None  # type: ignore[arg-type,return-value]
        sized = [r for r in rs if r.status == "ok" and r.peak_bytes is not None]
        least = min(sized, key=lambda r: r.peak_bytes) if sized else None  # type: ignore[arg-type,return-value]
        speedup = None
        if fastest is not None and ref is not None:
            speedup = speedup_of(fastest, ref) if fastest is not ref else None
        out.append(
            CaseSummary(
                spec=spec,
                name=rs[0].name,
                device=device,
                dtype=dtype,
                host=host,
                fastest=fastest.backend if fastest else None,
                median_s=fastest.median_s if fastest else None,
                speedup=speedup,
                baseline=baseline,
                tied_with=_tie(fastest, timed, baseline) if fastest else None,
                worst_error=worst.rel_l2_error if worst else None,
                worst_error_backend=worst.backend if worst else None,
                statuses=dict(Counter(r.status for r in rs)),
                peak_bytes=fastest.peak_bytes if fastest else None,
                least_bytes=least.peak_bytes if least else None,
                least_bytes_backend=least.backend if least else None,
            )
        )
    return out


def ratio_text(r: Ratio) -> str:
    """A speed-up as a person reads it: ``1.32x [1.28-1.36]``, ``1.02x n.s. [0.97-1.06]``
    (its interval contains 1), or ``1.50x`` for a ratio measured without rounds."""
    if r.n == 0:
        return f"{r.value:.2f}x"
    ns = "" if speedup_verdict(r) != "not significant" else " n.s."
    return f"{r.value:.2f}x{ns} [{r.lo:.2f}-{r.hi:.2f}]"


def status_counts(records: list[Record]) -> dict[str, int]:
    return dict(Counter(r.status for r in records))


def format_bytes(n: int | None) -> str:
    """Bytes in binary units: ``512 B``, ``3.4 KiB``, ``120 MiB``."""
    if n is None:
        return "-"
    if abs(n) < 1024:
        return f"{n} B"
    value = n / 1024
    for unit in ("KiB", "MiB"):
        if abs(value) < 1024:
            return f"{value:.3g} {unit}"
        value /= 1024
    return f"{value:.3g} GiB"


def format_seconds(s: float | None) -> str:
    """A time with a unit a person reads at a glance: ``812 µs``, ``3.41 ms``, ``1.20 s``."""
    if s is None:
        return "-"
    if s < 1e-3:
        return f"{s * 1e6:.0f} µs"
    if s < 1:
        return f"{s * 1e3:.3g} ms"
    return f"{s:.3g} s"
