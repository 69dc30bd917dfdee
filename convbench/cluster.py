"""A sweep on a Dask cluster (``distributed``): the cases go out as tasks, the records come
back to the one process that writes the run folder.

The unit of work is one problem on one device and dtype — the backends that are timed side by
side — and a task runs it in the same supervised worker as a local run (``executor``), started
from the Dask worker process, so a case that crashes or hangs costs that case there too.

What timing demands of a cluster, and how it is had:

- **Exclusive hardware.** Every task asks for one ``bench`` resource; a Dask worker offers as
  many as it has separate timing slots (``dask worker ADDR --nworkers 1 --nthreads 1
  --resources bench=1`` per host; ``dask cuda worker ADDR --resources bench=1``: one worker
  per GPU). Two timed cases never share a host's cores or a GPU. At most one task per free slot
  is in flight, so a worker that dies takes at most its running task with it.
- **Threads.** The nanny starts workers with ``OMP_NUM_THREADS=1`` (and MKL's, OpenBLAS's); a
  task sets them to the run's ``--threads`` before it starts its child, and torch's threads
  are set explicitly there; records carry the count.
- **Identical tasks.** Every submission is ``pure=False`` with a key of its own: Dask would
  otherwise merge two identical problems into one result.
- **Lost workers.** A task whose worker dies (the process killed, the host gone) is submitted
  once more; lost again, its cases are recorded ``failed`` ("worker lost"). The scheduler
  itself retries such a task up to ``distributed.scheduler.allowed-failures`` times (default 3)
  before it gives up; ``--dask local`` sets that to 0, so "once more" means once.
- **Children.** A task starts a child process, which Python forbids a daemonic process: start
  workers with ``DASK_DISTRIBUTED__WORKER__DAEMON=False`` (``--dask local`` does so); a cluster
  whose workers are daemonic is refused at connection, saying so.
- **Memory limits.** ``--dask local`` starts its worker with no memory limit (a nanny kills a
  worker at 95 % of it); on a cluster of your own, start workers with ``--memory-limit 0`` or a
  limit above what the largest problem needs.
"""

from __future__ import annotations

import itertools
import multiprocessing
import os
import socket
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import dask
from distributed import Client, KilledWorker, LocalCluster, as_completed

from convbench.env import fingerprint
from convbench.executor import Supervisor
from convbench.results import Record
from convbench.sweep import Case, SweepConfig, groups

__all__ = ["connect", "environments", "run_on_cluster"]

RESOURCE = "bench"
_THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_SUPERVISOR: Supervisor | None = None  # one per Dask worker process, kept across tasks


def connect(address: str) -> Client:
    """A client of the scheduler at ``address``, or of a ``LocalCluster`` (``local``): one worker
    process, one thread, one ``bench`` slot, no memory limit."""
    if address == "local":
        # For the cluster's whole life: the nanny reads them again when it restarts a worker.
        dask.config.set(
            {
                "distributed.scheduler.allowed-failures": 0,
                "distributed.scheduler.worker-ttl": None,
                "distributed.worker.daemon": False,  # its tasks start a child of their own
            }
        )
        cluster = LocalCluster(
            n_workers=1,
            threads_per_worker=1,
            processes=True,
            resources={RESOURCE: 1},
            memory_limit=0,
            dashboard_address=None,
        )
        client = Client(cluster)
    else:
        try:
            # Dask's connect timeout (30 s unless its configuration says otherwise, e.g.
            # DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT=5s): how long a busy scheduler may take.
            client = Client(address)
        except (OSError, TimeoutError) as exc:
            raise ValueError(f"cannot reach the Dask scheduler at {address}: {exc}") from None
    if _slots(client) == 0:
        client.close()
        raise ValueError(
            f"no worker of the Dask cluster at {address} offers the '{RESOURCE}' resource; start "
            f"them with: dask worker {address} --nworkers 1 --nthreads 1 --resources {RESOURCE}=1"
        )
    if any(client.run(_daemonic).values()):
        client.close()
        raise ValueError(
            f"the workers of the Dask cluster at {address} are daemonic processes, which may not "
            "start the child each case runs in; start them with "
            "DASK_DISTRIBUTED__WORKER__DAEMON=False in their environment"
        )
    return client


def _daemonic() -> bool:
    return bool(multiprocessing.current_process().daemon)


def _slots(client: Client) -> int:
    workers = client.scheduler_info(n_workers=-1)["workers"].values()
    return int(sum(w.get("resources", {}).get(RESOURCE, 0) for w in workers))


def _host_environment(threads: int, devices: list[str]) -> dict[str, Any]:
    return {"host": socket.gethostname(), **fingerprint(threads, devices)}


def environments(client: Client, threads: int, devices: list[str]) -> dict[str, dict[str, Any]]:
    """The environment of every host of the cluster, by host name."""
    found = client.run(_host_environment, threads, devices)
    return {env["host"]: env for env in found.values()}


def _run_group(
    cases: list[Case],
    retime: set[tuple[str, str, str, str]],
    config: SweepConfig,
    run_id: str,
    case_timeout: float,
) -> list[dict[str, Any]]:
    """The task: one problem's cases in this Dask worker's supervised child; their records."""
    global _SUPERVISOR
    for name in _THREAD_VARIABLES:  # the nanny's 1, which the child would inherit
        os.environ[name] = str(config.threads)
    s = _SUPERVISOR
    if s is None or (s.config, s.run_id, s.case_timeout) != (config, run_id, case_timeout):
        if s is not None:
            s.close()
        _SUPERVISOR = Supervisor(config, run_id, Path(tempfile.gettempdir()), case_timeout)
    out: list[dict[str, Any]] = []
    _SUPERVISOR.run(cases, lambda case, record: out.append(record.to_dict()), retime=retime)
    return out


def run_on_cluster(
    client: Client,
    cases: list[Case],
    config: SweepConfig,
    run_id: str,
    emit: Callable[[Case, Record], None],
    failed: Callable[[Case, str], Record],
    *,
    retime: set[tuple[str, str, str, str]] = frozenset(),  # type: ignore[assignment]
    case_timeout: float,
) -> None:
    """Run ``cases`` as tasks of one problem each; every record to ``emit`` as its task ends.
    ``failed(case, reason)`` makes the record of a case whose task was lost."""
    work = [(g, {c.key for c in g} & retime) for g in groups(cases)]
    slots = max(1, _slots(client))
    lost_once: set[int] = set()
    futures: dict[Any, int] = {}
    counter = itertools.count()

    pool = as_completed([], with_results=False)

    def submit(i: int) -> None:
        group, again = work[i]
        future = client.submit(
            _run_group, group, again, config, run_id, case_timeout,
            resources={RESOURCE: 1}, pure=False, key=f"convbench-{run_id}-{i}-{next(counter)}",
        )  # fmt: skip
        futures[future] = i
        pool.add(future)

    queue = list(range(len(work)))
    while queue and len(futures) < slots:
        submit(queue.pop(0))
    try:
        for future in pool:
            i = futures.pop(future)
            group, again = work[i]
            if future.status == "finished":
                by_key = {c.key: c for c in group}
                for data in future.result():
                    record = Record.from_dict(data)
                    emit(by_key[record.key], record)
            else:
                exc = future.exception()
                if isinstance(exc, KilledWorker) and i not in lost_once:
                    lost_once.add(i)
                    queue.insert(0, i)
                else:
                    why = (
                        "worker lost"
                        if isinstance(exc, KilledWorker)
                        else f"{type(exc).__name__}: {exc}".strip()
                    )
                    for case in group:
                        if case.key not in again:
                            emit(case, failed(case, why))
            future.release()
            while queue and len(futures) < slots:
                submit(queue.pop(0))
    finally:
        for future in futures:
            future.cancel()
        client.run(_close_supervisor)  # its child would outlive the worker's shutdown


def _close_supervisor() -> None:
    global _SUPERVISOR
    if _SUPERVISOR is not None:
        _SUPERVISOR.close()
        _SUPERVISOR = None
