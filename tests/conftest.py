"""Shared fixtures: a clean backend registry around tests that register their own."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from convbench import backends
from convbench.inputs import make_inputs
from convbench.measure.accuracy import compare
from convbench.spec import ConvSpec
from convbench.sweep import reference


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--perf-threads",
        type=int,
        default=None,
        help="CPU threads for the benchmarks of tests/perf (default: all cores)",
    )


def pytest_configure(config: pytest.Config) -> None:
    """Benchmarks are disabled (each runs once, as a plain test) unless ``--benchmark-only`` or
    ``--benchmark-enable`` asks for timing.

    ``--benchmark-disable`` in ``addopts`` would do the same for a plain run, but pytest-benchmark
    refuses it together with ``--benchmark-only``, its usual command. Its own ``pytest_configure``
    is ``trylast`` and reads the option from there, so setting it here comes first.
    """
    opt = config.option
    if not (opt.benchmark_only or opt.benchmark_enable):
        opt.benchmark_disable = True


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """The benchmarks of tests/perf time the backends as users run them: tuned. Untimed, as in
    the plain run, each checks its backend's first choice (timing every candidate there took
    70 s of the run's 12; tests/test_plans.py checks every candidate)."""
    if config.option.benchmark_disable:
        return
    for item in items:
        if "perf" in item.path.parts:
            item.add_marker("tuned")


@pytest.fixture(scope="session", autouse=True)
def untimed_session() -> Iterator[None]:
    """``CONVBENCH_TUNING=off`` for the whole session (see ``untimed_choices``): module-scoped
    fixtures are set up before any test's own fixtures, and would otherwise time every
    candidate of every prepare they make (the tolerance fixture took 100 s so, 29 s without)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CONVBENCH_TUNING", "off")
        yield


@pytest.fixture(autouse=True)
def untimed_choices(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Backends take their cost model's first choice, untimed (``CONVBENCH_TUNING=off``, which
    subprocesses inherit), except in tests marked ``tuned``. A test then checks the same
    computation on every run, whichever candidate this machine would time fastest, and does not
    pay for timing candidates in each prepare; tests/test_plans.py checks every candidate."""
    if request.node.get_closest_marker("tuned") is not None:
        monkeypatch.delenv("CONVBENCH_TUNING", raising=False)


@pytest.fixture
def registry() -> Iterator[None]:
    """Restore the registry after a test that adds backends to it."""
    before = backends.names()
    yield
    for name in backends.names():
        if name not in before:
            backends.unregister(name)


def default_sigint() -> None:
    """A child's ``preexec_fn``: Ctrl-C's default action, for tests that send SIGINT. A shell
    starts background jobs with SIGINT ignored, their children inherit that, and Python then
    raises no KeyboardInterrupt: the suite run in the background would fail those tests."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_cli(
    *args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """``convbench ARGS`` in a fresh interpreter, as a user runs it."""
    full_env = {**os.environ, **(env or {})}
    if env and "PYTHONPATH" in env and os.environ.get("PYTHONPATH"):
        full_env["PYTHONPATH"] = env["PYTHONPATH"] + os.pathsep + os.environ["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", "convbench", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def check(
    spec: ConvSpec, name: str, device: str, dtype: torch.dtype, seed: int = 0
) -> float | None:
    """The backend's relative error on ``spec``, asserted within its tolerance, or ``None``
    when it declines the case (with a reason)."""
    b = backends.get(name)
    reason = b.supports(spec, device, dtype)
    if reason:
        assert isinstance(reason, str) and reason
        return None
    inputs = make_inputs(spec, seed=seed)
    data = inputs.to(device, dtype)
    with torch.no_grad():
        y = b.prepare(spec, data.weight, data.bias)(data.x)
    assert y.shape == spec.output_shape and y.dtype == dtype and y.device.type == device
    err = compare(y, reference(spec, inputs)).rel_l2_error
    assert err <= b.tolerance(dtype, device), f"{name} {spec}: {err:.3g}"
    return err


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's headless chromium, driven by Playwright; skips where either is absent."""
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    if not Path(CHROMIUM).exists():
        pytest.skip("chromium is not installed (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-sync",
                  "--disable-background-networking", "--disable-component-update"],
        )  # fmt: skip
        yield b
        b.close()


class Visit:
    """A page opened from a file, with what went wrong while it loaded: console errors,
    uncaught exceptions, and requests to anything but the file itself."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.page = browser.new_page(viewport={"width": 1400, "height": 900})
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        url = path.resolve().as_uri()
        self.page.on("request", lambda r: self.requests.append(r.url) if r.url != url else None)
        self.page.goto(url)
        self.page.wait_for_load_state("load")

    def close(self) -> None:
        self.page.close()
