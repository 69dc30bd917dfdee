"""Timing statistics and accuracy metrics — checked against independent computations."""

from __future__ import annotations

import platform
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from convbench.backends.base import has_onednn_matmul
from convbench.env import fingerprint, gemm_peak, gemm_products, gemm_rates
from convbench.measure.accuracy import compare
from convbench.measure.stats import median_ci
from convbench.measure.timing import TimingConfig, measure, summarize

samples_st = st.lists(st.floats(1e-6, 1.0, allow_nan=False), min_size=1, max_size=60)


@given(samples_st)
def test_summarize_agrees_with_numpy(samples: list[float]) -> None:
    t = summarize(samples, number=3)
    a = np.array(samples)
    assert t.median_s == pytest.approx(np.median(a))
    q1, q3 = np.percentile(a, [25, 75]) if len(a) > 1 else (a[0], a[0])
    assert t.iqr_s == pytest.approx(q3 - q1, abs=1e-15)
    assert t.min_s == a.min() and t.mean_s == pytest.approx(a.mean())
    assert t.repeats == len(samples) and t.number == 3
    assert t.noisy == (t.iqr_s / t.median_s > 0.1)


@given(samples_st)
def test_median_ci_brackets_the_median(samples: list[float]) -> None:
    lo, hi = median_ci(samples)
    assert min(samples) <= lo <= np.median(samples) <= hi <= max(samples)


def test_summarize_rejects_empty() -> None:
    with pytest.raises(ValueError):
        summarize([])


def test_measure_counts_every_call() -> None:
    calls = []
    t = measure(lambda: calls.append(1), config=TimingConfig(budget_s=0.05, warmup_s=0.01))
    warm = len(calls) - t.repeats * t.number
    assert warm >= 1
    assert t.number > 1  # a call far shorter than the clock's resolution is grouped
    assert t.repeats >= TimingConfig().min_samples
    assert len(t.samples_s) == t.repeats and all(s > 0 for s in t.samples_s)


def test_measure_stops_at_max_samples() -> None:
    cfg = TimingConfig(
        budget_s=10.0, max_samples=7, min_samples=3, rel_precision=0.0, min_sample_s=0.0
    )
    t = measure(lambda: None, config=cfg)
    assert t.repeats == 7 and t.number == 1


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA is not available")
def test_measure_cuda_synchronises() -> None:
    a = torch.randn(2048, 2048, device="cuda")
    t = measure(lambda: a @ a, device="cuda", config=TimingConfig.quick())
    # 2048^3 multiply-adds cannot finish in a microsecond: the events saw the kernel.
    assert t.median_s > 1e-6


def test_compare_exact_perturbation() -> None:
    gen = torch.Generator().manual_seed(1)
    ref = torch.randn(2, 3, 4, 5, generator=gen, dtype=torch.float64)
    delta = torch.zeros_like(ref)
    delta[0, 1, 2, 3] = 0.5
    acc = compare((ref + delta).float(), ref)
    assert acc.max_abs_error == pytest.approx(0.5, rel=1e-6)
    assert acc.rel_l2_error == pytest.approx(0.5 / ref.norm().item(), rel=1e-5)
    assert compare(ref, ref).rel_l2_error == 0.0


def test_compare_non_finite_and_shape() -> None:
    ref = torch.ones(2, 2, dtype=torch.float64)
    bad = ref.clone()
    bad[0, 0] = float("nan")
    assert compare(bad, ref).rel_l2_error == float("inf")
    with pytest.raises(ValueError, match="shape"):
        compare(torch.ones(3), torch.ones(2))


FAULTS_PER_CALL = """
import resource, sys, torch
from convbench.measure.timing import Clock
if sys.argv[1:] == ["clock"]:
    Clock("cpu")
torch.set_num_threads(2)
spectra = torch.fft.rfft2(torch.randn(16, 128, 128))
torch.fft.irfft2(spectra, s=(128, 128))
spectra = torch.fft.rfft2(torch.randn(16, 140, 140))
for _ in range(3):
    torch.fft.irfft2(spectra, s=(140, 140))
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(20):
    torch.fft.irfft2(spectra, s=(140, 140))
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 20)
"""


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="the policy is glibc's mallopt")
def test_a_timing_process_keeps_freed_memory() -> None:
    """Once a process has a Clock, a call that frees and allocates the same buffers every
    time faults no pages in: the allocator's history (here one transform of another size,
    which cost each of the next ones 896 page faults in this script, under glibc's moving
    thresholds) no longer shows in what the timer reads."""
    done = subprocess.run(
        [sys.executable, "-c", FAULTS_PER_CALL, "clock"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert float(done.stdout) < 5


def test_the_gemm_roofline_is_read_after_a_warm_up() -> None:
    """The peak is the best of the calls after ``warmup_s`` of the same GEMM, not of the
    first, cold ones: each library's calls take at least that long, and the rate is a real
    GEMM's."""
    libraries = len(gemm_products("cpu", n=8))
    start = time.perf_counter()
    library, rate = gemm_peak("cpu", n=128, repeats=3, warmup_s=0.2)
    assert time.perf_counter() - start >= 0.2 * libraries
    assert library in gemm_products("cpu", n=8) and 0 < rate < 1e5


def test_the_gemm_roofline_is_the_fastest_librarys() -> None:
    """Every GEMM library the backends may choose is timed for the peak, and computes the
    same product: on a CPU whose BLAS runs slower kernels than oneDNN's (MKL on AMD) a peak
    taken from torch.mm alone read im2col's oneDNN products at twice the peak. The fingerprint
    names the library of its peak."""
    products = gemm_products("cpu", n=64)
    want = {"torch.mm", "oneDNN matmul"} if has_onednn_matmul(torch.ones(1)) else {"torch.mm"}
    assert set(products) == want
    results = [torch.as_tensor(product()).clone() for product in products.values()]
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], rtol=1e-5, atol=1e-4)
    rates = gemm_rates("cpu", n=128, repeats=3, warmup_s=0.05)
    assert set(rates) == want and all(r > 0 for r in rates.values())
    env = fingerprint(torch.get_num_threads(), ["cpu"])
    assert env["gemm_library"]["cpu"] in want and env["gemm_gflops"]["cpu"] > 0
