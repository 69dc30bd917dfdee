"""Peak and retained memory, measured: backends with scratch buffers of known size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from convbench import backends
from convbench.backends.base import Prepared
from convbench.measure.memory import allocation
from convbench.spec import parse
from convbench.suites import Workload
from convbench.sweep import Case, ready

MIB = 2**20
SPEC = parse("mb1ic4ih8oc4oh8kh3ph1")
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="CUDA is not available"))]  # fmt: skip


class Scratch:
    """A real convolution that keeps ``kept`` bytes from ``prepare`` and uses ``scratch`` bytes
    per call, from torch or from NumPy."""

    description = "a test backend with known memory"

    def __init__(self, name: str, kept: int, scratch: int, numpy: bool = False) -> None:
        self.name, self.kept, self.scratch, self.numpy = name, kept, scratch, numpy

    def supports(self, spec, device, dtype):  # type: ignore[no-untyped-def]
        return None if device == "cpu" or not self.numpy else "NumPy scratch is CPU only"

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        return 1e-5

    def prepare(self, spec, weight, bias):  # type: ignore[no-untyped-def]
        kept = torch.ones(self.kept, dtype=torch.uint8, device=weight.device)

        def run(x: torch.Tensor) -> torch.Tensor:
            if self.numpy:
                buf = np.ones(self.scratch, dtype=np.uint8)
                assert buf.sum() == self.scratch
            else:
                buf = torch.ones(self.scratch, dtype=torch.uint8, device=x.device)
                buf.add_(kept[:1])
            return F.conv2d(x, weight, bias, padding=1)

        return Prepared(run, "test")


def _within(measured: int, expected: int, rel: float = 0.05) -> bool:
    return abs(measured - expected) <= rel * expected


@pytest.mark.parametrize("device", DEVICES)
def test_torch_scratch_and_prepared_state_are_measured(registry: None, device: str) -> None:
    backends.register(Scratch("test-mem-torch", kept=16 * MIB, scratch=64 * MIB))
    r = ready(Case(Workload(SPEC), "test-mem-torch", device, "float32"))
    assert _within(r.peak_bytes, 64 * MIB), r.peak_bytes
    assert _within(r.prepare_bytes, 16 * MIB), r.prepare_bytes


def test_numpy_scratch_is_measured(registry: None) -> None:
    backends.register(Scratch("test-mem-numpy", kept=MIB, scratch=64 * MIB, numpy=True))
    r = ready(Case(Workload(SPEC), "test-mem-numpy", "cpu", "float32"))
    assert _within(r.peak_bytes, 64 * MIB), r.peak_bytes
    assert _within(r.prepare_bytes, MIB), r.prepare_bytes


@pytest.mark.parametrize("device", DEVICES)
def test_peak_counts_what_was_live_at_once_not_the_sum(device: str) -> None:
    def two_buffers() -> torch.Tensor:
        a = torch.ones(32 * MIB, dtype=torch.uint8, device=device)
        b = torch.ones(8 * MIB, dtype=torch.uint8, device=device)
        del a
        c = torch.ones(16 * MIB, dtype=torch.uint8, device=device)
        b[0] = c[-1]
        return b  # c is freed on return: 8 MiB are left

    kept_before = torch.ones(4 * MIB, dtype=torch.uint8, device=device)
    out, used = allocation(two_buffers, device)
    assert _within(used.peak_bytes, 40 * MIB) and _within(used.net_bytes, 8 * MIB), used
    assert out.numel() == 8 * MIB and kept_before.numel() == 4 * MIB


@pytest.mark.parametrize("backend", ["fft-torch", "fft-scipy"])
def test_fft_spectrum_shows_in_prepare_bytes(backend: str) -> None:
    """What prepare keeps is the weight spectrum and the workspaces of the tiling it chose,
    and nothing else of size (the candidates it timed and dropped are freed)."""
    spec = parse("mb2ic16ih32oc16oh32kh5ph2")
    r = ready(Case(Workload(spec), backend, "cpu", "float32"))
    (fh, fw), (sh, sw) = r.params["fft_size"], r.params["tile_step"]
    nh, nw = r.params["tiles"]
    spectra = spec.mb * nh * nw * fh * (fw // 2 + 1) * 8  # complex64, per channel
    spectrum = spec.oc * spec.ic * fh * (fw // 2 + 1) * 8
    padded = spec.mb * spec.ic * ((nh - 1) * sh + fh) * ((nw - 1) * sw + fw) * 4
    tiles_out = spec.mb * spec.oc * nh * nw * fh * fw * 4
    workspaces = padded + spectra * (2 * spec.ic + 2 * spec.oc) + tiles_out
    weights = spec.oc * spec.ic * spec.kh * spec.kw * 4
    assert spectrum > 10 * weights
    assert spectrum <= r.prepare_bytes <= 1.25 * (spectrum + workspaces), (
        r.prepare_bytes,
        spectrum,
    )
    assert r.peak_bytes > 0
