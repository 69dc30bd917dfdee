"""``convbench report``: the records of one or more runs as one HTML page a person can read.

What it answers, top to bottom: on what machine; how many cases and how they ended; which
backend won each case and by how much; how speed, accuracy, throughput and memory compare
across backends (charts); and every record, sortable and filterable, linked to its trace.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convbench.report.page import Cell, Column, Page, esc, fmt_num, hline, plot_text
from convbench.report.summary import (
    format_bytes,
    format_seconds,
    ratio_text,
    speedup_of,
    summarize_cases,
)
from convbench.results import Record, RunStore

__all__ = ["REPORT", "LoadedRun", "load", "render_report"]

REPORT = "report.html"
MIB = 2**20
# Plotly's default colours, one per backend in every chart.
PALETTE = [
    "#636efa", "#ef553b", "#00cc96", "#ab63fa", "#ffa15a", "#19d3f3", "#ff6692", "#b6e880",
    "#ff97ff", "#fecb52",
]  # fmt: skip


@dataclass
class LoadedRun:
    store: RunStore
    records: list[Record]
    environment: dict[str, Any]

    @property
    def run_id(self) -> str:
        return self.store.run_id


def load(store: RunStore, records: list[Record] | None = None) -> LoadedRun:
    """A run's records (read from its folder unless given) and its environment."""
    try:
        env = store.read_json(RunStore.ENVIRONMENT)
    except (OSError, ValueError):
        env = {}
    return LoadedRun(store, store.records() if records is None else records, env)


class _Labels:
    """Case labels that say just enough: the run only with several runs, the device and dtype
    only where they vary."""

    def __init__(self, runs: list[LoadedRun]) -> None:
        records = [r for run in runs for r in run.records]
        self.many_runs = len(runs) > 1
        self.many_kinds = len({(r.device, r.dtype) for r in records}) > 1
        specs: dict[str, set[str]] = {}
        for r in records:
            specs.setdefault(r.name, set()).add(r.spec)
        # A name that two problems share (one layer at two minibatches) gets its descriptor.
        self.shared = {name for name, s in specs.items() if name and len(s) > 1}

    def __call__(self, r: Record) -> str:
        label = r.name or r.spec
        if r.name in self.shared:
            label += " " + re.sub(r'_n".*"$', "", r.spec.split()[-1])
        if self.many_kinds:
            label += f" [{r.device} {r.dtype}]"
        return f"{r.run_id} {label}" if self.many_runs else label


def _peak(run: LoadedRun, device: str) -> float | None:
    value = (run.environment.get("gemm_gflops") or {}).get(device)
    return float(value) if value else None


def _environment(runs: list[LoadedRun]) -> str:
    def gpu(env: dict[str, Any]) -> str:
        g = env.get("gpu")
        if not g:
            return "none"
        return (
            f"{g.get('name')} x{g.get('count', 1)}, driver {g.get('driver')}, "
            f"CUDA {g.get('cuda')}, cuDNN {g.get('cudnn')}"
        )

    def build(env: dict[str, Any]) -> str:
        b = env.get("torch_build") or {}
        return ", ".join(f"{k} {v}" for k, v in sorted(b.items())) or "-"

    def peaks(env: dict[str, Any]) -> str:
        p, by = env.get("gemm_gflops") or {}, env.get("gemm_library") or {}
        return (
            ", ".join(
                f"{d} {v:g} GFLOP/s" + (f" ({by[d]})" if d in by else "")
                for d, v in sorted(p.items())
            )
            or "-"
        )

    fields = [
        ("CPU", lambda e: f"{e.get('cpu', '-')} ({e.get('cores', '-')} cores)"),
        ("threads", lambda e: e.get("threads", "-")),
        ("caches", lambda e: e["caches"]),
        ("GPU", gpu),
        ("measured GEMM peak (float32)", peaks),
        ("torch", lambda e: f"{e.get('torch', '-')} ({build(e)})"),
        ("NumPy", lambda e: f"{e.get('numpy', '-')} ({e.get('numpy_blas', '-')})"),
        ("SciPy", lambda e: e.get("scipy", "-")),
        ("Python", lambda e: e.get("python", "-")),
        ("OS", lambda e: e.get("os", "-")),
        ("host", lambda e: e.get("hostname", "-")),
        ("convbench", lambda e: f"{e.get('convbench', '-')} ({e.get('git_commit', '-')})"),
        ("started", lambda e: e.get("time", "-")),
    ]
    head = "<tr><th></th>" + "".join(f"<th>{esc(run.run_id)}</th>" for run in runs) + "</tr>"
    described = [_described(run) for run in runs]  # each run's records read once
    rows = "".join(
        f"<tr><th>{esc(name)}</th>"
        + "".join(f"<td>{esc(get(env))}</td>" for env in described)
        + "</tr>"
        for name, get in fields
    )
    return f'<table class="kv">{head}{rows}</table>'


def _described(run: LoadedRun) -> dict[str, Any]:
    """The run's environment, with how its calls were timed as its records say (``cache``)."""
    caches = "/".join(sorted({r.cache for r in run.records})) or "warm"
    return run.environment | {"caches": caches}


def _summary(runs: list[LoadedRun]) -> str:
    records = [r for run in runs for r in run.records]
    statuses = Counter(r.status for r in records)
    cards = [
        ("runs", len(runs)),
        ("problems", len({r.spec for r in records})),
        ("backends", len({r.backend for r in records})),
        ("records", len(records)),
        *((status, statuses.get(status, 0)) for status in ("ok", "inaccurate", "failed")),
        ("unsupported", statuses.get("unsupported", 0)),
        ("noisy timings", sum(r.noisy for r in records)),
    ]
    return (
        '<div class="cards">'
        + "".join(f'<div class="card"><b>{esc(n)}</b>{esc(label)}</div>' for label, n in cards)
        + "</div>"
    )


def _winners(runs: list[LoadedRun], label: _Labels) -> str:
    columns = [
        Column("case"), Column("device", filter=True), Column("dtype", filter=True),
        Column("winner", filter=True), Column("median", numeric=True),
        Column("vs baseline", numeric=True, title="the baseline's time over the winner's: the "
               "median of the per-round ratios and its 95 % interval; n.s.: it contains 1"),
        Column("winner's peak memory", numeric=True),
        Column("least memory (backend)", numeric=True),
        Column("worst error (backend)", numeric=True), Column("statuses"),
    ]  # fmt: skip
    rows = []
    for run in runs:
        by_key = {r.problem: r for r in run.records}
        hosts = len({r.host for r in run.records})
        for s in summarize_cases(run.records):
            first = by_key[s.problem]
            rows.append(
                [
                    Cell(label(first)), Cell(s.where(hosts)), Cell(s.dtype), Cell(s.winner_text),
                    Cell(format_seconds(s.median_s), s.median_s, cls="num"),
                    Cell(s.speedup_text, s.speedup.value if s.speedup else None, cls="num"),
                    Cell(format_bytes(s.peak_bytes), s.peak_bytes, cls="num"),
                    Cell(s.least_bytes_text, s.least_bytes, cls="num"),
                    Cell(s.worst_error_text, s.worst_error, cls="num"),
                    Cell(" ".join(f"{n} {k}" for k, n in sorted(s.statuses.items()))),
                ]
            )  # fmt: skip
    return Page.table("winners", columns, rows)


def _href(out: Path, run: LoadedRun, trace: str) -> str:
    target = run.store.path / trace
    rel = os.path.relpath(target.resolve(), out.parent.resolve())
    return urllib.parse.quote(Path(rel).as_posix())


def _baselines(run: LoadedRun) -> dict[tuple[str, str, str, str], Record]:
    """Each problem's timed baseline record (the one the run named, torch in older runs)."""
    return {
        r.problem: r
        for r in run.records
        if r.status == "ok" and r.median_s and r.backend == (r.baseline or "torch")
    }


def _records(runs: list[LoadedRun], label: _Labels, out: Path) -> str:
    many = len(runs) > 1
    columns = [
        *([Column("run", filter=True)] if many else []),
        Column("case"), Column("backend", filter=True), Column("device", filter=True),
        Column("dtype", filter=True), Column("median", numeric=True),
        Column("vs baseline", numeric=True, title="the baseline backend's time over this one's: "
               "median of the per-round ratios, 95 % interval; n.s.: it contains 1"),
        Column("IQR", numeric=True, title="interquartile range of the samples, % of the median"),
        Column("GFLOP/s", numeric=True, title="direct-equivalent FLOPs over the median"),
        Column("% of GEMM peak", numeric=True, title="GFLOP/s over the measured GEMM peak"),
        Column("peak memory", numeric=True), Column("prepare memory", numeric=True),
        Column("rel. error", numeric=True), Column("tolerance", numeric=True),
        Column("status", filter=True), Column("reason"), Column("trace"),
    ]  # fmt: skip
    rows, classes = [], []
    for run in runs:
        refs = _baselines(run)
        for r in run.records:
            ratio = speedup_of(r, refs.get(r.problem))
            peak = _peak(run, r.device)
            pct = 100 * r.gflops / peak if r.gflops and peak else None
            iqr = 100 * r.iqr_s / r.median_s if r.iqr_s is not None and r.median_s else None
            trace = (
                Cell("trace", href=_href(out, run, r.trace), title=r.trace) if r.trace else Cell("")
            )
            rows.append(
                [
                    *([Cell(run.run_id)] if many else []),
                    Cell(label(r).removeprefix(f"{run.run_id} ") if many else label(r),
                         title=r.spec),
                    Cell(r.backend), Cell(r.device), Cell(r.dtype),
                    Cell(format_seconds(r.median_s), r.median_s, cls="num"),
                    Cell(ratio_text(ratio) if ratio else "-", ratio.value if ratio else None,
                         cls="num"),
                    Cell(fmt_num(iqr, ".1f", " %") + (" noisy" if r.noisy else ""), iqr,
                         cls="num"),
                    Cell(fmt_num(r.gflops, ".1f"), r.gflops, cls="num"),
                    Cell(fmt_num(pct, ".0f", " %"), pct, cls="num"),
                    Cell(format_bytes(r.peak_bytes), r.peak_bytes, cls="num"),
                    Cell(format_bytes(r.prepare_bytes), r.prepare_bytes, cls="num"),
                    Cell(fmt_num(r.rel_l2_error, ".2e"), r.rel_l2_error, cls="num"),
                    Cell(fmt_num(r.tolerance, ".0e"), r.tolerance, cls="num"),
                    Cell(r.status, cls=f"status-{r.status}"),
                    Cell(r.reason, cls="reason"),
                    trace,
                ]
            )  # fmt: skip
            classes.append(f"row-{r.status}")
    return Page.table("records", columns, rows, row_classes=classes)


def _charts(page: Page, runs: list[LoadedRun], labels: _Labels) -> str:
    def label(r: Record) -> str:
        return plot_text(labels(r))

    records = [(run, r) for run in runs for r in run.records]
    backends = list(dict.fromkeys(r.backend for _, r in records))
    colour = {b: PALETTE[i % len(PALETTE)] for i, b in enumerate(backends)}
    cases = list(dict.fromkeys(label(r) for _, r in records))
    ok = [(run, r) for run, r in records if r.status == "ok" and r.median_s]
    refs = {run.run_id: _baselines(run) for run in runs}

    def layout(title: str, ytitle: str, log: bool = False, **extra: Any) -> dict[str, Any]:
        return {
            "title": {"text": title},
            "yaxis": {"title": {"text": ytitle}, "type": "log" if log else "linear"},
            "xaxis": {"automargin": True, "categoryorder": "array", "categoryarray": cases},
            "barmode": "group",
            "legend": {"orientation": "h", "y": -0.3},
            "margin": {"t": 50},
            **extra,
        }

    def bars(value: Any) -> list[dict[str, Any]]:
        """One bar series per backend; ``value`` gives a number, or a ``Ratio`` whose
        interval becomes the bar's error bar."""
        out = []
        for b in backends:
            points = [(label(r), value(run, r)) for run, r in ok if r.backend == b]
            points = [(x, y) for x, y in points if y]
            if not points:
                continue
            series = {
                "type": "bar",
                "name": plot_text(b),
                "x": [x for x, _ in points],
                "y": [getattr(y, "value", y) for _, y in points],
                "marker": {"color": colour[b]},
            }
            if all(getattr(y, "n", 0) for _, y in points):
                series["error_y"] = {
                    "type": "data", "symmetric": False,
                    "array": [y.hi - y.value for _, y in points],
                    "arrayminus": [y.value - y.lo for _, y in points],
                }  # fmt: skip
            out.append(series)
        return out

    speedup = bars(
        lambda run, r: (
            speedup_of(r, refs[run.run_id].get(r.problem))
            if r is not refs[run.run_id].get(r.problem)
            else None
        )
    )
    parts = [
        page.chart(
            "speedup",
            speedup,
            layout(
                "Speed-up over the baseline (above 1: faster; bars: 95 % interval of the "
                "paired per-round ratios)", "baseline time / time",
                log=True, shapes=[hline(1)],
            ),
        )
    ]  # fmt: skip

    errors = []
    for b in backends:
        mine = [r for _, r in records if r.backend == b and r.rel_l2_error is not None]
        if not mine:
            continue
        errors.append(
            {
                "type": "scatter", "mode": "markers", "name": plot_text(b),
                "x": [plot_text(b)] * len(mine), "y": [max(r.rel_l2_error, 1e-17) for r in mine],
                "text": [f"{label(r)}: {r.rel_l2_error:.2e} ({r.status})" for r in mine],
                "hoverinfo": "text",
                "marker": {"color": colour[b], "size": 8, "opacity": 0.7,
                           "line": {"width": [2 if r.status != "ok" else 0 for r in mine],
                                    "color": "#b3261e"}},
            }
        )  # fmt: skip
    tolerances = {
        (r.backend, r.tolerance) for _, r in records if r.tolerance and r.rel_l2_error is not None
    }
    if tolerances:
        errors.append(
            {
                "type": "scatter", "mode": "markers", "name": "tolerance",
                "x": [plot_text(b) for b, _ in sorted(tolerances)],
                "y": [t for _, t in sorted(tolerances)],
                "marker": {"symbol": "line-ew-open", "size": 36, "color": "#b3261e",
                           "line": {"width": 2}},
                "hovertemplate": "tolerance %{y:.0e}<extra></extra>",
            }
        )  # fmt: skip
    parts.append(
        page.chart(
            "errors",
            errors,
            {
                **layout("Relative L2 error against float64, and each backend's tolerance",
                         "relative L2 error", log=True),
                "xaxis": {"automargin": True},
            },
        )
    )  # fmt: skip

    peaks = []
    for run in runs:
        for device in sorted({r.device for r in run.records}):
            peak = _peak(run, device)
            if peak:
                name = plot_text(f"{run.run_id} {device}" if len(runs) > 1 else device)
                peaks.append((name, peak))
    shapes = [hline(p, "#b3261e", "dot") for _, p in peaks]
    notes = [
        {"xref": "paper", "x": 1, "y": p, "text": f"GEMM peak {name}: {p:g}", "showarrow": False,
         "xanchor": "right", "yanchor": "bottom", "font": {"color": "#b3261e"}}
        for name, p in peaks
    ]  # fmt: skip
    parts.append(
        page.chart(
            "gflops",
            bars(lambda run, r: r.gflops),
            layout(
                "Achieved GFLOP/s (direct-equivalent) against the measured float32 GEMM peak",
                "GFLOP/s", shapes=shapes, annotations=notes,
            ),
        )
    )  # fmt: skip
    parts.append(
        page.chart(
            "peak-memory",
            bars(lambda run, r: r.peak_bytes / MIB if r.peak_bytes else None),
            layout("Peak memory of one call", "MiB", log=True),
        )
    )
    parts.append(
        page.chart(
            "prepare-memory",
            bars(lambda run, r: r.prepare_bytes / MIB if r.prepare_bytes else None),
            layout("Memory kept by prepare (weight transforms, spectra)", "MiB", log=True),
        )
    )
    return '<div class="charts">' + "".join(parts) + "</div>"


def render_report(runs: list[LoadedRun], out: Path) -> str:
    """The page for ``runs``, with links relative to where it will be written (``out``)."""
    label = _Labels(runs)
    page = Page("convbench report")
    page.section("Environment", _environment(runs))
    page.section("Summary", _summary(runs))
    page.section(
        "Winner per case",
        _winners(runs, label),
        "The fastest correct (ok) backend of each problem, device and dtype.",
    )
    page.section(
        "Charts",
        _charts(page, runs, label),
        "Correct (ok) results only, but for the error chart, where results over their "
        "tolerance have a red ring. Hover for values; drag to zoom; double-click to reset.",
    )
    page.section(
        "Records",
        _records(runs, label, out),
        "Every case. Click a column to sort; type to filter. Times are per call.",
    )
    return page.render(", ".join(run.run_id for run in runs))
