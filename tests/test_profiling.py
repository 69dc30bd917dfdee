"""Profiler traces: their files and stages, `convbench profile`, and TensorBoard reading them."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
import torch
from conftest import run_cli
from test_algorithms import STAGES

from convbench.measure.timing import TimingConfig
from convbench.profiling import case_folder, profile_ready, worker_name
from convbench.results import Record, RunStore
from convbench.spec import parse
from convbench.suites import Workload
from convbench.sweep import Case, SweepConfig, ready, run_cases

SPEC = parse('mb2ic16ih20oc16oh20kh3ph1n"prof"')
# What one call runs: the filter transforms belong to prepare, which is not profiled.
CALL_STAGES = {b: [s for s in stages if "/filter" not in s] for b, stages in STAGES.items()}
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available"))]  # fmt: skip


def _case(backend: str, device: str = "cpu", spec=SPEC) -> Case:  # type: ignore[no-untyped-def]
    return Case(Workload(spec, "randn"), backend, device, "float32")


def _events(trace: Path) -> list[dict]:
    return _trace(trace)["traceEvents"]


def _trace(path: Path) -> dict:
    return json.loads(path.read_text())


@pytest.mark.parametrize("backend", sorted(CALL_STAGES))
def test_trace_holds_the_stages_shapes_and_memory(tmp_path: Path, backend: str) -> None:
    case = _case(backend)
    p = profile_ready(ready(case), tmp_path, steps=3)
    assert p.trace.parent == tmp_path / case_folder(case)
    assert p.trace.name.startswith(worker_name(case) + ".")
    assert p.trace.name.endswith(".pt.trace.json")
    events = _events(p.trace)
    steps = [e for e in events if e["name"].startswith("ProfilerStep#")]
    assert len(steps) == 3  # the warm-up call is not recorded
    labels = [e["name"] for e in events if e.get("cat") == "user_annotation"]
    for stage in CALL_STAGES[backend]:
        assert labels.count(stage) >= 3, stage  # once per step at least
    assert _trace(p.trace)["profile_memory"] and _trace(p.trace)["record_shapes"]
    assert any("Input Dims" in e.get("args", {}) for e in events)
    if backend != "fft-scipy":  # SciPy allocates outside torch, where the profiler is blind
        assert any(e["name"] == "[memory]" for e in events)

    names = [s.name for s in p.stages]
    assert set(CALL_STAGES[backend]) <= set(names)
    assert not any(n.startswith("ProfilerStep") for n in names)
    times = [s.cpu_s for s in p.stages]
    assert times == sorted(times, reverse=True) and min(times) >= 0
    assert 0 < sum(times) <= p.step_s * 1.0001  # stages are disjoint parts of the step
    assert all(s.calls >= 1 for s in p.stages)


@pytest.mark.parametrize("device", DEVICES)
def test_torch_backend_step_is_its_conv(tmp_path: Path, device: str) -> None:
    p = profile_ready(ready(_case("torch", device)), tmp_path, steps=2)
    top = {s.name: s for s in p.stages}
    assert "aten::conv2d" in top
    if device == "cuda":
        assert top["aten::conv2d"].device_s > 0  # its kernels' time on the device
        assert any(e.get("cat") == "kernel" for e in _events(p.trace))


def test_case_folders_are_safe_and_distinct() -> None:
    crafted = parse('mb1ic4ih8oc4kh3n"../../etc/<script>:x"')
    folder = case_folder(_case("torch", spec=crafted))
    assert "/" not in folder and "." not in folder and "<" not in folder and ":" not in folder
    same_name_other_size = parse('mb1ic4ih16oc4kh3n"../../etc/<script>:x"')
    assert case_folder(_case("torch", spec=same_name_other_size)) != folder
    assert case_folder(_case("im2col", spec=crafted)) == folder  # backends share a case folder
    assert worker_name(_case("winograd-f4")) == "winograd-f4_cpu_float32"


def test_steps_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="steps"):
        profile_ready(ready(_case("torch")), tmp_path, steps=0)


def _convbench(tmp_path: Path, *args: str) -> tuple[str, Path, list[dict]]:
    """Run ``convbench ARGS --out DIR`` successfully: its stdout, run folder and records."""
    out = tmp_path / "res"
    proc = run_cli(*args, "--spec", SPEC.format(), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "USDT" not in proc.stderr  # kineto's start/stop lines are kept out
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    lines = (run / "records.jsonl").read_text().splitlines()
    return proc.stdout, run, [json.loads(line) for line in lines]


def test_profile_command_writes_traces_and_prints_stages(tmp_path: Path) -> None:
    stdout, run, records = _convbench(
        tmp_path, "profile", "--backend", "winograd-f4,torch", "--steps", "2"
    )
    assert [r["backend"] for r in records] == ["winograd-f4", "torch"]
    for r in records:
        assert r["status"] == "ok" and r["median_s"] > 0 and r["profile_s"] > 0
        assert (run / r["trace"]).is_file() and r["trace"].startswith("traces/")
        assert str(run / r["trace"]) in stdout
    assert set(CALL_STAGES["winograd-f4"]) <= set(records[0]["stages"])
    assert "aten::conv2d" in records[1]["stages"]
    for stage in CALL_STAGES["winograd-f4"]:
        assert stage in stdout
    assert f"tensorboard --logdir {run / 'traces'}" in stdout


def test_run_profile_traces_every_case_and_resume_refuses_it(tmp_path: Path) -> None:
    _, run, records = _convbench(
        tmp_path, "run", "--backend", "fft-torch,direct", "--quick", "--profile"
    )
    assert json.loads((run / "run.json").read_text())["profile_steps"] == 5
    for r in records:
        assert (run / r["trace"]).is_file()
        assert set(CALL_STAGES[r["backend"]]) <= set(r["stages"])
    proc = run_cli("run", "--resume", run.name, "--profile", "--out", str(run.parent), cwd=tmp_path)
    assert proc.returncode == 2 and "drop --profile" in proc.stderr


def test_profile_shows_names_that_look_like_markup(tmp_path: Path) -> None:
    spec = 'mb1ic4ih8oc4kh3ph1n"[/oops][bold]x"'
    proc = run_cli("profile", "--spec", spec, "--backend", "torch", "--steps", "1",
                   "--out", str(tmp_path), cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "[/oops][bold]x | torch" in proc.stdout


def test_profile_needs_problems(tmp_path: Path) -> None:
    proc = run_cli("profile", "--backend", "torch", "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "convbench: error: profile needs problems: --spec DESC (or --suite, --batch-file, --grid)"
    ]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> object:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_tensorboard_lists_the_profiled_case(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard", reason="the 'profiling' extra is not installed")
    pytest.importorskip("torch_tb_profiler", reason="the 'profiling' extra is not installed")
    traces = tmp_path / "traces"
    case = _case("winograd-f4")
    profile_ready(ready(case), traces, steps=2)
    port = _free_port()
    log = tmp_path / "tensorboard.log"
    with open(log, "w") as sink:  # a file, not a pipe nobody reads while polling
        server = subprocess.Popen(
            [sys.executable, "-m", "tensorboard.main", "--logdir", str(traces),
             "--host", "127.0.0.1", "--port", str(port)],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
    api = f"http://127.0.0.1:{port}/data/plugin/pytorch_profiler"
    try:
        deadline, runs = time.monotonic() + 120, {}
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-2000:]
            try:
                runs = _get(f"{api}/runs")
            except OSError:  # not listening yet
                runs = {}
            if case_folder(case) in runs.get("runs", []) and not runs.get("loading"):  # type: ignore[union-attr]
                break
            time.sleep(0.5)
        assert runs.get("runs") == [case_folder(case)], runs  # type: ignore[union-attr]
        run = case_folder(case)
        views = _get(f"{api}/views?run={run}")
        assert {"Overview", "Operator", "Trace", "Memory"} <= set(views)  # type: ignore[arg-type]
        workers = _get(f"{api}/workers?run={run}&view=Overview")
        assert workers == [worker_name(case)]
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_a_failed_profile_keeps_the_timing(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path)
    (store.path / "traces").write_text("a file where the traces folder should be")
    config = SweepConfig(["torch"], timing=TimingConfig.quick(), profile_steps=2)
    made: list[Record] = []
    case = Case(Workload(SPEC, "randn"), "torch", "cpu", "float32")
    run_cases([case], config, store.run_id, store.path, lambda c, r: made.append(r))
    (record,) = made
    assert record.status == "ok" and record.median_s and record.median_s > 0
    assert record.trace == "" and record.stages == {}
    assert record.reason.startswith("not profiled: ")
