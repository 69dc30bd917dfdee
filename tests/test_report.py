"""The HTML report, as a person meets it: written by a real run, opened in headless chromium."""

from __future__ import annotations

import json
import re
import urllib.parse
from pathlib import Path

import pytest
from conftest import Visit, run_cli

from convbench.report.page import Cell, Page, _json_for_script
from convbench.spec import parse

TESTS = Path(__file__).resolve().parent
# A name and an error text that would run script if the page took them for HTML.
CRAFTED = (
    "x<b>bold</b></script><script>window.__pwned=2</script><img/src=x/onerror=window.__pwned=1>"
)
HOSTILE = '<script>window.__pwned=3</script><img src=x onerror="window.__pwned=4">'
PLUGINS = {
    "PYTHONPATH": str(TESTS),
    "CONVBENCH_PLUGINS": "plugin_backends",
    "CONVBENCH_TEST_MESSAGE": HOSTILE,
}
SPECS = [f'mb1ic4ih10oc8kh3ph1n"{CRAFTED}"', 'mb1ic8ih10oc8kh1n"one_by_one"']
BACKENDS = "torch,im2col,winograd-f4,test-crash-1x1,test-hostile"
CHARTS = ["speedup", "errors", "gflops", "peak-memory", "prepare-memory"]


def _run(out: Path, *extra: str) -> tuple[str, Path]:
    args = [a for spec in SPECS for a in ("--spec", spec)]
    proc = run_cli(
        "run", *args, "--backend", BACKENDS, "--quick", "--out", str(out), *extra,
        cwd=out.parent, env=PLUGINS,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr  # the crashing backends fail, by design
    (run,) = [p for p in out.iterdir() if p.is_dir()]
    return proc.stdout, run


@pytest.fixture(scope="module")
def profiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """One run, profiled, with a crafted problem name and a backend that fails with markup."""
    return _run(tmp_path_factory.mktemp("report") / "results", "--profile")


def test_run_writes_its_report(profiled: tuple[str, Path]) -> None:
    stdout, run = profiled
    report = run / "report.html"
    assert f"report: {report}" in stdout
    assert report.stat().st_size > 1_000_000  # plotly.js is inside it


def test_nothing_from_the_inputs_reaches_the_page_unescaped(profiled: tuple[str, Path]) -> None:
    text = (profiled[1] / "report.html").read_text()
    assert text.count("</script>") == 3  # the data block, plotly.js, the page's own script
    for raw in (CRAFTED, "<img/src=x/", "<script>window.__pwned", HOSTILE, "<img src=x"):
        assert raw not in text
    assert "&lt;img/src=x/onerror=window.__pwned=1&gt;" in text  # shown, as text
    assert "<script src" not in text and "<link" not in text  # every asset is inline


def test_json_block_and_cells_escape_everything() -> None:
    data = {"name": "</script><script>alert(1)</script>&"}
    block = _json_for_script(data)
    assert "<" not in block and ">" not in block and "&" not in block
    assert json.loads(block) == data
    cell = Cell('"><b>x', sort='"><i>', href='javascript:"><b>', title="<t>").render()
    assert "<b>" not in cell and "<i>" not in cell and "<t>" not in cell


def test_report_in_a_browser(browser, profiled: tuple[str, Path]) -> None:  # type: ignore[no-untyped-def]
    run = profiled[1]
    visit = Visit(browser, run / "report.html")
    page = visit.page
    try:
        page.wait_for_function(
            f"document.querySelectorAll('div.chart .main-svg').length >= {len(CHARTS)}"
        )
        assert visit.errors == []
        assert visit.requests == []  # no host asked for anything
        assert page.evaluate("window.__pwned") is None
        assert page.locator("script").count() == 3
        for key in CHARTS:
            assert page.locator(f"#chart-{key} .main-svg").count() >= 1, key
        assert page.locator("#chart-speedup .bars .point").count() > 0
        ticks = page.locator("#chart-speedup .xtick text").all_text_contents()
        assert CRAFTED in ticks  # plotly shows the characters, and makes no markup of them
        assert page.locator("#chart-errors .scatterlayer .point").count() > 0

        table = page.locator("#records")
        rows = table.locator("tbody tr")
        assert rows.count() == len(SPECS) * len(BACKENDS.split(","))
        assert CRAFTED in table.inner_text()  # the crafted name, shown as the text it is
        assert HOSTILE in table.inner_text()

        median = table.locator("th", has_text="median")
        for order in ("ascending", "descending"):
            median.click()
            assert median.get_attribute("aria-sort") == order
            values = [
                float(v) for v in page.eval_on_selector_all(
                    "#records tbody tr td:nth-child(5)",
                    "cells => cells.map(c => c.getAttribute('data-sort')).filter(v => v)",
                )
            ]  # fmt: skip
            assert len(values) >= 4
            assert values == sorted(values, reverse=order == "descending")

        status = page.locator('select.filter-col[data-table="records"]').last
        status.select_option("failed")
        visible = table.locator("tbody tr:not([hidden])")
        assert visible.count() == 3  # test-hostile twice, test-crash-1x1 on the 1x1 problem
        assert set(visible.locator("td:nth-child(14)").all_inner_texts()) == {"failed"}
        status.select_option("")
        page.locator('input.filter-text[data-table="records"]').fill("winograd")
        assert visible.count() == 2
        assert page.locator('.count[data-table="records"]').inner_text() == "2 of 10 rows"

        hrefs = table.locator("a").evaluate_all("links => links.map(a => a.getAttribute('href'))")
        assert len(hrefs) == 7  # every case but the 3 failed ones was profiled
        for href in hrefs:
            assert (run / urllib.parse.unquote(href)).is_file()
    finally:
        visit.close()


def test_report_of_two_runs_links_from_where_it_is(
    tmp_path: Path, profiled: tuple[str, Path]
) -> None:
    _, second = _run(tmp_path / "results")
    out = tmp_path / "elsewhere" / "both.html"
    proc = run_cli("report", str(profiled[1]), str(second), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    text = out.read_text()
    assert profiled[1].name in text and second.name in text
    links = re.findall(r'<a href="([^"]+\.pt\.trace\.json)"', text)
    targets = [urllib.parse.unquote(h) for h in links]
    assert len(targets) == 7  # the profiled run's; the other has no traces
    for target in targets:
        assert (out.parent / target).resolve().is_file()


def test_report_by_run_id_and_bad_runs(tmp_path: Path, profiled: tuple[str, Path]) -> None:
    run = profiled[1]
    out = tmp_path / "r.html"
    proc = run_cli("report", run.name, "--root", str(run.parent), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0 and out.is_file(), proc.stderr
    proc = run_cli("report", "no-such-run", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "convbench: error: no run folder 'no-such-run' (nor a run of that id in 'results')"
    ]


def test_table_sorts_empty_cells_last_and_filters_by_column(browser, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    from convbench.report.page import Column

    page_ = Page("t")
    rows = [[Cell("a"), Cell("3", 3.0)], [Cell("b"), Cell("-", None)], [Cell("a"), Cell("1", 1.0)]]
    page_.section(
        "s", Page.table("t1", [Column("k", filter=True), Column("v", numeric=True)], rows)
    )
    path = tmp_path / "t.html"
    path.write_text(page_.render())
    visit = Visit(browser, path)
    try:
        head = visit.page.locator("#t1 th").nth(1)
        cells = visit.page.locator("#t1 tbody td:nth-child(2)")
        head.click()
        assert cells.all_inner_texts() == ["1", "3", "-"]
        head.click()
        assert cells.all_inner_texts() == ["3", "1", "-"]
        visit.page.locator("select.filter-col").select_option("a")
        assert visit.page.locator("#t1 tbody tr:not([hidden])").count() == 2
        assert visit.errors == [] and visit.requests == []
    finally:
        visit.close()


def test_spec_parse_keeps_the_crafted_name() -> None:
    assert parse(SPECS[0]).name == CRAFTED


def test_infinite_and_missing_values_render(tmp_path: Path) -> None:
    from convbench.report.report import LoadedRun, render_report
    from convbench.results import Record, RunStore

    def record(backend: str, error: float | None, median: float | None) -> Record:
        return Record(
            run_id="r", spec=SPECS[1], name="one_by_one", backend=backend, device="cpu",
            dtype="float16", status="inaccurate" if error != 1e-4 else "ok", median_s=median,
            rel_l2_error=error, tolerance=1e-3, gflops=None if median is None else 1.0,
        )  # fmt: skip

    records = [record("torch", 1e-4, 1e-3), record("a", float("inf"), 2e-3)]
    records.append(record("b", float("nan"), None))
    text = render_report([LoadedRun(RunStore(tmp_path, "r"), records, {})], tmp_path / "r.html")
    block = text.split('id="chart-data">', 1)[1].split("</script>", 1)[0]
    assert "null" in block and "Infinity" not in block and "NaN" not in block
    assert ">inf<" in text and ">nan<" in text  # the table says what happened


def test_unwritable_out_is_one_line(tmp_path: Path, profiled: tuple[str, Path]) -> None:
    proc = run_cli("report", str(profiled[1]), "--out", str(tmp_path), cwd=tmp_path)
    assert proc.returncode == 2
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith(f"convbench: error: cannot write {tmp_path}: ")
