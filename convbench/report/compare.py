"""The pages and tables of a comparison: what ``convbench.verdicts`` decided, rendered.

Used by ``convbench compare`` (two runs) and ``convbench ab`` (two versions timed in
alternating rounds); neither the verdicts nor their statistics are made here.
"""

from __future__ import annotations

from convbench.report.page import Cell, Column, Page, esc, fmt_num, hline, plot_text
from convbench.report.summary import format_seconds, ratio_text
from convbench.verdicts import BackendChange, Change, Comparison, record_speedup

__all__ = ["CHANGE_COLUMNS", "backend_change_text", "change_cells", "render_comparison"]


def backend_change_text(b: BackendChange) -> str:
    """``+5.1 % [+4.2, +6.0]``: a backend's median change over its cases, with its interval."""
    r = b.ratio
    return f"{100 * (r.value - 1):+.1f} % [{100 * (r.lo - 1):+.1f}, {100 * (r.hi - 1):+.1f}]"


def _interval(ch: Change) -> str:
    """`` [-1.2, +3.4]``: the 95 % interval of a paired change, in %."""
    if ch.ratio_ci is None:
        return ""
    lo, hi = (100 * (r - 1) for r in ch.ratio_ci)
    return f" [{lo:+.1f}, {hi:+.1f}]"


def _instructions(ch: Change) -> Cell:
    """Instructions per call, base -> new, where both sides were counted (``ab --instructions``,
    or two runs with ``--instructions``): a figure that does not move with the machine."""
    a = ch.base.instructions if ch.base else None
    b = ch.new.instructions if ch.new else None
    if not a or b is None:
        return Cell("-", cls="num")
    pct = 100 * (b / a - 1)
    return Cell(f"{a:,.0f} -> {b:,.0f} ({pct:+.1f} %)", pct, cls="num")


def _speedups(ch: Change) -> Cell:
    """The case's paired speed-up over its run's baseline backend in each run (``compare`` of
    two runs): the within-run verdict, beside the between-run change."""
    a = record_speedup(ch.base) if ch.base else None
    b = record_speedup(ch.new) if ch.new else None
    if a is None and b is None:
        return Cell("-", cls="num")
    text = " -> ".join(ratio_text(r) if r else "-" for r in (a, b))
    return Cell(text, b.value if b else None, cls="num")


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
        Cell(fmt_num(pct, "+.1f", " %") + _interval(ch), pct, cls="num"),
        Cell(fmt_num(ch.p_value, ".2g"), ch.p_value, cls="num"),
        Cell(errors, ch.error_ratio, cls="num"),
        Cell(ch.verdict, cls=ch.verdict.replace(" ", "-")),
        _instructions(ch),
        _speedups(ch),
        Cell(ch.note, cls="reason"),
    ]


CHANGE_COLUMNS = [
    Column("case"), Column("backend", filter=True), Column("device", filter=True),
    Column("dtype", filter=True), Column("base median", numeric=True),
    Column("new median", numeric=True), Column("change", numeric=True),
    Column("p", numeric=True, title="Holm-corrected p of the speed test (paired: Wilcoxon "
           "signed-rank on the per-round ratios; else Mann-Whitney U on the samples)"),
    Column("rel. error base -> new", numeric=True), Column("verdict", filter=True),
    Column("instructions base -> new", numeric=True, title="instructions per call counted "
           "under callgrind (one thread), where both sides have them"),
    Column("vs baseline base -> new", numeric=True, title="the paired speed-up over the run's "
           "baseline backend, in each run, with its 95 % interval; n.s.: it contains 1"),
    Column("note"),
]  # fmt: skip


def render_comparison(c: Comparison, base_name: str, new_name: str) -> str:
    page = Page("convbench compare")
    if c.environment:
        rows = "".join(
            f"<tr><th>{esc(k)}</th><td>{esc(a)}</td><td>{esc(b)}</td></tr>"
            for k, a, b in c.environment
        )
        env = (
            f'<table class="kv"><tr><th></th><th>{esc(base_name)}</th>'
            f"<th>{esc(new_name)}</th></tr>{rows}</table>"
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
        f"A change of speed counts when it exceeds {c.threshold:g} % and is significant "
        f"({c.test}, p < {c.alpha:g}); of accuracy, when a result crosses "
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
    if c.backends:
        columns = [
            Column("backend", filter=True), Column("cases", numeric=True),
            Column("median change", numeric=True, title="median over the cases of new / base, "
                   "with its 95 % interval"),
            Column("p", numeric=True, title="Wilcoxon signed-rank over the cases, Holm-corrected "
                   "over the backends"),
            Column("verdict", filter=True),
        ]  # fmt: skip
        rows = [
            [Cell(b.label), Cell(str(b.ratio.n), b.ratio.n, cls="num"),
             Cell(backend_change_text(b), b.ratio.value, cls="num"),
             Cell(fmt_num(b.p_value, ".2g"), b.p_value, cls="num"),
             Cell(b.verdict, cls=b.verdict)]
            for b in c.backends
        ]  # fmt: skip
        page.section(
            "Backends over their cases",
            Page.table("backends", columns, rows),
            f"A backend counts as slower or faster when the median of its cases' changes exceeds "
            f"{c.backend_threshold:g} % and the cases move together (Wilcoxon signed-rank, "
            f"Holm-corrected over the backends, p < {c.alpha:g}): what one process does to one "
            "case cancels over many, a real change of the backend does not.",
        )
    page.section(
        "Every case",
        Page.table("changes", CHANGE_COLUMNS, [change_cells(ch) for ch in c.changes]),
    )
    return page.render(f"base {base_name}, new {new_name}")
