"""Records and the run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convbench.report.summary import format_seconds, summarize_cases
from convbench.results import SCHEMA_VERSION, Record, RunStore, new_run_id


def _rec(run_id: str = "r", backend: str = "torch", spec: str = "s", **kw) -> Record:
    return Record(
        run_id=run_id,
        spec=spec,
        name="n",
        backend=backend,
        device="cpu",
        dtype="float32",
        status=kw.pop("status", "ok"),
        **kw,
    )


def test_record_round_trip_and_schema() -> None:
    r = _rec(median_s=1e-3, samples_s=[1e-3, 2e-3], rel_l2_error=1e-7)
    d = r.to_dict()
    assert d["schema_version"] == SCHEMA_VERSION and d["peak_bytes"] is None
    assert Record.from_dict(json.loads(json.dumps(d))) == r
    with pytest.raises(ValueError, match="status"):
        _rec(status="great")


def test_store_append_read_and_repair(tmp_path: Path) -> None:
    store = RunStore.create(tmp_path)
    store.write_json(RunStore.CONFIG, {"x": 1})
    store.append(_rec(run_id=store.run_id, backend="a"))
    store.append(_rec(run_id=store.run_id, backend="b"))
    with open(store.path / RunStore.RECORDS, "a") as fh:
        fh.write('{"half a rec')
    assert [r.backend for r in RunStore.open(tmp_path, store.run_id).records()] == ["a", "b"]
    store.repair()
    store.append(_rec(run_id=store.run_id, backend="c"))
    lines = (store.path / RunStore.RECORDS).read_text().splitlines()
    assert [json.loads(line)["backend"] for line in lines] == ["a", "b", "c"]
    with pytest.raises(FileNotFoundError):
        RunStore.open(tmp_path, "missing")


def test_run_ids_sort_by_time_and_differ() -> None:
    a, b = new_run_id(), new_run_id()
    assert a != b and a[:15] <= b[:15]


def test_summary_picks_fastest_correct_backend() -> None:
    records = [
        _rec(backend="torch", median_s=2e-3, rel_l2_error=1e-7),
        _rec(backend="fast-but-wrong", median_s=1e-4, rel_l2_error=0.5, status="inaccurate"),
        _rec(backend="fast", median_s=1e-3, rel_l2_error=2e-7),
        _rec(backend="broken", status="failed", reason="boom"),
    ]
    (row,) = summarize_cases(records)
    assert row.fastest == "fast" and row.speedup is not None
    assert row.speedup.value == pytest.approx(2.0) and row.speedup_text == "2.00x"  # unpaired
    assert row.worst_error == 0.5 and row.worst_error_backend == "fast-but-wrong"
    assert row.statuses == {"ok": 2, "inaccurate": 1, "failed": 1}


def test_summary_shows_a_lead_within_the_noise_as_a_tie() -> None:
    paired = dict(baseline="torch", rounds=40, rel_l2_error=1e-7)
    tie = [
        _rec(backend="torch", median_s=1.00e-3, **paired),
        _rec(backend="a", median_s=0.97e-3, speedup=1.03, speedup_lo=0.98, speedup_hi=1.07,
             **paired),
        _rec(backend="b", median_s=2e-3, speedup=0.5, speedup_lo=0.48, speedup_hi=0.52, **paired),
    ]  # fmt: skip
    (row,) = summarize_cases(tie)
    assert row.winner_text == "a ≈ torch" and row.verdict == "not significant"
    assert row.speedup_text == "1.03x n.s. [0.98-1.07]"
    tie[1].speedup_lo = 1.01  # excludes 1, but not the 5 % one process alone can do
    (row,) = summarize_cases(tie)
    assert row.winner_text == "a ≈ torch" and row.verdict == "not significant"
    tie[1].speedup, tie[1].speedup_lo, tie[1].speedup_hi = 1.10, 1.06, 1.14
    (row,) = summarize_cases(tie)
    assert row.winner_text == "a" and row.verdict == "faster"
    assert row.speedup_text == "1.10x [1.06-1.14]"
    # The baseline fastest, a runner-up not significantly slower: still a tie.
    tie[1].median_s, tie[1].speedup, tie[1].speedup_lo, tie[1].speedup_hi = (
        1.02e-3,
        0.98,
        0.95,
        1.01,
    )
    (row,) = summarize_cases(tie)
    assert row.fastest == "torch" and row.winner_text == "torch ≈ a"
    assert row.speedup is None and row.speedup_text == "(baseline)"


def test_format_seconds() -> None:
    assert format_seconds(None) == "-"
    assert format_seconds(812e-6) == "812 µs"
    assert format_seconds(3.414e-3) == "3.41 ms"
    assert format_seconds(1.2) == "1.2 s"
