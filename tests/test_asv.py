"""The ready case shared by every timer, the asv suite built on it, and asv itself running it."""

from __future__ import annotations

import importlib
import json
import math
import re
import subprocess
import sys
from pathlib import Path

import json5
import pytest
import torch

from benchmarks import benchmarks as bm
from convbench import backends
from convbench.asv_machine import gpu_fields, machine_file
from convbench.backends.base import UnsupportedConfig
from convbench.inputs import make_inputs
from convbench.suites import get_suite
from convbench.sweep import Case, ready, reference

ROOT = Path(__file__).resolve().parents[1]
SMOKE = {w.spec.name: w for w in get_suite("smoke").workloads()}


def test_ready_is_prepared_checked_and_synchronised() -> None:
    case = Case(SMOKE["smoke:3x3"], "im2col", "cpu", "float32")
    r = ready(case, seed=3)
    assert r.prepare_s >= 0 and r.accurate and r.algorithm
    assert r.tolerance == backends.get("im2col").tolerance(torch.float32, "cpu")
    assert r() is None
    inputs = make_inputs(case.spec, seed=3)
    ref = reference(case.spec, inputs)
    err = (r.run().double() - ref).norm() / ref.norm()
    assert err.item() == pytest.approx(r.accuracy.rel_l2_error, rel=1e-6)


def test_ready_declines_with_the_backends_reason() -> None:
    case = Case(SMOKE["smoke:3x3_s2"], "winograd-f4", "cpu", "float32")
    with pytest.raises(UnsupportedConfig, match="stride"):
        ready(case)


def test_asv_classes_follow_the_suites() -> None:
    for cls, suite in ((bm.Smoke, "smoke"), (bm.Representative, "representative")):
        cases, names, devices = cls.params
        assert cases == [w.spec.name for w in get_suite(suite).workloads()]
        assert names == backends.names() and devices == ["cpu", "cuda"]
        assert cls.param_names == ("case", "backend", "device")
    assert not hasattr(bm, "Resnet50")


@pytest.mark.parametrize("backend", backends.names())
def test_asv_benchmark_runs_or_skips_every_backend(backend: str) -> None:
    bench = bm.Smoke()
    for case in bm.Smoke.params[0]:
        params = (case, backend, "cpu")
        spec = SMOKE[case].spec
        reason = backends.get(backend).supports(spec, "cpu", torch.float32)
        if reason:
            with pytest.raises(NotImplementedError, match=re.escape(reason)):
                bench.setup(*params)
            continue
        bench.setup(*params)
        assert bench.time_conv(*params) is None
        err = bench.track_rel_error(*params)
        assert 0 < err <= backends.get(backend).tolerance(torch.float32, "cpu")
        assert bench.track_peak_bytes(*params) >= 4 * spec.mb * spec.oc * spec.oh * spec.ow


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without CUDA")
def test_asv_cuda_cases_skip_without_a_gpu() -> None:
    with pytest.raises(NotImplementedError, match="no CUDA device"):
        bm.Smoke().setup("smoke:3x3", "torch", "cuda")


def test_more_suites_are_one_variable_away(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONVBENCH_ASV_SUITES", "resnet50, large_kernel")
    try:
        more = importlib.reload(bm)
        assert more.Resnet50.params[0] == [w.spec.name for w in get_suite("resnet50").workloads()]
        assert more.LargeKernel.__doc__ == get_suite("large_kernel").description
        assert more.Smoke.params == bm.Smoke.params
    finally:
        monkeypatch.delenv("CONVBENCH_ASV_SUITES")
        importlib.reload(bm)


def _asv(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "asv", *args], cwd=cwd, capture_output=True, text=True, timeout=600
    )


def test_asv_checks_runs_and_publishes_the_suite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """asv itself, in this environment: the machine entry with its GPU fields, ``asv check``,
    a quick run of a slice saved for this commit, and ``asv publish`` of it."""
    monkeypatch.setenv("HOME", str(tmp_path))
    conf = json5.loads((ROOT / "asv.conf.json").read_text())
    conf.update(
        repo=str(ROOT),
        benchmark_dir=str(ROOT / "benchmarks"),
        results_dir=str(tmp_path / "results"),
        html_dir=str(tmp_path / "html"),
        env_dir=str(tmp_path / "env"),
    )
    config = tmp_path / "asv.conf.json"
    config.write_text(json.dumps(conf))

    entry = subprocess.run(
        [sys.executable, "-m", "convbench", "asv-machine", "--machine", "ci"],
        capture_output=True,
        text=True,
    )
    assert entry.returncode == 0, entry.stderr
    saved = json.loads(machine_file().read_text())["ci"]
    assert {k: saved[k] for k in gpu_fields()} == gpu_fields()

    check = _asv("--config", str(config), "check", "-E", "existing", cwd=tmp_path)
    assert check.returncode == 0 and "No problems found" in check.stdout, check.stdout

    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.strip()
    run = _asv(
        "--config", str(config), "run", "-E", "existing", "--quick", "--machine", "ci",
        "--bench", r"Smoke\.track_rel_error", "--set-commit-hash", head, cwd=tmp_path,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    (result,) = (tmp_path / "results" / "ci").glob(f"{head[:8]}-existing-*.json")
    saved = json.loads(result.read_text())
    assert saved["params"]["gpu"] == gpu_fields()["gpu"]
    values = saved["results"]["benchmarks.Smoke.track_rel_error"][0]
    measured = [v for v in values if v is not None and not math.isnan(v)]  # skipped: NaN
    assert measured and all(0 < v < 1e-4 for v in measured)

    publish = _asv("--config", str(config), "publish", cwd=tmp_path)
    assert publish.returncode == 0, publish.stdout + publish.stderr
    index = json.loads((tmp_path / "html" / "index.json").read_text())
    assert "benchmarks.Smoke.track_rel_error" in index["benchmarks"]
    assert "gpu" in index["params"]
