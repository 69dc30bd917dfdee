"""``convbench tune`` (and the tuning half of ``convbench model``): a tuning table from the
records of earlier runs, measuring in a new run only the problems they lack on this machine.

A problem shared by several layers is measured once; the choices come from
:func:`convbench.tuning.choose`, and the table names the machines its measurements were taken on
(CPU, threads, torch build, GPU), since a choice holds only where it was measured.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from convbench.console import run_sweep, titled_table
from convbench.env import fingerprint
from convbench.results import Record, RunStore
from convbench.spec import ConvSpec
from convbench.tuning import Table, choose, missing, problem_key

__all__ = ["Tuned", "print_table", "tune"]

_MACHINE_KEYS = ("cpu", "cores", "threads", "torch", "torch_cpu_capability", "gpu")


@dataclass(frozen=True)
class Tuned:
    table: Table
    store: RunStore | None  # the run that measured what the records lacked (None: nothing)
    measured: int  # problems measured in it
    wall_s: float  # the whole of tuning: reading, measuring, choosing
    interrupted: int  # the exit code of an interruption of the measuring run (0: none)
    layers: dict[str, list[str]]  # each problem's layer names, from the problems or the records


def _machine(store: RunStore) -> tuple[str, dict[str, Any]]:
    try:
        env = store.read_json(RunStore.ENVIRONMENT)
    except (OSError, ValueError):
        return "", {}
    return env.get("hostname", ""), {k: env.get(k) for k in _MACHINE_KEYS}


def tune(
    specs: Iterable[ConvSpec],
    runs: Iterable[RunStore],
    selection: dict[str, Any],
    out: Path,
    *,
    max_error: float | None = None,
    case_timeout: float,
    store: RunStore | None = None,
) -> Tuned:
    """The table for ``specs`` (every problem of ``runs`` when there are none), from the records
    of ``runs`` and a new run under ``out`` for what they lack. ``selection`` is a run's stored
    selection without its workloads (backends, devices, dtypes, threads, timing); ``store``, a
    run folder already made to measure into."""
    t0 = time.perf_counter()
    specs, runs = list(specs), list(runs)
    records: list[Record] = [r for store in runs for r in store.records()]
    todo = missing(specs, records, selection["devices"], selection["dtypes"])
    code = 0
    if todo:
        store = store or RunStore.create(out)
        config = {**selection, "workloads": [{"spec": s.format(), "fill": "randn"} for s in todo]}
        store.write_json(RunStore.CONFIG, config)
        store.write_json(RunStore.ENVIRONMENT, fingerprint(config["threads"], config["devices"]))
        new, _, _, code = run_sweep(store, config, case_timeout, retry_failed=False)
        records += new
        runs.append(store)
    if specs:
        wanted = {problem_key(s) for s in specs}
        records = [
            r
            for r in records
            if problem_key(r.spec) in wanted
            and r.device in selection["devices"]
            and r.dtype in selection["dtypes"]
        ]
    if not records:
        raise ValueError("no records to tune from")
    layers: dict[str, list[str]] = {}
    for name, key in [(s.name, problem_key(s)) for s in specs] or [
        (r.name, problem_key(r.spec)) for r in records
    ]:
        if name and name not in layers.setdefault(key, []):
            layers[key].append(name)
    machines = dict(_machine(s) for s in runs)
    machines.pop("", None)
    table = Table(choose(records, max_error), max_error, machines=machines)
    wall = time.perf_counter() - t0
    return Tuned(table, store if todo else None, len(todo), wall, code, layers)


def print_table(console: Console, table: Table, names: dict[str, list[str]]) -> None:
    """The choices, one row per problem, with the layers that share it (``names``)."""
    out = titled_table(
        "convbench tuning table",
        [
            "problem",
            "layers",
            "device",
            "dtype",
            "backend",
            "vs torch [95% CI]",
            "rel. error",
            "why",
        ],
        right=(
            "vs torch [95% CI]",
            "rel. error",
        ),
    )
    for c in table.choices:
        layers = names.get(c.problem, [])
        shown = ", ".join(layers[:3]) + (f" +{len(layers) - 3}" if len(layers) > 3 else "")
        err = f"{c.rel_l2_error:.1e}" if c.rel_l2_error is not None else "-"
        out.add_row(
            escape(c.problem),
            escape(shown),
            c.device,
            c.dtype,
            c.backend if c.within else f"{c.backend} (!)",
            c.speedup_text,
            err,
            escape(c.why),
        )
    console.print(out)
