"""Executing a run: the cases its folder lacks, where they run, and the records written back.

``run.json`` (the resolved selection) says what the run is; this module turns it into a
``SweepConfig`` and the pending cases, sends them to the executor — the supervised worker of
``executor``, or a Dask cluster through ``cluster`` — and appends each record to the run
folder as it comes back, this process being the one writer. An interruption (Ctrl-C, or
SIGTERM raised as ``Terminated``) stops it with every record written so far kept.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from convbench.executor import CASE_TIMEOUT, Supervisor
from convbench.measure.timing import TimingConfig
from convbench.results import Record, RunStore
from convbench.spec import parse
from convbench.suites import Workload
from convbench.sweep import Case, SweepConfig, failed_record, pending_cases

__all__ = ["CASE_TIMEOUT", "Outcome", "Terminated", "connect", "disconnect", "execute"]


class Terminated(KeyboardInterrupt):
    """SIGTERM (a cancelled CI job, a pre-empted batch job), handled as Ctrl-C is."""

    code = 128 + signal.SIGTERM


@dataclass(frozen=True)
class Outcome:
    records: list[Record]  # all the run's records, those of earlier sessions included
    total: int  # cases in the whole run
    wall_s: float
    interrupted: KeyboardInterrupt | None


def sweep_config(config: dict[str, Any]) -> SweepConfig:
    """The sweep a run's stored selection describes."""
    return SweepConfig(
        backends=config["backends"],
        devices=config["devices"],
        dtypes=config["dtypes"],
        threads=config["threads"],
        seed=config["seed"],
        timing=TimingConfig.quick() if config["quick"] else TimingConfig(),
        max_memory=config["max_memory"],
        profile_steps=config.get("profile_steps", 0),
        baseline=config.get("baseline", "torch"),
        cold_cache=config.get("cold_cache", False),
    )


def connect(address: str) -> Any:
    """A client of the Dask cluster at ``address`` (``local``: one started here)."""
    try:
        from convbench import cluster
    except ImportError:
        raise ValueError(
            "--dask needs the 'distributed' package: pip install 'convbench[dask]'"
        ) from None
    return cluster.connect(address)


def disconnect(client: Any) -> None:
    client.close()
    if client.cluster is not None:  # a LocalCluster started by ``connect``
        client.cluster.close()


def execute(
    store: RunStore,
    config: dict[str, Any],
    *,
    case_timeout: float = CASE_TIMEOUT,
    retry_failed: bool = False,
    client: Any = None,
    on_plan: Callable[[int], None] | None = None,
    on_start: Callable[[Case, int, int], None] | None = None,
    on_record: Callable[[Case, Record, int, int], None] | None = None,
) -> Outcome:
    """Run the cases of ``config`` that ``store`` lacks (its ``failed`` ones too with
    ``retry_failed``), on the Dask cluster of ``client`` or else in a supervised worker.
    ``on_plan(n)`` hears how many cases are to run; ``on_start``/``on_record`` get each case
    with its index among them and that number."""
    sweep = sweep_config(config)
    workloads = [Workload(parse(w["spec"]), w["fill"]) for w in config["workloads"]]
    done = [r for r in store.records() if not (retry_failed and r.status == "failed")]
    cases, retime = pending_cases(workloads, sweep, done)
    todo = len(cases) - len(retime)
    if on_plan:
        on_plan(todo)
    total = len(workloads) * len(sweep.backends) * len(sweep.devices) * len(sweep.dtypes)
    made: list[Record] = []

    def emit(case: Case, record: Record) -> None:
        store.append(record)
        made.append(record)
        if on_record:
            on_record(case, record, len(made) - 1, todo)

    def start(case: Case) -> None:
        if on_start:
            on_start(case, len(made), todo)

    t0 = time.perf_counter()
    interrupted: KeyboardInterrupt | None = None
    try:
        if client is not None:
            _on_cluster(client, store, sweep, cases, retime, emit, case_timeout)
        else:
            with Supervisor(sweep, store.run_id, store.path, case_timeout) as supervisor:
                supervisor.run(cases, emit, retime=retime, on_start=start)
    except KeyboardInterrupt as exc:
        interrupted = exc
    return Outcome(store.records(), total, time.perf_counter() - t0, interrupted)


def _on_cluster(
    client: Any,
    store: RunStore,
    sweep: SweepConfig,
    cases: list[Case],
    retime: set[tuple[str, str, str, str]],
    emit: Callable[[Case, Record], None],
    case_timeout: float,
) -> None:
    """The cases on a Dask cluster; every host's environment into ``hosts.json``."""
    from convbench import cluster

    store.write_json(RunStore.HOSTS, cluster.environments(client, sweep.threads, sweep.devices))
    cluster.run_on_cluster(
        client,
        cases,
        sweep,
        store.run_id,
        emit,
        lambda case, why: failed_record(case, sweep, store.run_id, why),
        retime=retime,
        case_timeout=case_timeout,
    )
