"""Shared fixtures: a clean backend registry around tests that register their own."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture
def registry() -> Iterator[None]:
    """Restore the registry after a test that adds backends to it."""
    before = backends.names()
    yield
    for name in backends.names():
        if name not in before:
            backends.unregister(name)


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
