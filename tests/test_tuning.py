"""The tuning table: which backend it chooses per problem, and its file."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from convbench.results import Record
from convbench.spec import parse
from convbench.tuning import Table, choose, missing, problem_key

SPEC = 'mb8ic64ih28oc64oh28kh3ph1n"layer"'
HOST = socket.gethostname()


def rec(backend: str, speedup: float | None = None, ci: float = 0.02, **kw: object) -> Record:
    """One measured case, as a run writes it: a paired speed-up over torch with its interval."""
    fields: dict[str, object] = {
        "run_id": "run-1",
        "spec": parse(SPEC).format(),
        "name": "layer",
        "backend": backend,
        "device": "cpu",
        "dtype": "float32",
        "status": "ok",
        "median_s": 1e-3 / (speedup or 1.0),
        "rel_l2_error": 1e-6,
        "tolerance": 1e-5,
        "baseline": "torch",
        "host": HOST,
        "rounds": 20,
    }
    if speedup is not None:
        fields |= {"speedup": speedup, "speedup_lo": speedup - ci, "speedup_hi": speedup + ci}
    fields |= kw
    return Record(**fields)  # type: ignore[arg-type]


def only(records: list[Record], **kw: object):  # type: ignore[no-untyped-def]
    (choice,) = choose(records, **kw)  # type: ignore[arg-type]
    return choice


def test_the_fastest_backend_within_its_bound_is_chosen() -> None:
    c = only([rec("torch"), rec("im2col", 1.3), rec("winograd-f4", 1.8)])
    assert (c.backend, c.speedup, c.within) == ("winograd-f4", 1.8, True)
    assert (c.speedup_lo, c.speedup_hi) == (1.78, 1.82)
    assert (
        c.others["im2col"].startswith("faster, 1.30x")
        and "winograd-f4 is faster" in (c.others["im2col"])
    )
    assert c.others["torch"] == "slower: winograd-f4 runs 1.80x [1.78-1.82] over it"
    assert c.problem == problem_key(SPEC) and "layer" not in c.problem


def test_a_lead_within_noise_keeps_torch() -> None:
    """1.04x, and 1.2x with an interval reaching down to 1.02: neither clears the 5 % margin."""
    c = only([rec("torch"), rec("im2col", 1.04, 0.01), rec("fft-torch", 1.2, 0.18)])
    assert (c.backend, c.speedup) == ("torch", 1.0)
    assert c.others["fft-torch"].startswith("not significant")
    assert only([rec("torch"), rec("fft-torch", 1.2, 0.1)]).backend == "fft-torch"


def test_slower_backends_are_never_chosen() -> None:
    c = only([rec("torch"), rec("direct", 0.3)])
    assert c.backend == "torch" and c.others["direct"].startswith("slower")


def test_max_error_changes_the_choice() -> None:
    records = [
        rec("torch", rel_l2_error=2e-7),
        rec("winograd-f6", 2.0, rel_l2_error=3e-6),
        rec("winograd-f2", 1.4, rel_l2_error=4e-7),
    ]
    assert only(records).backend == "winograd-f6"
    strict = only(records, max_error=1e-6)
    assert (strict.backend, strict.bound) == ("winograd-f2", 1e-6)
    assert "above its bound 1.0e-06" in strict.others["winograd-f6"]
    assert only(records, max_error=3e-7).backend == "torch"


def test_a_backend_over_its_own_tolerance_is_not_chosen() -> None:
    c = only([rec("torch"), rec("winograd-f6", 3.0, rel_l2_error=2e-5, status="inaccurate")])
    assert c.backend == "torch" and "above its bound" in c.others["winograd-f6"]


def test_no_backend_within_the_bound_keeps_the_most_accurate_and_says_so() -> None:
    records = [rec("torch", rel_l2_error=3e-7), rec("im2col", 1.5, rel_l2_error=2e-7)]
    c = only(records, max_error=1e-7)
    assert (c.backend, c.within) == ("im2col", False)
    assert "no backend meets" in c.why


def test_unsupported_and_failed_backends_say_why() -> None:
    records = [
        rec("torch"),
        rec("winograd-f4", status="unsupported", reason="3x3 stride 1 only", median_s=None),
        rec("fft-scipy", status="failed", reason="MemoryError", median_s=None),
    ]
    c = only(records)
    assert c.others == {
        "winograd-f4": "unsupported: 3x3 stride 1 only",
        "fft-scipy": "failed: MemoryError",
    }


def test_the_last_run_given_decides() -> None:
    first = [rec("torch"), rec("im2col", 1.5)]
    second = [rec("torch", run_id="run-2"), rec("im2col", 0.9, run_id="run-2")]
    assert only(first + second).backend == "torch"
    assert only(second + first).backend == "im2col"


def test_layers_of_one_shape_share_an_entry_and_machines_stay_apart() -> None:
    other = parse('mb8ic64ih28oc64oh28kh3ph1n"another"').format()
    records = [rec("torch"), rec("im2col", 1.5), rec("torch", spec=other)]
    records += [rec("torch", host="elsewhere"), rec("im2col", 0.5, host="elsewhere")]
    choices = choose(records)
    assert sorted((c.machine, c.backend) for c in choices) == [
        ("elsewhere", "torch"),
        (HOST, "im2col"),
    ]


def test_a_table_round_trips_and_prefers_this_machine(tmp_path: Path) -> None:
    choices = choose([rec("torch", host="elsewhere"), rec("torch"), rec("im2col", 1.5)])
    table = Table(choices, max_error=1e-5, machines={HOST: {"cpu": "x"}})
    path = table.save(tmp_path / "t.json")
    data = json.loads(path.read_text())
    assert list(data["problems"]) == [problem_key(SPEC)]
    back = Table.load(path)
    assert back.max_error == 1e-5 and back.machines == {HOST: {"cpu": "x"}}
    assert back.lookup(SPEC, "cpu", "float32").backend == "im2col"  # type: ignore[union-attr]
    assert back.lookup(SPEC, "cpu", "float32", machine="elsewhere").backend == "torch"  # type: ignore[union-attr]
    assert back.lookup(SPEC, "cpu", "float32", machine="third").machine == "elsewhere"  # type: ignore[union-attr]
    assert back.lookup(SPEC, "cpu", "float64") is None
    assert back.lookup(parse(SPEC).with_mb(1), "cpu", "float32") is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not JSON"),
        ('{"format": "other"}', "not a convbench tuning table"),
        ('{"format": "convbench-table", "version": 9}', "version 9"),
        ('{"format": "convbench-table", "version": 1, "problems": {"x": [{}]}}', "malformed"),
    ],
)
def test_a_bad_table_file_is_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "t.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=message):
        Table.load(path)
    with pytest.raises(ValueError, match="cannot read"):
        Table.load(tmp_path / "absent.json")


def test_missing_lists_each_unmeasured_problem_once() -> None:
    a, b = parse('mb1ic8ih8oc8kh3ph1n"a"'), parse('mb1ic8ih8oc8kh3ph1n"b"')
    c = parse("mb1ic8ih8oc16kh3ph1")
    done = [rec("torch", spec=a.format()), rec("torch", spec=c.format(), host="elsewhere")]
    assert missing([a, b, c], done, ["cpu"], ["float32"]) == [c]
    assert missing([a, b], done, ["cpu"], ["float32", "float64"]) == [a]
