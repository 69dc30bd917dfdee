"""The ``convbench`` command as a user meets it: in a subprocess, with real runs on disk."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import default_sigint, run_cli

from convbench.results import RunStore
from convbench.spec import parse

TESTS = Path(__file__).resolve().parent


def _run_dirs(out: Path) -> list[Path]:
    return sorted(p for p in out.iterdir() if p.is_dir()) if out.exists() else []


def _records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]


def test_version(tmp_path: Path) -> None:
    proc = run_cli("--version", cwd=tmp_path)
    assert proc.returncode == 0
    assert proc.stdout.startswith("convbench ")


def test_run_writes_records_environment_and_summary(tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = run_cli(
        "run",
        "--backend",
        "torch",
        "--suite",
        "smoke",
        "--suite",
        "seed",
        "--quick",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = _run_dirs(out)
    records = _records(run)
    assert len(records) == 8
    required = {
        "schema_version",
        "run_id",
        "spec",
        "name",
        "backend",
        "device",
        "dtype",
        "status",
        "reason",
        "median_s",
        "iqr_s",
        "min_s",
        "mean_s",
        "repeats",
        "samples_s",
        "gflops",
        "prepare_s",
        "peak_bytes",
        "prepare_bytes",
        "rel_l2_error",
        "max_abs_error",
        "tolerance",
        "noisy",
        "algorithm",
    }
    for r in records:
        assert required <= r.keys()
        assert r["status"] == "ok" and r["run_id"] == run.name
        assert r["repeats"] == len(r["samples_s"]) >= 3
        assert r["min_s"] <= r["median_s"] <= max(r["samples_s"])
        assert r["rel_l2_error"] <= r["tolerance"]
        out_bytes = 4 * math.prod(parse(r["spec"]).output_shape)
        assert r["peak_bytes"] >= out_bytes and r["prepare_bytes"] >= 0  # the output, at least
    seed = next(r for r in records if r["name"] == "seed:worked_example")
    assert seed["rel_l2_error"] == 0.0 and seed["fill"] == "seed"
    env = json.loads((run / "environment.json").read_text())
    assert env["threads"] >= 1 and env["torch"] and env["gemm_gflops"]["cpu"] > 0
    assert "convbench summary" in proc.stdout and "smoke:depthwise" in proc.stdout
    assert str(run) in proc.stdout
    assert "[8/8] ok" in proc.stderr  # one status line per case when not on a terminal


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["run", "--suite", "nope"], "unknown suite 'nope'"),
        (["run", "--backend", "torch,nope"], "unknown backend 'nope'"),
        (["run", "--spec", "mb2ic3ih5oc4kh7"], "does not fit"),
        (["run", "--spec", "mb2ic3ih5oc4kh3zz1"], "cannot read"),
        (["run", "--spec", "g2ic3ih5oc4kh3"], "not divisible by groups"),
        (["run", "--spec", "ic3id5oc4kd3"], "3-D convolution is not supported"),
        (["run", "--batch-file", "does/not/exist"], "cannot read batch file"),
        (["run", "--dtype", "int8"], "unknown dtype"),
        (["run", "--max-memory", "lots"], "not a size"),
        (["run", "--threads", "0"], "at least 1"),
        (["run", "--grid", "kh=a"], "grid items"),
        (["run", "--resume", "no-such-run"], "no run 'no-such-run'"),
        (["run", "--bogus"], "unrecognized arguments"),
        (["list", "cases"], "needs a suite name"),
        (["list", "cases", "nope"], "unknown suite"),
        ([], "required"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path: Path, argv: list[str], needle: str) -> None:
    proc = run_cli(*argv, cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("convbench: error:") and needle in lines[0]
    assert not (tmp_path / "results").exists()  # nothing half-made on disk


def test_unreadable_batch_line_names_file_and_line(tmp_path: Path) -> None:
    batch = tmp_path / "shapes"
    batch.write_text("# a comment\n\nmb1ic4ih8oc4kh3ph1\nmb1ic4ih8oc4kh3ph1zz\n")
    proc = run_cli("run", "--batch-file", str(batch), cwd=tmp_path)
    assert proc.returncode == 2
    assert f"{batch}:4:" in proc.stderr


def test_failing_backend_is_isolated_and_exit_1(tmp_path: Path) -> None:
    out = tmp_path / "res"
    env = {"PYTHONPATH": str(TESTS), "CONVBENCH_PLUGINS": "plugin_backends"}
    proc = run_cli(
        "run",
        "--suite",
        "smoke",
        "--quick",
        "--out",
        str(out),
        "--backend",
        "torch,test-crash-1x1,test-wrong,test-no-stride",
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 1, proc.stderr
    (run,) = _run_dirs(out)
    records = _records(run)
    assert len(records) == 7 * 4  # one failure loses no other case
    by = {(r["name"], r["backend"]): r for r in records}
    crash = by[("smoke:1x1", "test-crash-1x1")]
    assert crash["status"] == "failed"
    assert crash["reason"] == "RuntimeError: deliberate failure on a 1x1 kernel"
    assert by[("smoke:3x3", "test-crash-1x1")]["status"] == "ok"
    wrong = by[("smoke:3x3", "test-wrong")]
    assert wrong["status"] == "inaccurate"
    assert wrong["rel_l2_error"] == pytest.approx(0.01, rel=1e-3)
    assert by[("smoke:3x3_s2", "test-no-stride")]["status"] == "unsupported"
    assert "stride > 1" in by[("smoke:3x3_s2", "test-no-stride")]["reason"]
    assert all(r["status"] == "ok" for r in records if r["backend"] == "torch")
    assert "deliberate failure on a 1x1 kernel" in proc.stdout


def test_unsupported_is_not_a_failure(tmp_path: Path) -> None:
    env = {"PYTHONPATH": str(TESTS), "CONVBENCH_PLUGINS": "plugin_backends"}
    proc = run_cli(
        "run",
        "--spec",
        "mb1ic4ih9oc4kh3sh2",
        "--backend",
        "test-no-stride",
        "--quick",
        "--out",
        str(tmp_path / "res"),
        cwd=tmp_path,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = _run_dirs(tmp_path / "res")
    assert _records(run)[0]["status"] == "unsupported"


def test_max_memory_records_unsupported_without_attempting(tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = run_cli(
        "run",
        "--backend",
        "torch",
        "--spec",
        "mb1ic64ih56oc64kh3ph1",
        "--spec",
        "mb1ic2ih4oc2kh1",
        "--max-memory",
        "64K",
        "--quick",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = _run_dirs(out)
    big, small = _records(run)
    assert big["status"] == "unsupported" and "exceeds --max-memory" in big["reason"]
    assert big["median_s"] is None
    assert small["status"] == "ok"


def test_sources_combine_with_mb_override(tmp_path: Path) -> None:
    batch = tmp_path / "shapes"
    batch.write_text('mb4ic4ih8oc4kh3ph1n"a"\nic2id4oc2kd3n"three_d"\n')
    out = tmp_path / "res"
    proc = run_cli(
        "run",
        "--backend",
        "torch",
        "--spec",
        "mb2ic3ih6oc3kh3",
        "--batch-file",
        str(batch),
        "--grid",
        "ic=2 oc=2,4 ih=5 kh=3",
        "--fuzz",
        "3",
        "--seed",
        "7",
        "--mb",
        "1",
        "--quick",
        "--dtype",
        "float32,float64",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    (run,) = _run_dirs(out)
    records = _records(run)
    assert len(records) == (1 + 1 + 2 + 3) * 2
    assert {r["dtype"] for r in records} == {"float32", "float64"}
    assert all("mb1_" in r["spec"] for r in records)
    assert all(r["seed"] == 7 for r in records)


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_keeps_records_and_resume_completes(
    tmp_path: Path, signum: signal.Signals, code: int
) -> None:
    """Ctrl-C, and SIGTERM (a cancelled CI job, a pre-empted batch job), alike."""
    out = tmp_path / "res"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "convbench",
            "run",
            "--backend",
            "torch",
            "--suite",
            "resnet50",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    deadline = time.monotonic() + 120
    records_file = None
    while time.monotonic() < deadline:
        runs = _run_dirs(out)
        if runs and (runs[0] / "records.jsonl").exists():
            records_file = runs[0] / "records.jsonl"
            if len(records_file.read_text().splitlines()) >= 3:
                break
        time.sleep(0.02)
    assert records_file is not None, "the run wrote no records"
    proc.send_signal(signum)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr
    assert (records_file.parent / "report.html").is_file()
    run = records_file.parent
    partial = _records(run)
    assert 3 <= len(partial) < 23
    assert "--resume " + run.name in stdout
    assert "convbench summary" in stdout  # a partial summary is printed

    # A crash can leave a line cut short; resuming must drop it, not choke on it.
    with open(records_file, "a") as fh:
        fh.write('{"run_id": "cut sh')
    resumed = run_cli("run", "--resume", run.name, "--out", str(out), cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    final = _records(run)
    assert len(final) == 23
    assert final[: len(partial)] == partial  # finished cases were not redone
    keys = [(r["spec"], r["backend"], r["device"], r["dtype"]) for r in final]
    assert len(set(keys)) == 23
    assert len(RunStore.open(out, run.name).records()) == 23


def test_resume_refuses_new_selection(tmp_path: Path) -> None:
    out = tmp_path / "res"
    first = run_cli(
        "run", "--backend", "torch", "--suite", "seed", "--quick", "--out", str(out), cwd=tmp_path
    )
    assert first.returncode == 0
    (run,) = _run_dirs(out)
    proc = run_cli("run", "--resume", run.name, "--suite", "smoke", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2 and "drop --suite" in proc.stderr
    again = run_cli("run", "--resume", run.name, "--out", str(out), cwd=tmp_path)
    assert again.returncode == 0
    assert len(_records(run)) == 1  # nothing left to do, nothing redone


def test_list(tmp_path: Path) -> None:
    suites = run_cli("list", "suites", cwd=tmp_path)
    assert suites.returncode == 0
    for name in (
        "smoke",
        "seed",
        "resnet50",
        "vgg16",
        "alexnet",
        "mobilenet_v2",
        "large_kernel",
        "deepbench",
    ):
        assert name in suites.stdout
    assert "torch" in run_cli("list", "backends", cwd=tmp_path).stdout
    cases = run_cli("list", "cases", "alexnet", "--mb", "8", cwd=tmp_path)
    lines = cases.stdout.strip().splitlines()
    assert len(lines) == 5 and all("mb8_" in line for line in lines)


def test_default_backends_are_those_available_here(tmp_path: Path) -> None:
    from convbench import backends

    out = tmp_path / "res"
    proc = run_cli("run", "--suite", "seed", "--quick", "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    (run,) = _run_dirs(out)
    ran = {r["backend"] for r in _records(run)}
    assert ran == set(backends.available(["cpu"]))
    assert {"torch", "direct", "im2col", "fft-scipy", "fft-torch", "winograd-f4"} <= ran
    assert "torch-cudnn-autotune" not in ran  # CUDA only; the default device is the CPU
    assert all(r["status"] == "ok" for r in _records(run))
