"""The work of ``convbench gate``: judge a pytest-benchmark run of ``tests/perf`` (timing, as
ratios to each case's yardstick, ``convbench.gate``) or the smoke cases' instruction counts
(``convbench.instructions``) against their committed baselines, print why, and return the exit
code: 0 passed (or a baseline written), 1 failed."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from rich.console import Console
from rich.markup import escape as esc_rich
from rich.table import Table

from convbench import gate, instructions, verdicts
from convbench.console import EXIT_FAILED, EXIT_OK
from convbench.counting import count_line
from convbench.results import write_file

__all__ = [
    "BASELINE",
    "BENCHMARK_STORAGE",
    "CALLGRIND_GATE",
    "INSTRUCTION_BASELINE",
    "instruction_gate",
    "timing_gate",
]

BENCHMARK_STORAGE = Path("results/benchmarks")
BASELINE = Path("tests/perf/baseline.json")
INSTRUCTION_BASELINE = Path("tests/perf/instructions.json")
CALLGRIND_GATE = Path("results/callgrind")  # the instruction gate's job, logs and dumps


def _json(path: Path, data: dict) -> None:
    write_file(path, json.dumps(data, indent=1, sort_keys=True) + "\n")


def timing_gate(
    console: Console,
    paths: list[Path],
    baseline: Path,
    threshold: float,
    backend_threshold: float,
    write_baseline: bool = False,
    newest: int = 1,
) -> int:
    """Judge the runs ``paths`` (the ``newest`` under BENCHMARK_STORAGE if none), combined by
    their median ratios, against the baseline that ``baseline`` holds for their CPU; or write theirs
    into it, beside the other CPUs'. A baseline that cannot be read or was measured with another
    thread count is bad input (ValueError)."""
    paths = paths or gate.newest_runs(BENCHMARK_STORAGE, newest)
    runs = [gate.load_run(p) for p in paths]
    combined = gate.make_baseline(runs)
    if write_baseline:
        others = gate.read_baselines(baseline) if baseline.exists() else []
        _json(baseline, gate.adding(others, combined))
        print(
            f"baseline of {len(combined['ratios'])} ratios from {len(runs)} run(s) on "
            f"{combined['machine']!r}: {baseline}"
        )
        return EXIT_OK
    base, same_cpu = gate.pick_baseline(
        gate.read_baselines(baseline), combined["machine"], combined["threads"]
    )
    if base.get("threads") != combined["threads"]:
        raise ValueError(
            f"the baseline was measured with {base.get('threads')} thread(s), the run with "
            f"{combined['threads']}: run the benchmarks with --perf-threads={base.get('threads')}"
        )
    console.print(f"gate: {', '.join(map(str, paths))} against {baseline}")
    if not same_cpu:
        console.print(
            f"[yellow]note: {baseline} has no baseline measured on {combined['machine']!r}; "
            f"judged against the baseline of {base.get('machine')!r}, whose ratios may differ "
            f"(write this CPU's with --write-baseline)[/]"
        )
    j = verdicts.judge_ratios(combined["ratios"], base["ratios"], threshold, backend_threshold)
    table = Table("backend", "cases", "mean change", "worst case", "worst change")
    for backend, mean in j.backend_change.items():
        mine = [v for v in j.verdicts if v.backend == backend and v.change is not None]
        worst = max(mine, key=lambda v: v.change or 0.0)
        style = "red" if mean > j.backend_threshold else ""
        table.add_row(
            backend,
            str(len(mine)),
            f"[{style}]{mean:.2f}x[/]" if style else f"{mean:.2f}x",
            worst.key.split(gate.SEP)[0],
            f"{worst.change:.2f}x",
        )
    console.print(table)
    for status in ("slower", "missing", "new", "faster"):
        for v in j.having(status):
            detail = f"{v.change:.2f}x" if v.change is not None else ""
            console.print(f"  {status:<8} {v.key} {detail}")
    n = sum(v.change is not None for v in j.verdicts)
    if j.passed:
        console.print(
            f"gate: PASSED: {n} benchmarks within {j.threshold:g}x of the baseline, every "
            f"backend's mean within {j.backend_threshold:g}x"
        )
        return EXIT_OK
    slower, missing = j.having("slower"), j.having("missing")
    reasons = [f"{len(slower)} benchmarks over {j.threshold:g}x"] if slower else []
    reasons += [f"{b} {j.backend_change[b]:.2f}x on its mean" for b in j.slower_backends]
    reasons += [f"{len(missing)} baseline benchmarks missing"] if missing else []
    console.print(f"[red]gate: FAILED: {'; '.join(reasons)}[/]")
    return EXIT_FAILED


def instruction_gate(
    console: Console, baseline: Path, margin: float, write_baseline: bool = False
) -> int:
    """Count the gate's cases in GATE_PARTS valgrind processes at once and judge each count
    against ``baseline`` (EXIT_FAILED past ``margin`` per cent, or a case missing); or write
    it."""
    base = None if write_baseline else instructions.read_baseline(baseline)
    cases = instructions.gate_cases()
    parts = instructions.GATE_PARTS
    console.print(
        f"gate: counting the instructions of {len(cases)} cases under callgrind, "
        f"in {parts} processes"
    )
    try:
        run = instructions.count_in_parts(cases, parts, workdir=CALLGRIND_GATE, on_case=count_line)
    except instructions.CountError as exc:
        console.print(f"gate: not counted: {exc}", markup=False, highlight=False)
        return EXIT_FAILED
    for c in run.failures:
        console.print(f"  failed   {instructions.gate_key(c)}: {c.reason}", markup=False)
    if base is None:
        if run.failures:
            console.print("[red]gate: no baseline written: some cases failed[/]")
            return EXIT_FAILED
        data = instructions.make_baseline(run)
        _json(baseline, data)
        console.print(f"baseline of {len(data['instructions'])} instruction counts: {baseline}")
        return EXIT_OK
    for note in instructions.baseline_differences(base, run):
        console.print(f"[yellow]note: the baseline was counted with another {esc_rich(note)}[/]")
    changes = verdicts.count_changes(instructions.gate_counts(run), base["instructions"], margin)
    for ch in changes:
        if ch.verdict != "unchanged":
            pct = f"{ch.change_pct:+.2f} %" if ch.change_pct is not None else ""
            console.print(f"  {ch.verdict:<8} {ch.key} {pct}", markup=False)
    largest = max((abs(ch.change_pct or 0.0) for ch in changes), default=0.0)
    counts = Counter(ch.verdict for ch in changes)
    done = f"{len(changes)} cases, {run.info['wall_s']:.0f} s, largest change {largest:.2f} %"
    if counts["slower"] or counts["missing"]:
        console.print(
            f"[red]gate: FAILED: {counts['slower']} cases over {margin:g} % more "
            f"instructions, {counts['missing']} missing ({done})[/]"
        )
        return EXIT_FAILED
    console.print(f"gate: PASSED: every case within {margin:g} % of the baseline ({done})")
    return EXIT_OK
