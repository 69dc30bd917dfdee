"""The backend contract: what every convolution algorithm offers the harness.

A backend knows nothing of timing. ``prepare`` does the one-off work (weight transforms, plans,
autotuning) and returns the callable that is timed, the way oneDNN and cuDNN separate primitive
creation from execution.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from convbench.spec import ConvSpec

__all__ = [
    "FLOAT_TOLERANCE",
    "GEMM_UNITS",
    "NEAR",
    "Backend",
    "Block",
    "Candidate",
    "Prepared",
    "UnsupportedConfig",
    "conv_input",
    "device_reason",
    "dtype_reason",
    "fastest",
    "has_onednn_matmul",
    "onednn_linear",
    "pad_input",
    "pad_into",
    "stage",
    "tile_blocks",
    "tuning_input",
    "unit_roundoff",
    "zero_symmetric_padding",
]


class UnsupportedConfig(ValueError):
    """A combination a backend cannot compute; its message says why."""


@dataclass
class Prepared:
    """The timed callable and what the backend can say about how it computes."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    algorithm: str = ""
    params: dict[str, Any] = field(default_factory=dict)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@runtime_checkable
class Backend(Protocol):
    name: str
    description: str

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        """``None`` if the backend can compute the case, else the reason it cannot."""

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        """One-off work for ``spec``; returns the callable mapping input to output."""

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        """The largest relative L2 error against the float64 reference that is still correct."""


_UNLABELLED = nullcontext()


def stage(name: str) -> AbstractContextManager[object]:
    """A label for one stage of a timed call (``fft/forward``, ``im2col/gemm``), which
    ``convbench profile`` reports: ``record_function(name)`` while a profiler records, else a
    context that does nothing. ``record_function`` costs about 10 µs a label even with no
    profiler running (an empty ``with`` in a loop), more inside a call: with it, in 300
    alternating pairs of calls, fft-torch took 107 µs more on one 8-channel 128² image (1.02
    against 0.93 ms), 121 µs on 16 channels, winograd-f4 94 µs on (1, 256, 14²), im2col 51 µs
    on a 1×1 layer at minibatch 8."""
    return record_function(name) if torch.autograd._profiler_enabled() else _UNLABELLED


@dataclass(frozen=True)
class Block:
    """A block of a problem's work: whole rows ``rows`` (of tiles, of output pixels) of the
    images ``images``, ``tiles`` items in all."""

    images: slice
    rows: slice
    tiles: int


def tile_blocks(n: int, th: int, tw: int, target: int) -> list[Block]:
    """Blocks of about ``target`` items covering n images of th×tw items (tiles or pixels):
    several whole images where an image is small, else runs of rows of one image. Blocked
    work keeps what one step hands the next in the cache."""
    target = max(1, target)
    if th * tw <= target:
        step = max(1, target // (th * tw))
        return [
            Block(slice(i, min(i + step, n)), slice(0, th), (min(i + step, n) - i) * th * tw)
            for i in range(0, n, step)
        ]
    step = max(1, target // tw)
    return [
        Block(slice(i, i + 1), slice(r, min(r + step, th)), (min(r + step, th) - r) * tw)
        for i in range(n)
        for r in range(0, th, step)
    ]


Candidate = tuple[str, Callable[[], Callable[[torch.Tensor], torch.Tensor]]]
"""A way to compute a problem: its label and what builds its callable (workspaces included)."""


NEAR = 1.3
"""How much slower in turn than the best a candidate may be and still meet it side by side:
the machine's drift over a pass in turn has moved a candidate's time 1.3–1.4-fold (15.6 against
11.0–12.0 ms in other processes)."""


def fastest(
    candidates: Iterable[Candidate],
    x: torch.Tensor,
    calls: int = 2,
    warm_s: float = 0.005,
    rounds: int = 3,
    near: float = NEAR,
    challengers: int = 3,
) -> tuple[str, Callable[[torch.Tensor], torch.Tensor], dict[str, float]]:
    """The quickest of ``candidates`` on input ``x``: its label, its callable and every
    candidate's milliseconds as timed in turn (the best of its calls there; the meetings
    below decide among those within ``near`` of the best, and are not recorded).

    How a problem is best split (tile sizes, blocking) depends on caches, the FFT and GEMM
    libraries and the thread count in ways a model ranks but cannot settle, so the model
    proposes a few and prepare times them, as FFTW's planner and cuDNN's benchmark mode do.
    Each candidate is first timed in turn (``calls`` calls after ``warm_s`` of untimed ones).
    Then the best of that pass meets each of the next ``challengers`` within ``near`` times its
    time, ``calls`` calls back to back in each of ``rounds`` alternating turns, and the quicker
    of each meeting stays. Back to back, because a benchmark times a callable call after call,
    and the first call after another candidate's may find its data gone from the caches: with
    one call a turn, a one-image 16-channel 11×11 layer at 128² kept 42×54 tiles in 3 of 8 runs
    of ``prepare`` (0 of 8 with two calls a turn), whose calls take 1.96 ms one after another,
    where 36×140 takes 1.60 and 140×140 1.53, and 8 → 16 channels at 130² kept its fastest
    tiling in 4 of 8 (7 of 8 with two). The meetings are there because a machine's speed drifts
    over seconds and a pass in turn ranks near ties by it: on an 8-channel 11×11 layer at 128²,
    minibatch 16, the whole-image tiling read 15.6 ms in turn once (11.0–12.0 ms in four other
    processes), lost to a 54×140 tiling at 14.4 ms, and the layer ran 1.76× torch instead of
    2.4–3.1×. At most two candidates are built at a time (the one kept and the one timed), so
    their workspaces never coexist with a third's.

    With ``CONVBENCH_TUNING=off`` in the environment the first candidate (the model's choice) is
    taken untimed: what is computed is then the same from run to run, as counting instructions
    needs.
    """
    if os.environ.get("CONVBENCH_TUNING") == "off":
        label, build = next(iter(candidates))
        return label, build(), {}
    sync = torch.cuda.synchronize if x.is_cuda else (lambda: None)
    Run = Callable[[torch.Tensor], torch.Tensor]

    def best_of(fn: Run, n: int) -> float:
        best = float("inf")
        for _ in range(n):
            sync()
            t0 = time.perf_counter()
            fn(x)
            sync()
            best = min(best, time.perf_counter() - t0)
        return best

    def warmed(build: Callable[[], Run]) -> Run:
        fn = build()
        start = time.perf_counter()
        fn(x)
        while time.perf_counter() - start < warm_s:
            fn(x)
        return fn

    times: dict[str, float] = {}
    builds = dict(candidates)
    if not builds:
        raise ValueError("no candidate to choose from")
    chosen, kept = "", None
    with torch.no_grad():
        for label, build in builds.items():
            fn = warmed(build)
            times[label] = best_of(fn, calls)
            if kept is None or times[label] < times[chosen]:
                chosen, kept = label, fn
            del fn
        rivals = sorted(
            (k for k in builds if k != chosen and times[k] < near * times[chosen]),
            key=times.__getitem__,
        )[:challengers]
        for rival in rivals:
            fn = warmed(builds[rival])
            pair = {chosen: kept, rival: fn}
            again = dict.fromkeys(pair, float("inf"))
            for _ in range(rounds):
                for label, run in pair.items():
                    again[label] = min(again[label], best_of(run, calls))
            if again[rival] < again[chosen]:
                chosen, kept = rival, fn
            del fn, pair
    assert kept is not None
    return chosen, kept, {k: round(v * 1e3, 3) for k, v in times.items()}


def has_onednn_matmul(weight: torch.Tensor) -> bool:
    """Whether ``weight``'s products can go to oneDNN's matmul: a float32 CPU tensor, in a
    torch built with oneDNN (its x86 and Arm builds) that exposes the operator."""
    return (
        weight.device.type == "cpu"
        and weight.dtype == torch.float32
        and torch.backends.mkldnn.is_available()
        and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    )


def onednn_linear(
    weight: torch.Tensor, bias: torch.Tensor | None, rows: int
) -> Callable[[torch.Tensor], torch.Tensor]:
    """a ↦ a · weightᵀ + bias (``weight`` [N × K], ``a`` [M × K]) by oneDNN's matmul, the
    weight packed once into its blocked layout for products of about ``rows`` rows and the
    bias added as it writes the result (the operator torch's compiler calls for a linear
    layer on the CPU). It returns a new [M × N] tensor: it has no ``out=``."""
    packed = torch.ops.mkldnn._reorder_linear_weight(weight.contiguous(), rows)

    def linear(a: torch.Tensor) -> torch.Tensor:
        return torch.ops.mkldnn._linear_pointwise(a, packed, bias, "none", [], "")

    return linear


def has_onednn_grouped(weight: torch.Tensor) -> bool:
    """Whether :func:`onednn_grouped_products` can take ``weight``'s products: as
    :func:`has_onednn_matmul`, with oneDNN's convolution operators exposed."""
    return (
        has_onednn_matmul(weight)
        and hasattr(torch.ops.mkldnn, "_convolution_pointwise")
        and hasattr(torch.ops.mkldnn, "_reorder_convolution_weight")
    )


def onednn_grouped_products(u: torch.Tensor, rows: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """a ↦ the G products a[:, f] · u[f] (``u`` (G, C, K), ``a`` (M, G, C) contiguous, M
    about ``rows``) as (M, G, K), in one call: a 1×1 convolution of G groups over a
    channels-last image of M pixels and G·C channels, by oneDNN, its weights packed once for
    it (packing them at every call, as ``F.conv2d`` does, took 15.2 against 2.1 ms for 36
    products of 32 rows and 512 × 512 channels on a Zen 5, 1.02–1.61× as long on 98 to 1568
    rows of 64 to 256 channels). It returns a new tensor, a view of
    the channels-last result where oneDNN returns one (else a copy)."""
    g, c, k = u.shape
    filters = u.transpose(1, 2).reshape(g * k, c, 1, 1)
    filters = filters.contiguous(memory_format=torch.channels_last)
    at = ([0, 0], [1, 1], [1, 1], g)
    packed = torch.ops.mkldnn._reorder_convolution_weight(filters, *at, [1, g * c, rows, 1])

    def products(a: torch.Tensor) -> torch.Tensor:
        m = a.shape[0]
        image = a.view(1, m, 1, g * c).permute(0, 3, 1, 2)
        out = torch.ops.mkldnn._convolution_pointwise(image, packed, None, *at, "none", [], "")
        return out.permute(0, 2, 3, 1).reshape(m, g, k)

    return products


def tuning_input(spec: ConvSpec, weight: torch.Tensor) -> torch.Tensor:
    """A seeded random input of ``spec``'s shape, on ``weight``'s device and in its dtype, to
    time candidates on in ``prepare`` (which is not given the real input)."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(spec.input_shape, generator=gen, dtype=torch.float32)
    return x.to(device=weight.device, dtype=weight.dtype)


def device_reason(device: str) -> str | None:
    """Why ``device`` cannot run torch code here, or ``None`` if it can."""
    if device == "cpu":
        return None
    if device == "cuda":
        return None if torch.cuda.is_available() else "CUDA is not available on this machine"
    return f"unknown device {device!r}"


def pad_input(spec: ConvSpec, x: torch.Tensor) -> torch.Tensor:
    """The input of the plain "valid" problem equivalent to ``spec``.

    Negative padding crops first; the positive padding is then added in the spec's padding
    mode (``zeros``, ``reflect``, ``replicate``, ``circular``, as in ``nn.Conv2d``), so every
    algorithm after this sees one simple problem.
    """
    pads = (spec.pw, spec.pw_r, spec.ph, spec.ph_r)
    if min(pads) < 0:
        left, right, top, bottom = (max(-p, 0) for p in pads)
        x = x[..., top : x.shape[-2] - bottom, left : x.shape[-1] - right]
        pads = tuple(max(p, 0) for p in pads)  # type: ignore[assignment]
    if any(pads):
        mode = "constant" if spec.padding_mode == "zeros" else spec.padding_mode
        x = F.pad(x, pads, mode=mode)
    return x


def pad_into(spec: ConvSpec, x: torch.Tensor, buf: torch.Tensor) -> None:
    """Write :func:`pad_input`'s result into the top-left corner of a preallocated ``buf``.

    Zero padding writes only the input (the buffer's zero border is kept from call to call);
    other padding modes go through :func:`pad_input`. Whatever lies beyond the padded input
    in ``buf`` is left as it is.
    """
    src, top, left = padded_part(spec, x)
    buf[:, :, top : top + src.shape[2], left : left + src.shape[3]].copy_(src)


def padded_part(spec: ConvSpec, x: torch.Tensor) -> tuple[torch.Tensor, int, int]:
    """What :func:`pad_into` writes, and the row and column where it goes: for zero padding
    the input (cropped where the padding is negative) inside a border the buffer keeps, for
    the other modes the whole of :func:`pad_input`'s result."""
    if spec.padding_mode != "zeros":
        return pad_input(spec, x), 0, 0
    ct, cb, cl, cr = (max(-p, 0) for p in (spec.ph, spec.ph_r, spec.pw, spec.pw_r))
    h, w = spec.ih - ct - cb, spec.iw - cl - cr
    return x[:, :, ct : ct + h, cl : cl + w], max(spec.ph, 0), max(spec.pw, 0)


def conv_input(spec: ConvSpec, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The input and the symmetric padding to hand ``F.conv2d`` for ``spec``.

    When torch's own symmetric zero padding expresses the problem, the input is returned
    untouched; else it goes through :func:`pad_input` and the convolution sees a "valid" one.
    """
    sym = zero_symmetric_padding(spec)
    return (x, sym) if sym is not None else (pad_input(spec, x), (0, 0))


def zero_symmetric_padding(spec: ConvSpec) -> tuple[int, int] | None:
    """The padding ``F.conv2d`` itself can take for ``spec``, or ``None`` if it needs F.pad."""
    return spec.symmetric_padding if spec.padding_mode == "zeros" else None


def unit_roundoff(dtype: torch.dtype) -> float:
    """u, the largest relative error of one rounding to ``dtype`` (half its machine epsilon):
    2^-53 for float64, 2^-24 float32, 2^-11 float16, 2^-8 bfloat16. CPU tolerances are counted
    in it, so that one measured number of units serves every dtype."""
    return torch.finfo(dtype).eps / 2


GEMM_UNITS = {torch.float64: 36, torch.float32: 36, torch.float16: 3, torch.bfloat16: 3}
"""CPU tolerance, in units of the dtype's rounding, of an algorithm that sums the direct
convolution's products in GEMMs (``im2col``, ``direct``, oneDNN, torch's own im2col path).

Each CPU tolerance sits near the geometric middle between the worst error seen on any problem
(the network suites, the other suites, thousands of fuzzed problems) and ten times the worst on
the network layers tests/test_tolerances.py measures: as much room above the real error as below
an error ten times larger, which must fail.

float32 and float64: the inputs' rounding and the sums' reach 8 units on the network suites'
layers (reductions of up to 4608 terms): GEMM kernels sum in short blocks, so the error hardly
grows with the reduction. oneDNN's (``torch``) grows with the kernel's taps instead, to 18 units
on 15×15 kernels (``large_kernel``), and a fuzzed problem of a few dozen outputs, whose sums
cancel, reaches 23. Ten times the networks' worst is 59 units or more: 36 units.

float16 and bfloat16: the products are summed in float32 (oneDNN, torch's CPU GEMM), so what is
left is the rounding of the two inputs and of the output: 0.9 units at most on every suite, ten
times the networks' worst 7.4 units: 3 units."""

FLOAT_TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}
"""Relative L2 error bounds off the CPU (CUDA), where the errors have not been measured: cuBLAS
may sum half types in half precision and cuDNN picks its own algorithms, FFT and Winograd among
them. Until they are measured there, these keep the earlier, wide bounds."""


def dtype_reason(dtype: torch.dtype, allowed: tuple[torch.dtype, ...]) -> str | None:
    if dtype in allowed:
        return None
    names = ", ".join(str(d).removeprefix("torch.") for d in allowed)
    return f"{str(dtype).removeprefix('torch.')} is not supported (this algorithm takes {names})"
