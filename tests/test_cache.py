"""Cold-cache timing: the flush, the sampler that evicts before each timed call, and
``convbench run --cold-cache`` end to end (records, environment, resume, compare)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

from convbench import sweep
from convbench.measure import cache
from convbench.measure.cache import (
    COLD_BUDGET,
    CPU_CACHES,
    Flush,
    cold_sampler,
    cold_timing,
    last_level_cache_bytes,
)
from convbench.measure.timing import Clock, TimingConfig, measure_rounds
from convbench.results import Record
from convbench.spec import parse
from convbench.suites import Workload
from convbench.sweep import Case, SweepConfig


def test_last_level_cache_is_the_largest_the_system_reports() -> None:
    files = list(CPU_CACHES.glob("index*/size"))
    if not files:
        pytest.skip(f"{CPU_CACHES} is absent: the CPU's caches are not reported here")
    sizes = {}
    for f in files:
        level = int((f.parent / "level").read_text())
        text = f.read_text().strip()
        sizes[level] = int(text[:-1]) * {"K": 1024, "M": 1024**2}[text[-1]]
    assert last_level_cache_bytes("cpu") == sizes[max(sizes)] > 0


def test_flush_reads_its_whole_buffer_of_twice_the_last_level() -> None:
    assert Flush("cpu").nbytes == 2 * last_level_cache_bytes("cpu")
    small = Flush("cpu", nbytes=1 << 20)
    assert small() == (1 << 20) // 4  # a sum of ones: every element was read


def test_each_timed_call_follows_a_flush_and_a_read_of_the_input() -> None:
    events: list[str] = []

    class Input(torch.Tensor):
        def sum(self, *args: object, **kwargs: object) -> torch.Tensor:  # type: ignore[override]
            events.append("read input")
            return super().sum(*args, **kwargs)

    x = torch.ones(4).as_subclass(Input)
    sample = cold_sampler(
        Clock("cpu"), lambda: events.append("call"), x, lambda: events.append("flush")
    )
    seconds = sample(3)
    assert events == ["flush", "read input", "call"] * 3
    assert seconds > 0


def test_cold_timing_takes_one_call_a_sample_and_no_warming_calls() -> None:
    cfg = cold_timing(TimingConfig())
    assert (cfg.min_sample_s, cfg.turn_warmup_s) == (0.0, 0.0)
    assert cfg.budget_s == TimingConfig().budget_s * COLD_BUDGET
    calls: list[int] = []

    def sampler(number: int) -> float:
        calls.append(number)
        return 1e-6 * number

    measure_rounds({"a": sampler, "b": sampler}, cold_timing(TimingConfig.quick()), baseline="a")
    assert set(calls) == {1}


def _run(tmp: Path, *extra: str) -> tuple[int, str, Path | None]:
    out = tmp / "res"
    before = set(out.iterdir()) if out.exists() else set()
    proc = run_cli(
        "run", "--spec", "mb1ic4ih12oc8oh12kh3ph1", "--backend", "torch,im2col", "--quick",
        "--out", str(out), *extra, cwd=tmp,
    )  # fmt: skip
    new = sorted(set(out.iterdir()) - before) if out.exists() else []
    return proc.returncode, proc.stdout + proc.stderr, new[0] if new else None


def test_run_cold_cache_end_to_end(tmp_path: Path) -> None:
    code, text, cold = _run(tmp_path, "--cold-cache")
    assert code == 0, text
    assert "cold caches" in text
    assert cold is not None
    records = [json.loads(line) for line in (cold / "records.jsonl").read_text().splitlines()]
    assert {r["status"] for r in records} == {"ok"}
    assert {r["cache"] for r in records} == {"cold"}
    assert {r["number"] for r in records} == {1}  # one call a sample: each after a flush
    assert json.loads((cold / "run.json").read_text())["cold_cache"] is True
    assert "<td>cold</td>" in (cold / "report.html").read_text()

    code, text, warm = _run(tmp_path)
    assert code == 0, text
    assert warm is not None
    records = [json.loads(line) for line in (warm / "records.jsonl").read_text().splitlines()]
    assert {r["cache"] for r in records} == {"warm"}
    assert all(r["number"] > 1 for r in records)  # microsecond calls: many a sample

    proc = run_cli("compare", str(warm), str(cold), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "convbench: error: the runs were timed with different caches (base warm, new cold): "
        "a cold call is slower by design, not a regression"
    ]
    proc = run_cli(
        "run", "--resume", cold.name, "--cold-cache", "--out", str(cold.parent), cwd=tmp_path
    )
    assert proc.returncode == 2 and "drop --cold-cache" in proc.stderr


def test_a_cold_sweep_flushes_before_every_timed_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real flush, counted: one per call of each backend, and none in a warm sweep."""
    flush = Flush("cpu", nbytes=1 << 20)
    flushes = []

    def counted() -> float:
        flushes.append(1)
        return flush()

    monkeypatch.setattr(cache, "flush_for", lambda device: counted)
    case = [Case(Workload(parse("mb1ic4ih12oc8oh12kh3ph1")), b, "cpu", "float32")
            for b in ("torch", "im2col")]  # fmt: skip
    for cold in (False, True):
        made: list[Record] = []
        config = SweepConfig(["torch", "im2col"], timing=TimingConfig.quick(), cold_cache=cold)
        flushes.clear()
        sweep.run_cases(case, config, "r", tmp_path, lambda c, r, out=made: out.append(r))
        assert {r.cache for r in made} == {"cold" if cold else "warm"}
        calls = sum(r.repeats * r.number for r in made)  # the timed calls
        assert len(flushes) >= calls if cold else not flushes


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_cuda_flush_writes_twice_the_l2() -> None:
    l2 = torch.cuda.get_device_properties(torch.cuda.current_device()).L2_cache_size
    flush = Flush("cuda")
    assert flush.nbytes == 2 * l2 > 0
    assert flush() == flush.buffer.numel()
