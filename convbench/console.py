"""What the commands share on the terminal: the console, and a sweep's progress (a progress
bar on a terminal, one status line per case in a log)."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from convbench import execution
from convbench.execution import Terminated
from convbench.report.summary import format_seconds
from convbench.results import Record, RunStore
from convbench.sweep import Case

__all__ = [
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "Reporter",
    "console",
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
