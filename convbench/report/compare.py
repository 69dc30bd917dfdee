"""The pages and tables of a comparison: what ``convbench.verdicts`` decided, rendered.

Used by ``convbench compare`` (two runs) and ``convbench ab`` (two versions timed in
alternating rounds); neither the verdicts nor their statistics are made here.
"""

from __future__ import annotations

from convbench.report.page import Cell, Column, Page, esc, fmt_num, hline, plot_text
from convbench.report.summary import format_seconds
from convbench.verdicts import Change, Comparison

__all__ = ["CHANGE_COLUMNS", "change_cells", "render_comparison"]


def _interval(ch: Change) -> str:
    """`` [-1.2, +3.4]``: the 95 % interval of a paired change, in %."""
    if ch.ratio_ci is None:
        return ""
    lo, hi = (100 * (r - 1) for r in ch.ratio_ci)
    return f" [{lo:+.1f}, {hi:+.1f}]"


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
        Cell(ch.note, cls="reason"),
    ]


CHANGE_COLUMNS = [
    Column("case"), Column("backend", filter=True), Column("device", filter=True),
    Column("dtype", filter=True), Column("base median", numeric=True),
    Column("new median", numeric=True), Column("change", numeric=True),
    Column("p", numeric=True, title="Holm-corrected p of the speed test (paired: Wilcoxon "
           "signed-rank on the per-round ratios; else Mann-Whitney U on the samples)"),
    Column("rel. error base -> new", numeric=True), Column("verdict", filter=True),
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
    page.section(
        "Every case",
        Page.table("changes", CHANGE_COLUMNS, [change_cells(ch) for ch in c.changes]),
    )
    return page.render(f"base {base_name}, new {new_name}")
