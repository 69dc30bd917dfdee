"""``convbench compare``: the verdicts on made-up records, then two real runs that differ by an
injected slowdown and an injected loss of accuracy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import Visit, run_cli

from convbench.results import Record
from convbench.verdicts import compare, environment_diff

TESTS = Path(__file__).resolve().parent
PLUGINS = {"PYTHONPATH": str(TESTS), "CONVBENCH_PLUGINS": "plugin_backends"}


def _record(spec: str, backend: str = "b", *, status: str = "ok", median: float | None = 1e-3,
            n: int = 20, error: float | None = 1e-7, seed: int = 0) -> Record:  # fmt: skip
    rng = np.random.default_rng(seed)
    samples = [] if median is None else list(median * (1 + 0.01 * rng.standard_normal(n)))
    return Record(
        run_id="r", spec=spec, name=spec, backend=backend, device="cpu", dtype="float32",
        status=status, median_s=median, samples_s=samples, rel_l2_error=error, tolerance=1e-5,
    )  # fmt: skip


def _verdicts(base: list[Record], new: list[Record], **kw: float) -> dict[str, str]:
    c = compare(base, new, **kw)
    return {ch.key[0] + "/" + ch.key[1]: ch.verdict for ch in c.changes}


def test_verdicts() -> None:
    base = [
        _record("same"), _record("slow"), _record("fast"), _record("small"),
        _record("err", error=1e-7), _record("tol"), _record("better", status="inaccurate",
        error=1e-3), _record("crash"), _record("gone"), _record("was-unsupported",
        status="unsupported", median=None, error=None), _record("few", n=3),
        _record("few-big", median=0.1, n=3), _record("exact", error=0.0),
    ]  # fmt: skip
    new = [
        _record("same", seed=1), _record("slow", median=1.5e-3, seed=1),
        _record("fast", median=0.5e-3, seed=1), _record("small", median=1.05e-3, seed=1),
        _record("err", error=3e-7, seed=1), _record("tol", status="inaccurate", error=2e-5),
        _record("better", error=1e-7), _record("crash", status="failed", median=None),
        _record("added"), _record("was-unsupported"), _record("few", median=1.05e-3, n=3),
        _record("few-big", median=0.5, n=3), _record("exact", error=1e-18),
    ]  # fmt: skip
    assert _verdicts(base, new) == {
        "same/b": "unchanged",
        "slow/b": "slower",
        "fast/b": "faster",
        "small/b": "unchanged",  # 5 % is significant here, but under the 10 % threshold
        "err/b": "less accurate",  # 3x the error
        "tol/b": "less accurate",  # crossed its tolerance
        "better/b": "more accurate",
        "crash/b": "failed",
        "added/b": "new",
        "gone/b": "missing",
        "was-unsupported/b": "new",
        "few/b": "unchanged",  # under the threshold, and 3 against 3 can never be significant
        "few-big/b": "untested",  # 5x, shown, but not counted without a test
        "exact/b": "unchanged",  # 0 against 1e-18: rounding, far under the tolerance
    }
    worse = {ch.key[0] for ch in compare(base, new).worse}
    assert worse == {"slow", "err", "tol", "crash"}  # what makes the command exit 1
    assert _verdicts(base, new, threshold=2.0)["small/b"] == "slower"
    assert _verdicts(base, new, error_factor=5.0)["err/b"] == "unchanged"


def test_overlapping_samples_are_not_significant() -> None:
    base = [_record("x", median=1e-3, n=6)]
    new = [_record("x", median=1e-3, n=6, seed=9)]
    new[0].samples_s = [s * 1.3 for s in base[0].samples_s[:3]] + base[0].samples_s[3:]
    new[0].median_s = float(np.median(new[0].samples_s))
    (change,) = compare(base, new).changes
    assert change.ratio is not None and change.ratio > 1.1  # over the threshold...
    assert change.p_value is not None and change.p_value > 0.05  # ...but not significant
    assert change.verdict == "unchanged"


def _pair(spec: str, ratio: float, *, rounds: int = 30, drift: float = 0.3, noise: float = 0.01,
          seed: int = 0) -> tuple[Record, Record]:  # fmt: skip
    """Two sides of an ``ab`` case: each round's time drifts by up to ``drift`` (shared by both
    sides), NEW takes ``ratio`` times BASE's, and each side adds its own ``noise``."""
    rng = np.random.default_rng(seed)
    machine = 1e-3 * (1 + drift * rng.random(rounds))
    a = list(machine * (1 + noise * rng.standard_normal(rounds)))
    b = list(machine * ratio * (1 + noise * rng.standard_normal(rounds)))
    base, new = _record(spec), _record(spec)
    base.samples_s, base.median_s = a, float(np.median(a))
    new.samples_s, new.median_s = b, float(np.median(b))
    return base, new


def _paired(pairs: list[tuple[Record, Record]], **kw: float) -> dict[str, str]:
    c = compare([p[0] for p in pairs], [p[1] for p in pairs], paired=True, **kw)
    return {ch.key[0]: ch.verdict for ch in c.changes}


def test_paired_verdicts_from_known_ratios() -> None:
    pairs = [_pair("same", 1.0), _pair("slow5", 1.05), _pair("fast5", 0.95), _pair("slow2", 1.02)]
    kw = {"threshold": 1.0}
    assert _paired(pairs, **kw) == {
        "same": "unchanged", "slow5": "slower", "fast5": "faster", "slow2": "slower",
    }  # fmt: skip
    assert _paired(pairs, threshold=3.0)["slow2"] == "unchanged"  # under the threshold
    # Unpaired, the shared drift of 30 % hides the same 5 % entirely.
    unpaired = compare([p[0] for p in pairs], [p[1] for p in pairs], threshold=1.0)
    assert {ch.key[0]: ch.verdict for ch in unpaired.changes}["slow5"] == "unchanged"
    c = compare([pairs[1][0]], [pairs[1][1]], paired=True)
    (ch,) = c.changes
    assert ch.ratio_ci is not None and ch.ratio_ci[0] <= 1.05 <= ch.ratio_ci[1]


def test_paired_verdicts_are_holm_corrected() -> None:
    # One case with p about 0.01: significant alone, not among 200 unchanged cases.
    alone = [_pair("x", 1.004, rounds=20, noise=0.005, seed=4)]
    c = compare([alone[0][0]], [alone[0][1]], paired=True, threshold=0.0)
    p_alone = c.changes[0].p_value
    assert p_alone is not None and p_alone < 0.05 and c.changes[0].verdict == "slower"
    crowd = alone + [_pair(f"same{i}", 1.0, rounds=20, seed=100 + i) for i in range(199)]
    c = compare([p[0] for p in crowd], [p[1] for p in crowd], paired=True, threshold=0.0)
    x = next(ch for ch in c.changes if ch.key[0] == "x")
    assert x.verdict == "unchanged" and x.p_value is not None and x.p_value > 10 * p_alone
    assert not c.worse and c.paired


def test_a_backend_slower_on_all_its_cases_is_caught_over_them() -> None:
    # Each case of a process pair is off by its own few % (layout, placement): no one case
    # passes the 10 % threshold, but a 5 % slowdown of every case of "slow" shows over the 13.
    rng = np.random.default_rng(7)
    pairs = []
    for backend, shift in (("slow", 1.05), ("same", 1.0)):
        for i in range(13):
            base, new = _pair(f"c{i}", shift * (1 + 0.02 * rng.standard_normal()), seed=i)
            base.backend = new.backend = backend
            pairs.append((base, new))
    c = compare([p[0] for p in pairs], [p[1] for p in pairs], paired=True)
    assert not c.worse  # no case over the threshold
    verdicts = {b.backend: b for b in c.backends}
    assert verdicts["slow"].verdict == "slower" and verdicts["same"].verdict == "unchanged"
    assert verdicts["slow"].ratio.lo <= 1.05 <= verdicts["slow"].ratio.hi
    assert verdicts["slow"].ratio.n == 13 and c.bad
    # Under the backend threshold, or over too few cases to test, nothing counts.
    assert not compare([p[0] for p in pairs], [p[1] for p in pairs], paired=True,
                       backend_threshold=6.0).bad  # fmt: skip
    few = compare([p[0] for p in pairs[:4]], [p[1] for p in pairs[:4]], paired=True)
    assert few.backends[0].p_value is None and not few.bad


def test_too_few_rounds_cannot_be_tested() -> None:
    (ch,) = compare(*map(list, zip(_pair("x", 2.0, rounds=4), strict=True)), paired=True).changes
    assert ch.verdict == "untested" and "4 rounds" in ch.note


def test_environment_diff_is_flat_and_ignores_the_time() -> None:
    a = {"time": "1", "torch": "2.13.0", "gemm_gflops": {"cpu": 100.0}, "gpu": None}
    b = {"time": "2", "torch": "2.14.0", "gemm_gflops": {"cpu": 100.0}, "gpu": {"name": "H200"}}
    assert environment_diff(a, b) == [("gpu.name", None, "H200"), ("torch", "2.13.0", "2.14.0")]


def _real_run(out: Path, **env: str) -> Path:
    before = set(out.iterdir()) if out.exists() else set()
    proc = run_cli(
        "run", "--spec", 'mb1ic8ih12oc8kh3ph1n"small"', "--backend", "torch,test-injected",
        "--threads", "1", "--out", str(out), cwd=out.parent, env={**PLUGINS, **env},
    )  # fmt: skip
    assert proc.returncode in (0, 1), proc.stderr
    (run,) = set(out.iterdir()) - before
    return run


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("compare") / "results"
    return {
        "base": _real_run(out),
        "slow": _real_run(out, CONVBENCH_TEST_DELAY_S="0.002"),
        "wrong": _real_run(out, CONVBENCH_TEST_SCALE="1.001"),
    }


def test_injected_slowdown_fails_the_comparison(
    runs: dict[str, Path],
    tmp_path: Path,
    browser,  # type: ignore[no-untyped-def]
) -> None:
    html = tmp_path / "cmp.html"
    proc = run_cli(
        "compare", str(runs["base"]), str(runs["slow"]), "--html", str(html),
        "--threshold", "100", cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.splitlines()
    (row,) = [line for line in lines if "test-injected" in line]
    assert "slower" in row
    assert "compare: WORSE: 1 slower" in proc.stdout  # torch, unchanged, is not over 100 %
    environment = proc.stdout.find("environment")
    assert -1 < environment < proc.stdout.find("changes")  # the environment comes first

    visit = Visit(browser, html)
    try:
        visit.page.wait_for_function("document.querySelectorAll('div.chart .main-svg').length")
        assert visit.errors == [] and visit.requests == []
        table = visit.page.locator("#changes")
        verdicts = dict(
            zip(
                table.locator("tbody td:nth-child(2)").all_inner_texts(),
                table.locator("tbody td:nth-child(10)").all_inner_texts(),
                strict=True,
            )
        )
        assert verdicts["test-injected"] == "slower"
    finally:
        visit.close()


def test_injected_error_fails_and_a_run_equals_itself(
    runs: dict[str, Path], tmp_path: Path
) -> None:
    proc = run_cli("compare", str(runs["base"]), str(runs["wrong"]), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    (row,) = [line for line in proc.stdout.splitlines() if "test-injected" in line]
    assert "less accurate" in row

    proc = run_cli("compare", str(runs["base"]), str(runs["base"]), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "2 cases: 2 unchanged" in proc.stdout
    assert "environment: the same" in proc.stdout


def test_bad_arguments(runs: dict[str, Path], tmp_path: Path) -> None:
    for args, needle in (
        (["compare", str(runs["base"]), "nope"], "no run folder 'nope'"),
        (["compare", str(runs["base"]), str(runs["base"]), "--threshold", "x"], "not a number"),
        (["compare", str(runs["base"]), str(runs["base"]), "--alpha", "1.5"], "between 0 and 1"),
    ):
        proc = run_cli(*args, cwd=tmp_path)
        assert proc.returncode == 2
        (line,) = proc.stderr.strip().splitlines()
        assert line.startswith("convbench: error:") and needle in line


def test_a_change_of_choice_is_named() -> None:
    """Where the two sides' prepare computed a case differently, the change says how; the
    timings that led to the choice are not a difference."""
    base, new = _record("c"), _record("c", median=1.5e-3, seed=1)
    base.algorithm, new.algorithm = "im2col", "im2col views"
    base.algorithm_params = {"columns": "unfolded", "tuned_ms": {"2016": 1.0}}
    new.algorithm_params = {"columns": "views", "tuned_ms": {"2016": 2.0}}
    (change,) = compare([base], [new]).changes
    assert change.verdict == "slower"
    assert "prepare chose differently: " in change.note
    assert "columns unfolded -> views" in change.note and "algorithm im2col ->" in change.note
    assert "tuned_ms" not in change.note
    new.algorithm, new.algorithm_params = base.algorithm, {"columns": "unfolded", "tuned_ms": {}}
    (change,) = compare([base], [new]).changes
    assert "chose" not in change.note
