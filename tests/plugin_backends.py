"""Backends that misbehave on purpose, loaded through ``CONVBENCH_PLUGINS`` by the CLI tests.

They compute real convolutions (through torch) where they do not misbehave, so every other
part of the harness runs for real around them.
"""

from __future__ import annotations

import os
import signal
import time

import torch
import torch.nn.functional as F

from convbench import backends
from convbench.backends.base import Prepared, UnsupportedConfig, conv_input
from convbench.spec import ConvSpec


def _conv(spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None):
    def run(x: torch.Tensor) -> torch.Tensor:
        xp, padding = conv_input(spec, x)
        return F.conv2d(xp, weight, bias, (spec.sh, spec.sw), padding, (spec.dh, spec.dw), spec.g)

    return run


class _Base:
    description = "a test backend"

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        return None if device == "cpu" else "CPU only"

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        return 1e-5


class CrashOn1x1(_Base):
    """Raises while running any 1x1 problem; correct elsewhere."""

    name = "test-crash-1x1"

    def prepare(self, spec, weight, bias):
        if spec.kh == 1:

            def crash(x: torch.Tensor) -> torch.Tensor:
                raise RuntimeError("deliberate failure on a 1x1 kernel")

            return Prepared(crash, "test")
        return Prepared(_conv(spec, weight, bias), "test")


class Wrong(_Base):
    """Off by a scale factor: measurably inaccurate."""

    name = "test-wrong"

    def prepare(self, spec, weight, bias):
        run = _conv(spec, weight, bias)
        return Prepared(lambda x: run(x) * 1.01, "test")


class RefusesStride(_Base):
    """Declines strided problems in ``prepare``, as an algorithm discovers it cannot."""

    name = "test-no-stride"

    def prepare(self, spec, weight, bias):
        if spec.sh > 1 or spec.sw > 1:
            raise UnsupportedConfig("stride > 1 is not supported by this test backend")
        return Prepared(_conv(spec, weight, bias), "test")


class Injected(_Base):
    """A real convolution, slowed by a sleep of ``CONVBENCH_TEST_DELAY_S`` seconds and scaled by
    ``CONVBENCH_TEST_SCALE`` (by default neither): a regression injected between two runs."""

    name = "test-injected"

    def prepare(self, spec, weight, bias):
        run = _conv(spec, weight, bias)
        delay = float(os.environ.get("CONVBENCH_TEST_DELAY_S", 0))
        scale = float(os.environ.get("CONVBENCH_TEST_SCALE", 1))

        def injected(x: torch.Tensor) -> torch.Tensor:
            if delay:
                time.sleep(delay)
            return run(x) * scale if scale != 1 else run(x)

        return Prepared(injected, "test")


class Hostile(_Base):
    """Fails with the text of ``CONVBENCH_TEST_MESSAGE``: markup, in the report's tests, which
    every page must show as text."""

    name = "test-hostile"

    def prepare(self, spec, weight, bias):
        raise RuntimeError(os.environ.get("CONVBENCH_TEST_MESSAGE", "deliberate failure"))


class SegfaultOn1x1(_Base):
    """Kills its process with SIGSEGV on 1x1 problems — at its first call, or at call number
    ``CONVBENCH_TEST_CRASH_AT`` (in the timed rounds) — as a buggy native kernel does."""

    name = "test-segv-1x1"

    def prepare(self, spec, weight, bias):
        run = _conv(spec, weight, bias)
        if spec.kh != 1:
            return Prepared(run, "test")
        at, calls = int(os.environ.get("CONVBENCH_TEST_CRASH_AT", 1)), []

        def crash(x: torch.Tensor) -> torch.Tensor:
            calls.append(1)
            if len(calls) >= at:
                os.kill(os.getpid(), signal.SIGSEGV)
            return run(x)

        return Prepared(crash, "test")


class HangOn1x1(_Base):
    """Never returns on 1x1 problems: a deadlock in a user's backend."""

    name = "test-hang-1x1"

    def prepare(self, spec, weight, bias):
        run = _conv(spec, weight, bias)
        if spec.kh != 1:
            return Prepared(run, "test")

        def hang(x: torch.Tensor) -> torch.Tensor:
            while True:
                time.sleep(1)

        return Prepared(hang, "test")


class KillsItsParentOn1x1(_Base):
    """Kills its parent process on 1x1 problems: under ``--dask``, the Dask worker that runs the
    case, as a host that goes down does."""

    name = "test-kill-parent-1x1"

    def prepare(self, spec, weight, bias):
        run = _conv(spec, weight, bias)
        if spec.kh != 1:
            return Prepared(run, "test")

        parent = os.getppid()  # taken now: once it is gone, another process would be named

        def kill(x: torch.Tensor) -> torch.Tensor:
            if parent > 1:
                os.kill(parent, signal.SIGKILL)
            os._exit(1)  # the host is down: nothing of it goes on

        return Prepared(kill, "test")


for _b in (
    KillsItsParentOn1x1(),
    CrashOn1x1(),
    Wrong(),
    RefusesStride(),
    Injected(),
    Hostile(),
    SegfaultOn1x1(),
    HangOn1x1(),
):
    backends.register(_b, replace=True)
