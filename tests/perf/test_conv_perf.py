"""pytest-benchmark over the smoke and representative suites, for every backend.

Each benchmark times a ``convbench.sweep.Ready`` — the same prepared, synchronised call that
``convbench run`` and asv time — and a *yardstick* per case: the same problem through a bare
``torch.nn.functional.conv2d``, measured in the same run. ``convbench gate`` judges each backend
by its time relative to that yardstick, which cancels what the machine's speed and noise do to
both. In the ordinary test run (benchmarks disabled by conftest.py) each call runs once and only its
accuracy is checked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator

import pytest
import torch
import torch.nn.functional as F

from convbench import backends
from convbench.backends.base import conv_input
from convbench.env import cpu_count
from convbench.gate import YARDSTICK
from convbench.inputs import Inputs, make_inputs
from convbench.suites import Workload, get_suite
from convbench.sweep import DTYPES, Case, make_ready, reference

DTYPE = "float32"
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
WORKLOADS = {w.spec.name: w for s in ("smoke", "representative") for w in get_suite(s).workloads()}


def _cases() -> list[tuple[str, str, str]]:
    """Every supported (case, device, backend), the yardstick first in each case."""
    out = []
    for name, w in WORKLOADS.items():
        for device in DEVICES:
            out.append((name, device, YARDSTICK))
            out += [
                (name, device, b.name)
                for b in backends.all_backends()
                if not b.supports(w.spec, device, DTYPES[DTYPE])
            ]
    return out


@pytest.fixture(scope="module", autouse=True)
def perf_threads(pytestconfig: pytest.Config) -> Iterator[int]:
    """Every benchmark runs at one thread count (``--perf-threads``; default all cores),
    recorded in its extra_info."""
    threads = pytestconfig.getoption("--perf-threads") or cpu_count()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield threads
    torch.set_num_threads(before)


@functools.cache
def _inputs(w: Workload) -> tuple[Inputs, torch.Tensor]:
    """A case's seeded inputs and float64 reference, made once for all its benchmarks."""
    inputs = make_inputs(w.spec, w.fill)
    return inputs, reference(w.spec, inputs)


def _yardstick(w: Workload, device: str) -> Callable[[], None]:
    """The case as one bare ``F.conv2d`` call on the device, padding modes done up front."""
    spec, data = w.spec, _inputs(w)[0].to(device, DTYPES[DTYPE])
    x, padding = conv_input(spec, data.x)
    args = ((spec.sh, spec.sw), padding, (spec.dh, spec.dw), spec.g)

    def call() -> None:
        with torch.no_grad():
            F.conv2d(x, data.weight, data.bias, *args)
        if device == "cuda":
            torch.cuda.synchronize()

    return call


@pytest.mark.parametrize(("case", "device", "backend"), _cases())
def test_conv(benchmark, case: str, device: str, backend: str) -> None:  # type: ignore[no-untyped-def]
    workload = WORKLOADS[case]
    spec = workload.spec
    benchmark.group = f"{spec.name} {device} {DTYPE}"
    benchmark.extra_info.update(
        case=case, spec=spec.format(), backend=backend, device=device, dtype=DTYPE,
        flops=spec.flops, threads=torch.get_num_threads(),
    )  # fmt: skip
    if backend == YARDSTICK:
        benchmark(_yardstick(workload, device))
    else:
        r = make_ready(Case(workload, backend, device, DTYPE), *_inputs(workload))
        benchmark.extra_info.update(
            algorithm=r.algorithm,
            rel_l2_error=r.accuracy.rel_l2_error,
            tolerance=r.tolerance,
            peak_bytes=r.peak_bytes,
            prepare_bytes=r.prepare_bytes,
        )
        benchmark(r)
        assert r.accurate, f"error {r.accuracy.rel_l2_error:.3g} > tolerance {r.tolerance:.3g}"
    if benchmark.stats is not None:  # None when benchmarks are disabled
        median = benchmark.stats.stats.median
        benchmark.extra_info["gflops"] = spec.flops / median / 1e9 if median > 0 else None
