"""``convbench compare``: what changed between two runs, and whether it is real.

Cases are matched by (spec, backend, device, dtype). A change of speed counts only when it is
both larger than the threshold and significant on the raw samples (two-sided Mann-Whitney U,
which assumes nothing of the samples' distribution: timing samples are skewed, with a long
tail of slow outliers). A change over the threshold between runs with too few samples for the
test to ever reach significance is ``untested``: shown, not counted. A change of accuracy
counts when a result crosses its tolerance or its error moves by more than a factor (errors
under a thousandth of the tolerance count as rounding); errors are deterministic for the same
seed, so no test is needed there.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Any

from scipy.stats import mannwhitneyu

from convbench.report.page import Cell, Column, Page, esc, fmt_num, hline, plot_text
from convbench.report.report import LoadedRun
from convbench.report.summary import format_seconds
from convbench.results import Record

__all__ = [
    "BAD",
    "CHANGE_COLUMNS",
    "VERDICTS",
    "Change",
    "Comparison",
    "change_cells",
    "compare",
    "environment_diff",
    "render_comparison",
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
BAD = ("failed", "less accurate", "slower")  # what makes ``compare`` exit 1
_MEASURED = ("ok", "inaccurate")
_IGNORED_ENV = ("time",)  # differs between any two runs


@dataclass(frozen=True)
class Change:
    key: tuple[str, str, str, str]
    name: str
    verdict: str
    base: Record | None
    new: Record | None
    ratio: float | None = None  # new median / base median
    p_value: float | None = None
    error_ratio: float | None = None  # new error / base error
    note: str = ""


@dataclass
class Comparison:
    changes: list[Change]
    environment: list[tuple[str, Any, Any]]
    threshold: float
    alpha: float
    error_factor: float

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(ch.verdict for ch in self.changes)
        return {v: c[v] for v in VERDICTS if c[v]}

    @property
    def worse(self) -> list[Change]:
        return [ch for ch in self.changes if ch.verdict in BAD]


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


def _speed_verdict(
    base: Record, new: Record, threshold: float, alpha: float
) -> tuple[str | None, float | None, float | None, str]:
    if not (base.median_s and new.median_s):
        return None, None, None, "no timing"
    ratio = new.median_s / base.median_s
    n, m = len(base.samples_s), len(new.samples_s)
    # The smallest two-sided p the test can give is 2 / C(n + m, n): with 3 and 3 samples
    # (a --quick run) it is 0.1, and no change could ever be significant.
    if n == 0 or m == 0 or 2 / math.comb(n + m, n) >= alpha:
        note = f"{n} and {m} samples cannot reach p < {alpha:g}"
        return ("untested" if abs(ratio - 1) * 100 > threshold else None), ratio, None, note
    p = float(mannwhitneyu(base.samples_s, new.samples_s, alternative="two-sided").pvalue)
    if abs(ratio - 1) * 100 <= threshold or not p < alpha:
        return None, ratio, p, ""
    return ("slower" if ratio > 1 else "faster"), ratio, p, ""


def _judge(base: Record, new: Record, threshold: float, alpha: float, factor: float) -> Change:
    key, name = new.key, new.name or new.spec
    if new.status == "failed" and base.status != "failed":
        return Change(key, name, "failed", base, new, note=new.reason)
    if base.status not in _MEASURED and new.status in _MEASURED:
        return Change(key, name, "new", base, new, note=f"was {base.status}")
    if base.status in _MEASURED and new.status not in _MEASURED:
        return Change(key, name, "missing", base, new, note=f"now {new.status}: {new.reason}")
    accuracy, error_ratio = _error_verdict(base, new, factor)
    speed, ratio, p, note = _speed_verdict(base, new, threshold, alpha)
    # The worse of the two is what the case is listed under; both figures are kept.
    for verdict in ("less accurate", "slower", "untested", "faster", "more accurate"):
        if verdict in (accuracy, speed):
            return Change(key, name, verdict, base, new, ratio, p, error_ratio, note)
    return Change(key, name, "unchanged", base, new, ratio, p, error_ratio, note)


def compare(
    base: LoadedRun,
    new: LoadedRun,
    *,
    threshold: float = 10.0,
    alpha: float = 0.05,
    error_factor: float = 2.0,
) -> Comparison:
    """Every case of either run, classified; ``threshold`` is a percentage of the base median."""
    old = {r.key: r for r in base.records}
    now = {r.key: r for r in new.records}
    changes = []
    for key, r in now.items():
        if key in old:
            changes.append(_judge(old[key], r, threshold, alpha, error_factor))
        else:
            changes.append(Change(key, r.name or r.spec, "new", None, r))
    for key, r in old.items():
        if key not in now:
            changes.append(Change(key, r.name or r.spec, "missing", r, None))
    changes.sort(key=lambda ch: VERDICTS.index(ch.verdict))
    return Comparison(
        changes,
        environment_diff(base.environment, new.environment),
        threshold,
        alpha,
        error_factor,
    )


def change_cells(ch: Change) -> list[Cell]:
    """One change as table cells: shared by the terminal table and the HTML page."""
    _, backend, device, dtype = ch.key
    b, n = ch.base, ch.new
    pct = 100 * (ch.ratio - 1) if ch.ratio is not None else None
    errors = (
        f"{fmt_num(b.rel_l2_error, '.1e')} -> {fmt_num(n.rel_l2_error, '.1e')}" if b and n else "-"
    )
    return [
        Cell(ch.name, title=ch.key[0]),
        Cell(backend),
        Cell(device),
        Cell(dtype),
        Cell(format_seconds(b.median_s) if b else "-", b.median_s if b else None, cls="num"),
        Cell(format_seconds(n.median_s) if n else "-", n.median_s if n else None, cls="num"),
        Cell(fmt_num(pct, "+.1f", " %"), pct, cls="num"),
        Cell(fmt_num(ch.p_value, ".2g"), ch.p_value, cls="num"),
        Cell(errors, ch.error_ratio, cls="num"),
        Cell(ch.verdict, cls=ch.verdict.replace(" ", "-")),
        Cell(ch.note, cls="reason"),
    ]


CHANGE_COLUMNS = [
    Column("case"), Column("backend", filter=True), Column("device", filter=True),
    Column("dtype", filter=True), Column("base median", numeric=True),
    Column("new median", numeric=True), Column("change", numeric=True),
    Column("p", numeric=True, title="two-sided Mann-Whitney U on the samples"),
    Column("rel. error base -> new", numeric=True), Column("verdict", filter=True),
    Column("note"),
]  # fmt: skip


def render_comparison(c: Comparison, base: LoadedRun, new: LoadedRun) -> str:
    page = Page("convbench compare")
    if c.environment:
        rows = "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(a)}</td><td>{esc(b)}</td></tr>"
            for k, a, b in c.environment
        )
        env = (
            f'<table class="kv"><tr><th></th><th>{esc(base.run_id)}</th>'
            f"<th>{esc(new.run_id)}</th></tr>{rows}</table>"
        )
    else:
        env = "<p>The same environment (but for the time).</p>"
    page.section("Environment differences", env)
    cards = "".join(
        f'<div class="card {esc(v.replace(" ", "-"))}"><b>{n}</b>{esc(v)}</div>'
        for v, n in c.counts.items()
    )
    page.section(
        "Verdicts",
        f'<div class="cards">{cards}</div>',
        f"A change of speed counts when it exceeds {c.threshold:g} % and the samples differ "
        f"significantly (Mann-Whitney U, p < {c.alpha:g}); of accuracy, when a result crosses "
        f"its tolerance or its error changes more than {c.error_factor:g}x.",
    )
    timed = [ch for ch in c.changes if ch.ratio is not None]
    colours = {"slower": "#b3261e", "faster": "#1b7a3a"}
    chart = page.chart(
        "change",
        [
            {
                "type": "bar",
                "name": "new / base",
                "x": [plot_text(f"{ch.name} | {' '.join(ch.key[1:])}") for ch in timed],
                "y": [ch.ratio for ch in timed],
                "marker": {"color": [colours.get(ch.verdict, "#8a93a6") for ch in timed]},
                "text": [ch.verdict for ch in timed],
            }
        ],
        {
            "title": {"text": "Median time, new over base (above 1: slower; red: counted slower)"},
            "yaxis": {"title": {"text": "new median / base median"}, "type": "log"},
            "xaxis": {"automargin": True},
            "margin": {"t": 50},
            "shapes": [hline(1)],
        },
    )
    page.section("Changes of speed", chart)
    page.section(
        "Every case",
        Page.table("changes", CHANGE_COLUMNS, [change_cells(ch) for ch in c.changes]),
    )
    return page.render(f"base {base.run_id}, new {new.run_id}")
