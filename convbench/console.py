"""What the commands share on the terminal: the console, a sweep's progress (a progress bar
on a terminal, one status line per case in a log), a run's summary table, and a comparison's
verdicts as ``compare`` and ``ab`` print them."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape as esc_rich
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from convbench import execution, verdicts
from convbench.execution import Terminated
from convbench.report.summary import (
    format_bytes,
    format_seconds,
    status_counts,
    summarize_cases,
)
from convbench.results import Record, RunStore
from convbench.sweep import Case

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Reporter",
    "console",
    "print_comparison",
    "print_stages",
    "print_summary",
    "run_sweep",
    "titled_table",
]

# The exit codes every command shares (bad input, 2, is the parser's).
EXIT_OK, EXIT_FAILED, EXIT_INTERRUPTED = 0, 1, 130


def console() -> Console:
    """The terminal's width on a terminal; wide enough for the summary's columns in a file."""
    return Console(width=None if sys.stdout.isatty() else 180)


def titled_table(title: str, columns: Sequence[str], right: Sequence[str] = ()) -> Table:
    """A table titled on its left, its ``right`` columns (figures) right-aligned."""
    out = Table(title=title, title_justify="left")
    for col in columns:
        out.add_column(col, justify="right" if col in right else "left")
    return out


class Reporter:
    """A progress bar on a terminal; one status line per case otherwise (logs, CI)."""

    def __init__(self) -> None:
        self.err = Console(stderr=True)
        self.live = self.err.is_terminal
        self.progress = (
            Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                console=self.err,
                transient=True,
            )
            if self.live
            else None
        )
        self.task = self.progress.add_task("convbench", total=None) if self.progress else None

    def plan(self, total: int) -> None:
        if self.progress:
            self.progress.update(self.task, total=total)  # type: ignore[arg-type]

    def __enter__(self) -> Reporter:
        if self.progress:
            self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.progress:
            self.progress.stop()

    def start(self, case: Case, i: int, n: int) -> None:
        if self.progress:
            self.progress.update(
                self.task, description=f"{case.backend} {case.spec.name or case.spec}"
            )  # type: ignore[arg-type]

    def record(self, case: Case, r: Record, i: int, n: int) -> None:
        if self.progress:
            self.progress.advance(self.task)  # type: ignore[arg-type]
            return
        width = len(str(n))
        err = f"{r.rel_l2_error:.1e}" if r.rel_l2_error is not None else "-"
        print(
            f"[{i + 1:{width}}/{n}] {r.status:<11} {r.backend:<14} {r.device:<4} {r.dtype:<8} "
            f"{format_seconds(r.median_s):>9} err {err:>7}  {r.name or r.spec}",
            file=sys.stderr,
            flush=True,
        )


def run_sweep(
    store: RunStore,
    config: dict[str, Any],
    case_timeout: float,
    retry_failed: bool,
    client: Any = None,
) -> tuple[list[Record], int, float, int]:
    """Run the cases of ``config`` that ``store`` lacks, reporting progress: its records, how
    many cases it has in all, the wall time, and the exit code of an interruption (0: none;
    what it finished is kept either way)."""
    with Reporter() as reporter:
        outcome = execution.execute(
            store,
            config,
            case_timeout=case_timeout,
            retry_failed=retry_failed,
            client=client,
            on_plan=reporter.plan,
            on_start=reporter.start,
            on_record=reporter.record,
        )
    stop = outcome.interrupted
    code = 0 if stop is None else stop.code if isinstance(stop, Terminated) else EXIT_INTERRUPTED
    return outcome.records, outcome.total, outcome.wall_s, code


def print_summary(console: Console, records: list[Record]) -> None:
    """A run's table of cases (fastest backend, its speed-up over the baseline, memory, worst
    error, statuses), its counts, and a line for each failed or inaccurate record."""
    rows = summarize_cases(records)
    cold = any(r.cache == "cold" for r in records)
    table = titled_table(
        "convbench summary, cold caches (each call after an eviction)"
        if cold
        else "convbench summary",
        [
            "case",
            "device",
            "dtype",
            "fastest",
            "time",
            "vs baseline [95% CI]",
            "peak mem",
            "least mem",
            "worst rel. error",
            "status",
        ],
        right=(
            "time",
            "vs baseline [95% CI]",
            "peak mem",
            "least mem",
            "worst rel. error",
        ),
    )
    hosts = len({r.host for r in records})
    for row in rows:
        table.add_row(
            esc_rich(row.name or row.spec),
            row.where(hosts),
            row.dtype,
            row.winner_text,
            format_seconds(row.median_s),
            row.speedup_text,
            format_bytes(row.peak_bytes),
            row.least_bytes_text,
            row.worst_error_text,
            " ".join(f"{n} {s}" for s, n in sorted(row.statuses.items())),
        )
    console.print(table)
    counts = status_counts(records)
    console.print(
        f"{len(records)} record{'' if len(records) == 1 else 's'}: "
        + ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
    )
    for r in records:
        if r.status in ("failed", "inaccurate"):
            console.print(
                f"  {r.status}: {r.backend} {r.device} {r.dtype} {r.name or r.spec}: {r.reason}",
                markup=False,
                highlight=False,
            )


def print_stages(console: Console, store: RunStore, r: Record) -> None:
    """One record's stages, largest first: the backend's labelled stages and any operator
    called outside them that takes 1 % of the step or more; the rest summed into one row."""
    where = "device time" if r.device.startswith("cuda") else "CPU time"
    step = r.profile_s or 0.0
    table = Table(title=esc_rich(f"{r.name or r.spec} | {r.backend} | {r.device} {r.dtype}"))
    table.add_column("stage")
    table.add_column(f"{where} per step", justify="right")
    table.add_column("% of step", justify="right")
    rest, small = step - sum(r.stages.values()), 0
    for name, seconds in r.stages.items():
        if "/" in name or seconds >= 0.01 * step:
            table.add_row(esc_rich(name), format_seconds(seconds), f"{100 * seconds / step:.1f}")
        else:
            rest, small = rest + seconds, small + 1
    label = f"other ({small} small ops, Python)" if small else "other"
    table.add_row(label, format_seconds(max(rest, 0.0)), f"{100 * max(rest, 0.0) / step:.1f}")
    console.print(table)
    console.print(
        f"timed {format_seconds(r.median_s)} per call, profiled step {format_seconds(step)}; "
        f"trace: {store.path / r.trace}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )


def print_comparison(console: Console, c: verdicts.Comparison, command: str) -> None:
    """A comparison's environment differences, changed cases, counts and conclusion, as
    ``compare`` and ``ab`` print them."""
    from convbench.report.compare import CHANGE_COLUMNS, backend_change_text, change_cells

    if c.environment:
        env = Table("environment", "base", "new", title="environment differences")
        for key, a, b in c.environment:
            env.add_row(key, str(a), str(b))
        console.print(env)
    else:
        console.print("environment: the same (but for the time)")
    table = Table(*(col.label for col in CHANGE_COLUMNS), title="changes")
    shown = [ch for ch in c.changes if ch.verdict != "unchanged"]
    for ch in shown:
        table.add_row(*(esc_rich(cell.text) for cell in change_cells(ch)))
    if shown:
        console.print(table)
    console.print(
        f"{len(c.changes)} cases: " + ", ".join(f"{n} {v}" for v, n in c.counts.items()),
        markup=False,
    )
    if c.backends:
        per = Table(
            "backend",
            "cases",
            "median change [95% CI]",
            "p",
            "verdict",
            title=f"backends over their cases (count past {c.backend_threshold:g} %)",
        )
        for b in c.backends:
            per.add_row(
                esc_rich(b.label),
                str(b.ratio.n),
                backend_change_text(b),
                f"{b.p_value:.2g}" if b.p_value is not None else "-",
                b.verdict,
            )
        console.print(per)
    untested = c.counts.get("untested", 0)
    if untested:
        console.print(
            f"[yellow]{command}: {untested} cases moved by more than {c.threshold:g} % with too "
            "few samples to test (a --quick run takes 3); run them without --quick to tell[/]"
        )
    if c.bad:
        worse = [f"{n} {v}" for v, n in c.counts.items() if v in verdicts.BAD]
        worse += [f"backend {b.label} slower" for b in c.worse_backends]
        console.print(f"[red]{command}: WORSE: {esc_rich(', '.join(worse))}[/]")
    else:
        console.print(f"{command}: nothing got significantly slower or less accurate")
