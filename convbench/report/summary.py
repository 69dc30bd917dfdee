"""The per-case summary printed at the end of a run."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

from convbench.results import Record

__all__ = ["CaseSummary", "format_seconds", "status_counts", "summarize_cases"]


@dataclass(frozen=True)
class CaseSummary:
    """One problem on one device and dtype: who won, by how much, and the worst error."""

    spec: str
    name: str
    device: str
    dtype: str
    fastest: str | None
    median_s: float | None
    speedup_vs_torch: float | None
    worst_error: float | None
    worst_error_backend: str | None
    statuses: dict[str, int]
    peak_bytes: int | None = None  # the fastest backend's
    least_bytes: int | None = None  # the smallest peak among correct results
    least_bytes_backend: str | None = None

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


def summarize_cases(records: list[Record], reference_backend: str = "torch") -> list[CaseSummary]:
    """Group records by (spec, device, dtype), in the order they were first seen.

    The fastest backend is chosen among correct (``ok``) results only: an inaccurate answer is
    not a win. The speed-up is the reference backend's median over the fastest one's.
    """
    groups: dict[tuple[str, str, str], list[Record]] = {}
    for r in records:
        groups.setdefault((r.spec, r.device, r.dtype), []).append(r)
    out = []
    for (spec, device, dtype), rs in groups.items():
        timed = [r for r in rs if r.status == "ok" and r.median_s]
        fastest = min(timed, key=lambda r: r.median_s) if timed else None  # type: ignore[arg-type,return-value]
        ref = next(
            (r for r in rs if r.backend == reference_backend and r.status == "ok" and r.median_s),
            None,
        )
        errs = [r for r in rs if r.rel_l2_error is not None]
        worst = max(errs, key=lambda r: r.rel_l2_error) if errs else None  # type: ignore[arg-type,return-value]
        sized = [r for r in rs if r.status == "ok" and r.peak_bytes is not None]
        least = min(sized, key=lambda r: r.peak_bytes) if sized else None  # type: ignore[arg-type,return-value]
        out.append(
            CaseSummary(
                spec=spec,
                name=rs[0].name,
                device=device,
                dtype=dtype,
                fastest=fastest.backend if fastest else None,
                median_s=fastest.median_s if fastest else None,
                speedup_vs_torch=(
                    ref.median_s / fastest.median_s  # type: ignore[operator]
                    if fastest and ref
                    else None
                ),
                worst_error=worst.rel_l2_error if worst else None,
                worst_error_backend=worst.backend if worst else None,
                statuses=dict(Counter(r.status for r in rs)),
                peak_bytes=fastest.peak_bytes if fastest else None,
                least_bytes=least.peak_bytes if least else None,
                least_bytes_backend=least.backend if least else None,
            )
        )
    return out


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
