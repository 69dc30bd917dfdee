"""``convbench run --dask``: the cases on a real Dask cluster — a ``LocalCluster``, and a
scheduler and worker started as a user starts them — with the records written by the client."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import run_cli

from convbench.results import RunStore

pytest.importorskip("distributed", reason="'run --dask' needs the distributed package")

TESTS = Path(__file__).resolve().parent
PLUGINS = {"PYTHONPATH": str(TESTS), "CONVBENCH_PLUGINS": "plugin_backends"}
SMOKE = 7


def _run(
    tmp_path: Path, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "--suite", "smoke", "--quick", "--out", str(tmp_path / "res"), *args,
                   cwd=tmp_path, env={**PLUGINS, **(env or {})})  # fmt: skip


def _store(tmp_path: Path) -> RunStore:
    (run,) = sorted((tmp_path / "res").iterdir())
    return RunStore.find(run)


def test_a_local_cluster_runs_the_sweep_and_isolates_a_crash(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--backend", "torch,test-segv-1x1,im2col", "--dask", "local")
    assert proc.returncode == 1, proc.stderr
    store = _store(tmp_path)
    lines = (store.path / "records.jsonl").read_text().splitlines()
    records = store.records()
    assert len(lines) == len(records) == SMOKE * 3  # every case once
    by = {(r.name, r.backend): r for r in records}
    assert by[("smoke:1x1", "test-segv-1x1")].reason.startswith("worker died: SIGSEGV")
    assert by[("smoke:1x1", "im2col")].speedup is not None  # still paired with torch
    host = socket.gethostname()
    assert {r.host for r in records} == {host} and all(r.device_name for r in records)
    assert set(store.read_json(RunStore.HOSTS)) == {host}
    assert "Traceback" not in proc.stderr


def test_a_lost_worker_costs_its_problem_once_retried(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--backend", "torch,test-kill-parent-1x1", "--dask", "local")
    assert proc.returncode == 1, proc.stderr
    store = _store(tmp_path)
    lines = (store.path / "records.jsonl").read_text().splitlines()
    assert len(lines) == SMOKE * 2
    lost = [r for r in store.records() if r.status == "failed"]
    assert {(r.name, r.reason) for r in lost} == {("smoke:1x1", "worker lost")}
    assert len(lost) == 2  # the problem is the unit: its torch case went with it


def test_resume_on_a_cluster_completes_without_duplicates(tmp_path: Path) -> None:
    assert _run(tmp_path, "--backend", "torch,im2col").returncode == 0
    store = _store(tmp_path)
    path = store.path / "records.jsonl"
    kept = path.read_text().splitlines()[:5]
    path.write_text("\n".join(kept) + "\n")
    proc = run_cli("run", "--resume", store.run_id, "--dask", "local", "--out",
                   str(tmp_path / "res"), cwd=tmp_path, env=PLUGINS)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    lines = path.read_text().splitlines()
    assert lines[:5] == kept and len(lines) == len(store.records()) == SMOKE * 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def scheduler(tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
         "--port", str(port), "--dashboard-address", ":0"],
        cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    address = f"tcp://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    yield address
    proc.terminate()
    proc.wait(timeout=30)


def _worker(tmp_path: Path, address: str, *args: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, **PLUGINS, "DASK_DISTRIBUTED__WORKER__DAEMON": "False"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    return subprocess.Popen(
        [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
         "--nthreads", "1", "--memory-limit", "0", "--dashboard-address", ":0", *args],
        cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip


def _wait_for_workers(address: str, n: int) -> None:
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(n, timeout=60)


def test_a_cluster_of_ones_own(tmp_path: Path, scheduler: str) -> None:
    plain = _worker(tmp_path, scheduler)
    try:
        _wait_for_workers(scheduler, 1)
        refused = _run(tmp_path, "--backend", "torch", "--dask", scheduler)
        assert refused.returncode == 2
        assert (
            refused.stderr.strip()
            .splitlines()[-1]
            .startswith(
                f"convbench: error: no worker of the Dask cluster at {scheduler} offers the 'bench'"
            )
        )
    finally:
        plain.terminate()
        plain.wait(timeout=30)
    bench = _worker(tmp_path, scheduler, "--resources", "bench=1")
    try:
        _wait_for_workers(scheduler, 1)
        proc = _run(tmp_path, "--backend", "torch,im2col", "--threads", "2", "--dask", scheduler)
        assert proc.returncode == 0, proc.stderr
        store = _store(tmp_path)
        records = store.records()
        assert len(records) == SMOKE * 2 and all(r.status == "ok" for r in records)
        assert all(r.threads == 2 for r in records)  # the run's --threads reached the worker
        host = socket.gethostname()
        assert {r.host for r in records} == {host}
        hosts = store.read_json(RunStore.HOSTS)  # every worker's host, with its environment
        assert set(hosts) == {host} and hosts[host]["threads"] == 2
    finally:
        bench.terminate()
        bench.wait(timeout=30)


def test_an_unreachable_scheduler_is_one_line(tmp_path: Path) -> None:
    """Within the connect timeout of Dask's configuration (30 s by default), shortened here."""
    address = f"tcp://127.0.0.1:{_free_port()}"
    timeout = {"DASK_DISTRIBUTED__COMM__TIMEOUTS__CONNECT": "2s"}
    proc = _run(tmp_path, "--backend", "torch", "--dask", address, env=timeout)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("convbench: error: cannot reach the Dask")
