"""The regression gate, on a real pytest-benchmark run of tests/perf and edits of its numbers."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from conftest import run_cli

from convbench.gate import (
    SEP,
    YARDSTICK,
    GateError,
    load_run,
    machine_of,
    make_baseline,
    ratios,
    read_baselines,
)
from convbench.verdicts import judge_ratios as judge

ROOT = Path(__file__).resolve().parents[1]
SLOWED = "fft-torch"


@pytest.fixture(scope="module")
def run_json(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A short, real benchmark run of two smoke cases for every backend, yardstick included."""
    out = tmp_path_factory.mktemp("perf") / "run.json"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/perf",
         "-k", "smoke:3x3- or smoke:1x1-", "--benchmark-enable", "--benchmark-max-time=0.02",
         "--benchmark-min-rounds=3", f"--benchmark-json={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    return out


def _scaled(run: dict[str, Any], factor: float, backends: set[str] | None = None) -> dict:
    """The run with the times of ``backends`` (all, by default) multiplied by ``factor``."""
    out = copy.deepcopy(run)
    for bench in out["benchmarks"]:
        if backends is None or bench["extra_info"]["backend"] in backends:
            for stat in ("min", "median", "mean", "max"):
                bench["stats"][stat] *= factor
    return out


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(json.dumps(data))
    return path


def test_benchmarks_carry_what_the_gate_and_readers_need(run_json: Path) -> None:
    run = load_run(run_json)
    by_backend = {b["extra_info"]["backend"]: b for b in run["benchmarks"]}
    assert YARDSTICK in by_backend and SLOWED in by_backend and "torch" in by_backend
    for bench in run["benchmarks"]:
        info = bench["extra_info"]
        assert bench["group"] == f"{info['case']} cpu float32"
        assert info["spec"].endswith(f'n"{info["case"]}"') and info["flops"] > 0
        assert info["gflops"] > 0 and bench["stats"]["rounds"] >= 3
        if info["backend"] != YARDSTICK:
            assert 0 < info["rel_l2_error"] <= info["tolerance"] and info["algorithm"]
            assert info["peak_bytes"] > 0 and info["prepare_bytes"] >= 0
    r = ratios(run)
    assert len(r) == len(run["benchmarks"]) - 2  # one yardstick per case
    assert all(v > 0 for v in r.values())


def test_unchanged_and_machine_wide_slowdowns_pass(run_json: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    wrote = run_cli(
        "gate", str(run_json), "--write-baseline", "--baseline", str(baseline), cwd=ROOT
    )
    assert wrote.returncode == 0, wrote.stderr
    (written,) = json.loads(baseline.read_text())["baselines"]
    assert written["ratios"] == ratios(load_run(run_json))

    same = run_cli("gate", str(run_json), "--baseline", str(baseline), cwd=ROOT)
    assert same.returncode == 0 and "gate: PASSED" in same.stdout, same.stdout

    slow_machine = _write(tmp_path / "slow-machine.json", _scaled(load_run(run_json), 3.0))
    done = run_cli("gate", str(slow_machine), "--baseline", str(baseline), cwd=ROOT)
    assert done.returncode == 0 and "gate: PASSED" in done.stdout, done.stdout


def test_one_backend_twice_as_slow_fails(run_json: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    run_cli("gate", str(run_json), "--write-baseline", "--baseline", str(baseline), cwd=ROOT)
    slowed = _write(tmp_path / "slowed.json", _scaled(load_run(run_json), 2.0, {SLOWED}))
    done = run_cli("gate", str(slowed), "--baseline", str(baseline), cwd=ROOT)
    assert done.returncode == 1, done.stdout
    assert "gate: FAILED" in done.stdout and f"{SLOWED} 2.00x on its mean" in done.stdout
    assert "Traceback" not in done.stdout + done.stderr
    slower = [line for line in done.stdout.splitlines() if line.strip().startswith("slower")]
    assert slower and all(f"{SEP}{SLOWED} 2.00x" in line for line in slower)


def test_a_stall_in_one_of_two_runs_passes_and_a_slowdown_in_both_fails(
    run_json: Path, tmp_path: Path
) -> None:
    """What CI does when the gate fails a run: it times the suite again and judges the two
    newest runs together (``--newest 2``), each ratio their median. One benchmark stalled to
    twice its time in one run fails that run alone and passes beside an ordinary one;
    twice as slow in both, it fails. Three newest, where the storage holds two, is bad input."""
    run = load_run(run_json)
    baseline = tmp_path / "baseline.json"
    run_cli("gate", str(run_json), "--write-baseline", "--baseline", str(baseline), cwd=ROOT)
    stalled = copy.deepcopy(run)
    (bench,) = (
        b
        for b in stalled["benchmarks"]
        if (b["extra_info"]["case"], b["extra_info"]["backend"]) == ("smoke:3x3", SLOWED)
    )
    bench["stats"]["min"] *= 2.0
    storage = tmp_path / "results" / "benchmarks" / "machine"
    storage.mkdir(parents=True)
    # The stalled run is the newest by modification time, a second after an ordinary one, so
    # that the newest alone would fail where the two together pass.
    ordinary = _write(storage / "0001_ordinary.json", run)
    stall = _write(storage / "0002_stall.json", stalled)
    os.utime(stall, (ordinary.stat().st_mtime + 1,) * 2)
    verdicts = {}
    for name, args in {
        "alone": [str(stall)],
        "with": ["--newest", "2"],
        "both": [str(stall), str(stall)],
        "three of two": ["--newest", "3"],
    }.items():
        done = run_cli("gate", *args, "--baseline", str(baseline), cwd=tmp_path)
        verdicts[name] = done.returncode
        if done.returncode == 1:
            assert f"slower   smoke:3x3{SEP}cpu{SEP}float32{SEP}{SLOWED} 2.00x" in done.stdout
    assert verdicts == {"alone": 1, "with": 0, "both": 1, "three of two": 2}
    assert "2 pytest-benchmark JSON file(s)" in done.stderr and "Traceback" not in done.stderr


def test_each_cpu_is_judged_against_its_own_baseline(run_json: Path, tmp_path: Path) -> None:
    """A run on another CPU, where one backend runs twice as slow against torch's convolution
    as on the first, fails against the first CPU's baseline and says whose it is; with its own
    written beside the first, each CPU's run passes against its own, and writing one CPU's
    again keeps the other's. A file of one baseline, as the gate wrote before, still reads."""
    run = load_run(run_json)
    baseline = tmp_path / "baseline.json"
    run_cli("gate", str(run_json), "--write-baseline", "--baseline", str(baseline), cwd=ROOT)
    elsewhere = _scaled(run, 2.0, {SLOWED})
    elsewhere["machine_info"]["cpu"]["brand_raw"] = "Another CPU"
    other = _write(tmp_path / "other.json", elsewhere)
    done = run_cli("gate", str(other), "--baseline", str(baseline), cwd=ROOT)
    assert done.returncode == 1 and "gate: FAILED" in done.stdout, done.stdout
    assert f"no baseline measured on {machine_of(elsewhere)!r}" in " ".join(done.stdout.split())
    for _ in range(2):
        wrote = run_cli(
            "gate", str(other), "--write-baseline", "--baseline", str(baseline), cwd=ROOT
        )
        assert wrote.returncode == 0, wrote.stderr
        entries = read_baselines(baseline)
        assert [e["machine"] for e in entries] == [machine_of(run), machine_of(elsewhere)]
    for path in (run_json, other):
        done = run_cli("gate", str(path), "--baseline", str(baseline), cwd=ROOT)
        assert done.returncode == 0 and "gate: PASSED" in done.stdout, done.stdout
        assert "note:" not in done.stdout
    single = _write(tmp_path / "single.json", make_baseline([run]))
    assert read_baselines(single) == [make_baseline([run])]
    done = run_cli("gate", str(run_json), "--baseline", str(single), cwd=ROOT)
    assert done.returncode == 0 and "gate: PASSED" in done.stdout, done.stdout


def test_a_cpu_without_a_baseline_is_judged_against_its_brands(
    run_json: Path, tmp_path: Path
) -> None:
    """A CPU is named by its brand, family and model; one without a baseline of its own (another
    model of the same brand) is judged against its brand's, not the file's first, and told so:
    with fft-torch twice as slow it fails against its brand's, where it would pass against the
    first, another brand's measured with fft-torch as slow."""
    run = load_run(run_json)
    cpu = run["machine_info"]["cpu"]
    assert machine_of(run) == f"{cpu['brand_raw']} (family {cpu['family']}, model {cpu['model']})"
    stranger = _scaled(run, 2.0, {SLOWED})
    stranger["machine_info"]["cpu"]["brand_raw"] = "Another CPU"
    baseline = _write(
        tmp_path / "baseline.json",
        {"baselines": [make_baseline([stranger]), make_baseline([run])]},
    )
    sibling = _scaled(run, 2.0, {SLOWED})
    sibling["machine_info"]["cpu"]["model"] = cpu["model"] + 1
    done = run_cli(
        "gate", str(_write(tmp_path / "sibling.json", sibling)), "--baseline", str(baseline),
        cwd=ROOT,
    )  # fmt: skip
    said = " ".join(done.stdout.split())
    assert done.returncode == 1 and "gate: FAILED" in said, done.stdout
    assert f"no baseline measured on {machine_of(sibling)!r}" in said
    assert f"judged against the baseline of {machine_of(run)!r}" in said


def test_a_missing_benchmark_fails_and_a_new_one_does_not(run_json: Path, tmp_path: Path) -> None:
    run = load_run(run_json)
    fewer = copy.deepcopy(run)
    fewer["benchmarks"] = [b for b in run["benchmarks"] if b["extra_info"]["backend"] != "im2col"]
    base = make_baseline([fewer])["ratios"]
    assert judge(ratios(run), base).passed
    verdicts = judge(ratios(fewer), ratios(run))
    assert not verdicts.passed and {v.backend for v in verdicts.having("missing")} == {"im2col"}


def test_judge_counts_a_backend_slowed_a_little_everywhere() -> None:
    base = {f"c{i}{SEP}cpu{SEP}float32{SEP}b": 1.0 for i in range(10)}
    now = {k: 1.3 for k in base}  # under the per-benchmark 1.8x, over the mean's 1.25x
    j = judge(now, base)
    assert not j.having("slower") and j.slower_backends == ["b"] and not j.passed
    assert j.backend_change["b"] == pytest.approx(1.3)


def test_bad_input_is_one_line_and_exit_2(run_json: Path, tmp_path: Path) -> None:
    junk = tmp_path / "junk.json"
    junk.write_text("not json")
    done = run_cli("gate", str(junk), cwd=ROOT)
    assert done.returncode == 2 and done.stderr.startswith("convbench: error: cannot read")
    assert len(done.stderr.strip().splitlines()) == 1

    run = load_run(run_json)
    run["benchmarks"] = [b for b in run["benchmarks"] if b["extra_info"]["backend"] != YARDSTICK]
    with pytest.raises(GateError, match="no yardstick"):
        ratios(run)
    done = run_cli("gate", str(_write(tmp_path / "r.json", run)), cwd=ROOT)
    assert done.returncode == 2 and "no yardstick" in done.stderr

    done = run_cli("gate", str(run_json), "--threshold", "0.9", cwd=ROOT)
    assert done.returncode == 2 and "must be above 1" in done.stderr


def test_a_baseline_at_another_thread_count_is_refused(run_json: Path, tmp_path: Path) -> None:
    baseline = tmp_path / "baseline.json"
    run_cli("gate", str(run_json), "--write-baseline", "--baseline", str(baseline), cwd=ROOT)
    run = load_run(run_json)
    threads = run["benchmarks"][0]["extra_info"]["threads"]
    for bench in run["benchmarks"]:
        bench["extra_info"]["threads"] = threads + 1
    other = _write(tmp_path / "other.json", run)
    done = run_cli("gate", str(other), "--baseline", str(baseline), cwd=ROOT)
    assert done.returncode == 2 and f"--perf-threads={threads}" in done.stderr, done.stderr
