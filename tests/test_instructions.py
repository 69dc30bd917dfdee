"""Instruction counts under callgrind, for real: valgrind runs, nothing is mocked.

Every valgrind process pays some 20 s of imports before it counts anything, so the counting
tests share ONE job (a module-scoped fixture) and the command line is run once end to end; the
verdict tests and the one without valgrind need none.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

from convbench.instructions import CountRun, count_in_parts, valgrind_reason
from convbench.results import RunStore
from convbench.spec import parse
from convbench.suites import Workload
from convbench.sweep import Case
from convbench.verdicts import count_changes

TESTS = Path(__file__).parent
NO_VALGRIND = valgrind_reason()
needs_valgrind = pytest.mark.skipif(NO_VALGRIND is not None, reason=str(NO_VALGRIND))

SMALL = "mb1ic16ih14oc16oh14kh3ph1"
WIDER = "mb1ic64ih14oc16oh14kh3ph1"  # the same layer with four times the input channels


def _case(spec: str, backend: str = "torch", device: str = "cpu") -> Case:
    return Case(Workload(parse(spec)), backend, device, "float32")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("callgrind")


@pytest.fixture(scope="module")
def counted(workdir: Path, tmp_path_factory: pytest.TempPathFactory) -> CountRun:
    """One counting pass for every counting test, in two valgrind processes at once (as the
    gate counts). In the first, the same case twice, on either side of a Winograd case (whose
    Numba kernels keep a thread pool of their own) and a backend that raises in prepare (a
    plugin, loaded in the child as the CLI loads it), then that Winograd case again; in the
    second, a wider layer, the definition, the same Winograd case, and a CUDA case that is
    never sent to valgrind. Numba's cache starts empty and logs what it loads and saves, to
    show where the kernels are compiled."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])),
        "CONVBENCH_PLUGINS": "plugin_backends",
        "NUMBA_CACHE_DIR": str(tmp_path_factory.mktemp("numba-cache")),
        "NUMBA_DEBUG_CACHE": "1",
    }
    cases = [
        _case(SMALL),
        _case(SMALL, "winograd-f4"),
        _case(SMALL, "test-hostile"),
        _case(SMALL),
        _case(SMALL, "winograd-f4"),
        _case(WIDER),
        _case(SMALL, "direct"),
        _case(SMALL, "winograd-f4"),
        _case(SMALL, device="cuda"),
    ]
    return count_in_parts(cases, 2, env=env, workdir=workdir)


@needs_valgrind
def test_numba_compiles_outside_valgrind_and_valgrind_loads_it(
    counted: CountRun, workdir: Path
) -> None:
    """Compiling the Winograd kernels under valgrind takes minutes: the native probe must
    compile them for the target the counted pass asks for, so that the counted pass finds them
    in the cache (Numba's cache key holds the CPU's name and its feature string)."""
    probes = [(part / "probe.log").read_text() for part in sorted(workdir.glob("part-*"))]
    valgrinds = [(part / "child.log").read_text() for part in sorted(workdir.glob("part-*"))]
    assert len(probes) == len(valgrinds) == 2
    assert any("data saved" in probe for probe in probes)  # the other part's may load it
    assert all("data loaded" in log and "data saved" not in log for log in valgrinds)


@needs_valgrind
def test_counts_are_positive_per_call_and_say_what_was_counted(counted: CountRun) -> None:
    ok = [c for c in counted.counts if c.status == "ok"]
    assert len(ok) == 7
    assert all(c.instructions and c.instructions > 10_000 for c in ok)
    info = counted.info
    assert info["calls"] == 1 and info["threads"] == 1 and info["cache_sim"] is False
    assert info["valgrind"].startswith("valgrind-")
    for side in ("counted", "timed"):
        assert info[side]["onednn_isa"] != "unknown" and info[side]["cpu_capability"]
    assert "AVX512" not in info["counted"]["cpu_capability"]  # valgrind emulates no AVX-512


@needs_valgrind
@pytest.mark.parametrize(("backend", "within"), [("torch", 1e-3), ("winograd-f4", 1e-2)])
def test_the_same_case_counts_the_same(counted: CountRun, backend: str, within: float) -> None:
    """Also torch's case once Numba's kernels have run: no idle pool spins beside it; and in
    either process. The first Winograd case of a process is the first to go through Numba's
    dispatcher, and counts 0.4-0.6 % more than the same case later (from run to run, each
    counts the same to the instruction, which is what the gate compares): inside the gate's
    2 % margin."""
    small = parse(SMALL).format()
    first, *again = (
        c.instructions
        for c in counted.counts
        if (c.spec, c.backend, c.device) == (small, backend, "cpu")
    )
    assert first and again and all(again)
    assert all(abs(n / first - 1) < within for n in again)


@needs_valgrind
def test_more_arithmetic_counts_more(counted: CountRun) -> None:
    by = {(c.spec, c.backend): c.instructions for c in counted.counts if c.device == "cpu"}
    assert by[(parse(WIDER).format(), "torch")] > 2 * by[(parse(SMALL).format(), "torch")]


@needs_valgrind
def test_a_failing_case_fails_alone(counted: CountRun) -> None:
    (failed,) = counted.failures
    assert failed.backend == "test-hostile"
    assert failed.reason == "RuntimeError: deliberate failure"
    assert failed.instructions is None
    (cuda,) = (c for c in counted.counts if c.device == "cuda")
    assert cuda.status == "unsupported" and cuda.instructions is None


def test_verdicts_on_the_margin() -> None:
    base = {"a": 1_000_000.0, "b": 1_000_000.0, "c": 1_000_000.0, "gone": 5.0}
    now = {"a": 1_021_000.0, "b": 1_019_000.0, "c": 900_000.0, "added": 7.0}
    verdicts = {ch.key: ch.verdict for ch in count_changes(now, base, margin=2.0)}
    assert verdicts == {
        "a": "slower",
        "b": "unchanged",
        "c": "faster",
        "gone": "missing",
        "added": "new",
    }
    (a,) = (ch for ch in count_changes(now, base) if ch.key == "a")
    assert a.change_pct == pytest.approx(2.1)
    assert {ch.verdict for ch in count_changes({"b": 1_019_000.0}, base, 1.0)} >= {"slower"}


@needs_valgrind
def test_run_instructions_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "res"
    proc = run_cli(
        "run", "--spec", SMALL, "--backend", "torch,im2col", "--quick", "--instructions",
        "--threads", "1", "--out", str(out), cwd=tmp_path, timeout=900,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    (run,) = out.iterdir()
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    counts = json.loads((run / "instructions.json").read_text())
    assert {c["backend"] for c in counts["cases"]} == {"torch", "im2col"}
    assert "instructions: 2 cases counted" in proc.stdout
    merged = RunStore(out, run.name).records()
    assert len(merged) == len(records) == 2
    assert all(r.instructions and r.instructions > 10_000 for r in merged)


def test_instructions_without_valgrind_is_a_usage_error(tmp_path: Path) -> None:
    """With valgrind off PATH, ``--instructions`` stops before any timing: one line, exit 2."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "python").symlink_to(sys.executable)
    env = {**os.environ, "PATH": str(bindir)}
    assert shutil.which("valgrind", path=env["PATH"]) is None
    proc = subprocess.run(
        [sys.executable, "-m", "convbench", "run", "--spec", SMALL, "--instructions",
         "--out", str(tmp_path / "res")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "convbench: error: --instructions: valgrind is not on PATH "
        "(install it: apt-get install valgrind)"
    ]
    assert not (tmp_path / "res").exists()
