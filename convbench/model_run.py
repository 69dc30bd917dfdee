"""The work of ``convbench model``: a network's convolutions tuned alone (or a table given), the
table settled in the network (``convbench.settle``, unless ``alone``), then the network timed
end to end with torch and with the table (``convbench.network.evaluate``); the table,
``model.json`` and ``model.html`` are written into the run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from rich.console import Console

from convbench import network
from convbench.console import EXIT_OK
from convbench.models import Network
from convbench.report.network_page import render_network
from convbench.results import RunStore, write_file
from convbench.settle import settle
from convbench.spec import ConvSpec
from convbench.tune import Tuned
from convbench.tuning import Table

__all__ = ["run_model"]

Tuner = Callable[[list[ConvSpec], RunStore], Tuned]


def _tuned_table(
    net: Network,
    x: torch.Tensor,
    store: RunStore,
    tuner: Tuner,
    *,
    alone: bool,
    max_error: float | None,
    threads: int | None,
    budget_s: float,
) -> tuple[Table, dict[str, str]] | int:
    """The table tuned on the network's problems (and settled in it unless ``alone``), with
    notes saying how; or the exit code of an interrupted tuning run."""
    tuned = tuner([spec for _, spec in network.conv_layers(net.module, x)], store)
    if tuned.interrupted:
        return tuned.interrupted
    table = tuned.table
    notes = {
        "wall time": f"{tuned.wall_s:.1f} s",
        "problems measured": str(tuned.measured),
        "max error": f"{max_error:g}" if max_error else "each tolerance",
    }
    if not alone:
        shape = "x".join(str(d) for d in x.shape)
        settled = settle(
            net.module, x, table, threads=threads, budget_s=budget_s,
            network=f"{net.name} {shape}",
        )  # fmt: skip
        table = settled.table
        notes["settled in the network"] = (
            f"{settled.chosen} chosen; {len(settled.fallen)} of {settled.problems} "
            f"choices fell back to torch in their stretches; {table.network or 'nothing'} "
            f"({settled.wall_s:.1f} s)"
        )
    return table, notes


def run_model(
    console: Console,
    net: Network,
    x: torch.Tensor,
    store: RunStore,
    *,
    given: tuple[Table, Path] | None,
    tuner: Tuner,
    alone: bool = False,
    max_error: float | None = None,
    threads: int | None = None,
    budget_s: float = 10.0,
    seed: int = 0,
    table_out: Path | None = None,
) -> int:
    """``net`` on ``x`` with the table ``given`` (read from its path), or with one ``tuner``
    makes; prints the result and returns the exit code."""
    if given is not None:
        chosen, notes = given[0], {"table": str(given[1])}
    else:
        made = _tuned_table(
            net, x, store, tuner, alone=alone, max_error=max_error, threads=threads,
            budget_s=budget_s,
        )  # fmt: skip
        if isinstance(made, int):
            return made
        chosen, notes = made
    chosen.save(table_out or store.path / "table.json")
    result = network.evaluate(
        net.module,
        x,
        chosen,
        name=net.name,
        source=net.source,
        threads=threads,
        budget_s=budget_s,
        seed=seed,
    )
    result.tuning = notes
    store.write_json("model.json", result.to_dict())
    page = write_file(store.path / "model.html", render_network(result.to_dict()))
    network.print_result(console, result)
    console.print(f"results: {store.path} (page: {page})", markup=False, highlight=False)
    return EXIT_OK
