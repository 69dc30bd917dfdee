"""A sweep that survives its cases: a backend that kills its process or never returns costs
that case, recorded ``failed`` with the cause, and the sweep goes on in a fresh worker.

The culprits are real: ``plugin_backends`` kills its own process with SIGSEGV, or sleeps for
ever, on 1x1 problems, loaded through ``CONVBENCH_PLUGINS`` as a user's backend is.
"""

from __future__ import annotations

import json
from pathlib import Path

from conftest import run_cli

from convbench.results import Record, RunStore

TESTS = Path(__file__).parent
PLUGINS = {"PYTHONPATH": str(TESTS), "CONVBENCH_PLUGINS": "plugin_backends"}
SMOKE = 7  # problems in the smoke suite


def _run(tmp_path: Path, *args: str, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return run_cli(
        "run", "--suite", "smoke", "--quick", "--out", str(tmp_path / "res"), *args,
        cwd=tmp_path, env={**PLUGINS, **(env or {})},
    )  # fmt: skip


def _store(tmp_path: Path) -> RunStore:
    (run,) = sorted((tmp_path / "res").iterdir())
    return RunStore.find(run)


def _by(store: RunStore) -> dict[tuple[str, str], Record]:
    return {(r.name, r.backend): r for r in store.records()}


def test_a_crashing_backend_costs_its_case_not_the_sweep(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--backend", "torch,test-segv-1x1,im2col")
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    store = _store(tmp_path)
    by = _by(store)
    assert len(by) == SMOKE * 3
    crash = by[("smoke:1x1", "test-segv-1x1")]
    assert crash.status == "failed"
    assert crash.reason.startswith("worker died: SIGSEGV; Fatal Python error")
    assert "plugin_backends.py" in crash.reason and "in crash" in crash.reason
    others = [r for k, r in by.items() if k != ("smoke:1x1", "test-segv-1x1")]
    assert all(r.status == "ok" for r in others)
    # The rest of the crashed problem ran again in a fresh worker, still paired.
    assert by[("smoke:1x1", "im2col")].speedup is not None
    assert "convbench summary" in proc.stdout and (store.path / "report.html").is_file()

    # --resume does not walk into the crash again ...
    again = run_cli("run", "--resume", store.run_id, "--out", str(tmp_path / "res"),
                    cwd=tmp_path, env=PLUGINS)  # fmt: skip
    assert again.returncode == 1, again.stderr
    lines = (store.path / "records.jsonl").read_text().splitlines()
    assert len(lines) == SMOKE * 3
    # ... unless told to: the case runs (and crashes) again, its new record replacing the old.
    retry = run_cli("run", "--resume", store.run_id, "--retry-failed", "--out",
                    str(tmp_path / "res"), cwd=tmp_path, env=PLUGINS)  # fmt: skip
    assert retry.returncode == 1, retry.stderr
    lines = (store.path / "records.jsonl").read_text().splitlines()
    assert len(lines) == SMOKE * 3 + 1
    assert len(store.records()) == SMOKE * 3


def test_a_crash_in_the_timed_rounds_keeps_the_problem_paired(tmp_path: Path) -> None:
    # The 8th call is inside the rounds: the accuracy check and the warm-up have passed.
    proc = _run(tmp_path, "--backend", "torch,test-segv-1x1,im2col",
                env={"CONVBENCH_TEST_CRASH_AT": "8"})  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    by = _by(_store(tmp_path))
    assert by[("smoke:1x1", "test-segv-1x1")].reason.startswith("worker died: SIGSEGV")
    assert by[("smoke:1x1", "torch")].status == "ok"
    assert by[("smoke:1x1", "im2col")].speedup is not None


def test_a_hanging_backend_is_timed_out(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--backend", "torch,test-hang-1x1", "--case-timeout", "2")
    assert proc.returncode == 1, proc.stderr
    by = _by(_store(tmp_path))
    assert len(by) == SMOKE * 2
    assert by[("smoke:1x1", "test-hang-1x1")].reason == "timed out after 2 s"
    assert by[("smoke:3x3", "test-hang-1x1")].status == "ok"


def test_retry_failed_needs_resume(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--retry-failed")
    assert proc.returncode == 2
    assert proc.stderr.strip() == "convbench: error: --retry-failed goes with --resume RUN_ID"


def test_an_unreadable_line_is_named_not_skipped_in_silence(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--backend", "torch")
    assert proc.returncode == 0, proc.stderr
    store = _store(tmp_path)
    path = store.path / "records.jsonl"
    lines = path.read_text().splitlines()
    lost = json.loads(lines[2])
    lines[2] = '{"run_id": "garbled by a disk error'
    path.write_text("\n".join(lines) + "\n")
    for argv in (["report", str(store.path)], ["compare", str(store.path), str(store.path)]):
        shown = run_cli(*argv, cwd=tmp_path)
        assert f"{path}:3: unreadable record skipped" in shown.stderr, argv
        assert "Traceback" not in shown.stderr
    resumed = run_cli("run", "--resume", store.run_id, "--out", str(tmp_path / "res"),
                      cwd=tmp_path)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert f"{path}:3: unreadable record skipped" in resumed.stderr
    # The case whose record was lost is run again; the others are not.
    assert len(store.records()) == SMOKE
    again = json.loads(path.read_text().splitlines()[-1])
    assert (again["name"], again["backend"]) == (lost["name"], lost["backend"])
