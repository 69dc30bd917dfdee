"""``convbench tune`` and ``convbench model`` as a user runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from convbench.cli import main
from tests.conftest import Visit, run_cli

FAST = ("--quick", "--threads", "1")
LAYER = 'mb2ic8ih12oc8kh3ph1n"a"'


def _runs(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def test_tune_measures_what_is_missing_once_and_reuses_runs(tmp_path: Path) -> None:
    proc = run_cli(
        "tune", "--spec", LAYER, "--spec", 'mb2ic8ih12oc8kh3ph1n"b"',
        "--backend", "torch,im2col,winograd-f2", *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "convbench tuning table" in proc.stdout and "1 measured in run" in proc.stdout
    (run,) = _runs(tmp_path / "results")
    records = [json.loads(line) for line in (run / "records.jsonl").read_text().splitlines()]
    assert sorted(r["backend"] for r in records) == ["im2col", "torch", "winograd-f2"]
    table = json.loads((run / "table.json").read_text())
    (entries,) = table["problems"].values()
    (entry,) = entries
    assert entry["backend"] in ("torch", "im2col", "winograd-f2")
    assert set(entry["others"]) | {entry["backend"]} == {"torch", "im2col", "winograd-f2"}
    assert table["machines"] and table["max_error"] is None

    again = run_cli(
        "tune", "--from", run.name, "--max-error", "1e-12", "--table-out", "strict.json",
        *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "measured now: none" in again.stdout
    assert len(_runs(tmp_path / "results")) == 1
    strict = json.loads((tmp_path / "strict.json").read_text())
    (entries,) = strict["problems"].values()
    assert strict["max_error"] == 1e-12 and entries[0]["within"] is False


@pytest.fixture(scope="module")
def example_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``convbench model example`` once: the run folder it wrote."""
    cwd = tmp_path_factory.mktemp("model")
    proc = run_cli(
        "model", "example", "--mb", "4", "--size", "24", "--budget", "0.3",
        "--backend", "torch,im2col,winograd-f2", *FAST, cwd=cwd,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "convbench model example" in proc.stdout and "rounds" in proc.stdout
    (run,) = _runs(cwd / "results")
    return run


def test_model_tunes_then_times_the_network_end_to_end(example_run: Path) -> None:
    result = json.loads((example_run / "model.json").read_text())
    assert result["input_shape"] == [4, 1, 24, 24]
    assert result["speedup_lo"] <= result["speedup"] <= result["speedup_hi"]
    assert result["verdict"] in ("faster", "slower", "not significant")
    assert result["torch_s"] > 0 and result["convbench_s"] > 0 and result["rounds"] >= 5
    assert 0 < result["torch_error"] < 1e-5 and 0 < result["convbench_error"] < 1e-5
    (layer,) = result["layers"]
    assert layer["path"] == "0" and layer["backend"] == layer["run_backend"]
    assert "problems measured" in result["tuning"]
    assert "choices fell back to torch" in result["tuning"]["settled in the network"]
    assert (example_run / "table.json").exists()


def test_model_takes_a_table_and_measures_nothing(example_run: Path, tmp_path: Path) -> None:
    table = example_run / "table.json"
    reused = run_cli(
        "model", "example", "--mb", "4", "--size", "24", "--budget", "0.3", "--table",
        str(table), *FAST, cwd=tmp_path,
    )  # fmt: skip
    assert reused.returncode == 0, reused.stderr
    (run,) = _runs(tmp_path / "results")
    assert not (run / "records.jsonl").exists()  # nothing measured
    assert json.loads((run / "model.json").read_text())["tuning"] == {"table": str(table)}


def test_model_page_in_a_browser(browser, example_run: Path) -> None:  # type: ignore[no-untyped-def]
    visit = Visit(browser, example_run / "model.html")
    try:
        page = visit.page
        assert visit.errors == [] and visit.requests == []
        assert "speed-up" in page.locator("section").first.inner_text()
        rows = page.locator("#layers tbody tr")
        assert rows.count() == 1 and "mb4" in rows.first.inner_text()
    finally:
        visit.close()


def test_a_user_network_by_module_and_callable(tmp_path: Path) -> None:
    proc = run_cli(
        "model", "tests.test_models:_tiny", "--size", "12", "--budget", "0.2",
        "--backend", "torch,im2col", "--out", str(tmp_path), "--alone", *FAST,
        cwd=Path.cwd(), env={"PYTHONPATH": str(Path.cwd())},
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "tests.test_models:_tiny" in proc.stdout
    (run,) = _runs(tmp_path)
    assert "settled in the network" not in json.loads((run / "model.json").read_text())["tuning"]


def test_bad_input_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """In this process (each case fails before any work, so a fresh interpreter per case would
    only add its start-up)."""
    monkeypatch.chdir(tmp_path)
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    for argv, message in [
        (("model", "nope"), "unknown network"),
        (("model", "example", "--table", str(bad)), "not a convbench tuning table"),
        (("model", "example", "--table", str(tmp_path / "absent.json")), "cannot read"),
        (("model", "example", "--size", "0"), "expected H or HxW"),
        (("model", "example", "--table", str(bad), "--max-error", "1e-5"), "used as it is"),
        (("model", "example", "--table", str(bad), "--alone"), "used as it is"),
        (("tune",), "nothing to tune"),
        (("tune", "--from", "nope"), "nope"),
        (("tune", "--spec", LAYER, "--max-error", "0"), "above 0"),
    ]:
        assert main(list(argv)) == 2, argv
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, (argv, err)
    assert not (tmp_path / "results").exists()  # no run folder for a command that failed
