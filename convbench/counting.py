"""Instruction counts as the commands show them: ``run --instructions`` counts what its run
folder lacks in one valgrind pass, ``ab`` and ``gate --instructions`` print a line per counted
case. The counting itself is ``convbench.instructions``; this module only reports it."""

from __future__ import annotations

import sys
from collections import Counter
from typing import Any

from rich.console import Console

from convbench import instructions
from convbench.console import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_OK
from convbench.results import Record, RunStore

__all__ = ["count_line", "count_pass", "require_valgrind"]


def require_valgrind() -> None:
    """``--instructions`` where nothing can count them: one line (ValueError), before any
    timing."""
    if reason := instructions.valgrind_reason():
        raise ValueError(f"--instructions: {reason}")


def count_line(c: instructions.CaseCount, i: int, n: int) -> None:
    """One line per counted case on stderr, as the sweep prints one per timed case."""
    what = f"{c.instructions:,.0f} instructions" if c.instructions is not None else c.reason
    print(
        f"[{i:{len(str(n))}}/{n}] {c.status:<11} {c.backend:<14} {c.device:<4} {c.dtype:<8} "
        f"{what}  {c.name or c.spec}",
        file=sys.stderr,
        flush=True,
    )


def count_pass(
    console: Console, store: RunStore, config: dict[str, Any], records: list[Record]
) -> int:
    """``run --instructions``: count in one valgrind pass what the run folder lacks, and say so
    in one line. EXIT_FAILED when a case could not be counted."""
    if not config.get("instructions"):
        return EXIT_OK
    try:
        run = instructions.count_run(
            store, records, seed=config["seed"], cache_sim=config["cache_sim"], on_case=count_line
        )
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except instructions.CountError as exc:
        console.print(f"instructions: not counted: {exc}", markup=False, highlight=False)
        return EXIT_FAILED
    if run is None:
        console.print("instructions: every case was counted before", markup=False)
        return EXIT_OK
    n = Counter(c.status for c in run.counts)
    i = run.info
    console.print(
        f"instructions: {n['ok']} case{'' if n['ok'] == 1 else 's'} counted"
        + (f", {n['failed']} failed" if n["failed"] else "")
        + (f", {n['unsupported']} not on the CPU" if n["unsupported"] else "")
        + f" in one valgrind pass of {i['wall_s']:.1f} s (1 thread; oneDNN ran "
        f"{i['counted']['onednn_conv']} under valgrind, {i['timed']['onednn_conv']} when timed): "
        f"{store.path / RunStore.INSTRUCTIONS}",
        markup=False,
        highlight=False,
        soft_wrap=True,
    )
    for c in run.failures:
        console.print(f"  failed: {c.backend} {c.name or c.spec}: {c.reason}", markup=False)
    return EXIT_FAILED if run.failures else EXIT_OK
