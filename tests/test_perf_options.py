"""The three ways tests/perf is run — the README's plain ``python -m pytest``, pytest-benchmark's
usual ``--benchmark-only`` and .ci/run's ``--benchmark-enable --benchmark-autosave`` — each on one
smoke benchmark and one plain test, in a fresh pytest, checking whether the benchmark was timed.

Benchmarks are disabled by default from tests/conftest.py rather than by ``--benchmark-disable``
in ``addopts``, which pytest-benchmark refuses together with ``--benchmark-only``.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BENCH = "smoke:3x3-cpu-torch"
PLAIN = "tests/test_spec.py::test_defaults"
# One round, no calibration time: timed, but in a fraction of a second.
QUICK = ["--benchmark-min-rounds=1", "--benchmark-max-time=0", "--benchmark-warmup=off"]


def _pytest(*args: str, storage: Path) -> subprocess.CompletedProcess[str]:
    """``python -m pytest tests/perf PLAIN ARGS`` from the repository root, with the benchmark
    storage and JSON in ``storage`` (not the repository's results/)."""
    return subprocess.run(
        [sys.executable, "-m", "pytest", "tests/perf", PLAIN, "-k", f"{BENCH} or test_defaults",
         "-rs", "-p", "no:cacheprovider", f"--benchmark-storage={storage}",
         f"--benchmark-json={storage / 'run.json'}", *QUICK, *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def _timed(storage: Path) -> list[dict]:
    """The benchmarks of the run's JSON that carry timings (none when it wrote no JSON)."""
    path = storage / "run.json"
    if not path.exists():
        return []
    return [b for b in json.loads(path.read_text())["benchmarks"] if b["stats"]["rounds"] >= 1]


def test_plain_run_checks_benchmarks_once_untimed(tmp_path: Path) -> None:
    done = _pytest(storage=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout
    assert _timed(tmp_path) == [] and "benchmark '" not in done.stdout


def test_benchmark_only_times_benchmarks_and_skips_the_rest(tmp_path: Path) -> None:
    done = _pytest("--benchmark-only", storage=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "1 passed, 1 skipped" in done.stdout
    assert "Skipping non-benchmark (--benchmark-only active)" in done.stdout
    assert [b["name"] for b in _timed(tmp_path)] == [f"test_conv[{BENCH}]"]


def test_ci_run_times_autosaves_and_keeps_the_thread_count(tmp_path: Path) -> None:
    done = _pytest("--benchmark-enable", "--benchmark-autosave", "--perf-threads=1",
                   storage=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "2 passed" in done.stdout
    (timed,) = _timed(tmp_path)
    assert timed["extra_info"]["threads"] == 1
    (saved,) = tmp_path.glob("*/0001_*.json")
    assert json.loads(saved.read_text())["benchmarks"][0]["name"] == timed["name"]
