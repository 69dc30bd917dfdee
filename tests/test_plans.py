"""How a backend chooses to compute a problem: every candidate it may time in ``prepare`` is
correct (not only the one that happened to win on this machine), the blocks cover the work
exactly once, the FFT tilings cover the output, and ``fastest`` keeps the fastest."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable

import numba
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.profiler import ProfilerActivity, profile

from convbench import backends
from convbench.backends.base import (
    NEAR,
    fastest,
    has_onednn_grouped,
    has_onednn_matmul,
    tile_blocks,
    unit_roundoff,
)
from convbench.backends.fft import (
    DISTINCT_AREA,
    FAST_SIZES,
    FFTScipyBackend,
    FFTTorchBackend,
    cost,
    plan,
)
from convbench.backends.im2col import Im2colBackend
from convbench.backends.numba_pool import POOL, on_pool, use_threads
from convbench.backends.winograd import GEMM_LIBRARIES, WinogradBackend
from convbench.inputs import make_inputs
from convbench.measure.accuracy import compare
from convbench.spec import ConvSpec, parse
from convbench.suites import fuzz
from convbench.sweep import reference

Run = Callable[[torch.Tensor], torch.Tensor]


def _assert_correct(spec: ConvSpec, name: str, build: Callable[..., Run]) -> None:
    """The callable ``build(spec, weight, bias)`` makes agrees with the float64 reference
    within ``name``'s float32 tolerance, on two calls (workspaces are reused)."""
    inputs = make_inputs(spec, seed=3)
    data = inputs.to("cpu", torch.float32)
    run = build(spec, data.weight, data.bias)
    want = reference(spec, inputs)
    tol = backends.get(name).tolerance(torch.float32, "cpu")
    with torch.no_grad():
        for _ in range(2):
            y = run(data.x)
            assert y.shape == spec.output_shape
            err = compare(y, want).rel_l2_error
            assert err <= tol, f"{name} {spec.format()}: {err:.3g}"


SPECS = [
    "mb3ic6ih19iw23oc5kh3kw3ph1pw1",
    "mb2ic8ih20oc8kh3ph1g2",
    "mb2ic4ih40oc6kh5ph2dh1",
    "mb2ic8ih33oc8kh11ph5sh2",
    "mb1ic4ih30iw9oc4kh7kw3ph3pw1",
    "--padding-mode=reflect mb2ic3ih17oc4kh3ph1",
    "mb2ic5ih12oc3kh3ph-1",
]


@pytest.mark.parametrize("desc", SPECS)
@pytest.mark.parametrize("cls", [FFTTorchBackend, FFTScipyBackend])
def test_every_fft_tiling_is_correct(desc: str, cls: type) -> None:
    """Each tiling, in one block and in blocks of one tile row (or one image) each, with the
    channel sums as GEMMs and as multiply-accumulates, and SciPy's FFTs on one thread too."""
    spec = parse(desc)
    tilings = plan(spec, count=4)
    assert len(tilings) >= 2
    for tiling in tilings:
        for size in (1, None):
            for mac in (False, True):
                for workers in (None, 1) if cls.own_threads else (None,):
                    _assert_correct(
                        spec,
                        cls.name,
                        lambda s, w, b, t=tiling, z=size, m=mac, n=workers: cls().build(
                            s, t, w, b, z, m, n
                        ),
                    )


@pytest.mark.parametrize("desc", SPECS)
def test_scipys_ffts_in_parts_equal_one_call(desc: str) -> None:
    """SciPy's FFTs cut into two or three parts, each on a thread of torch's pool, give the
    very numbers of one call over the whole batch: each 2-D transform is computed alone either
    way, so a part that misses or overlaps a slice shows as a difference."""
    spec = parse(desc)
    data = make_inputs(spec, seed=5).to("cpu", torch.float32)
    backend = FFTScipyBackend()
    for tiling in plan(spec):
        for mac in (False, True):
            one = backend.build(spec, tiling, data.weight, data.bias, mac=mac, workers=1)
            want = one(data.x)
            for parts in (2, 3):
                run = backend.build(spec, tiling, data.weight, data.bias, mac=mac, workers=parts)
                assert torch.equal(run(data.x), want), (tiling.size, mac, parts)


@pytest.mark.skipif(POOL < 2, reason="Numba's pool has one thread on this machine")
def test_on_pool_runs_each_part_on_a_thread_of_its_own_and_raises_a_parts_error() -> None:
    """Two parts on two threads of the pool, at once: each waits until the other has
    started, which only parts on distinct threads can do; an exception in one part is raised
    in the caller after the other part has ended, and torch's thread count is left alone."""
    threads = torch.get_num_threads()
    try:
        use_threads(2)
        started = [threading.Event(), threading.Event()]
        where: dict[int, int] = {}

        def meet(part: int) -> None:
            started[part].set()
            assert started[1 - part].wait(timeout=30), "the other part never started"
            where[part] = threading.get_native_id()

        on_pool(meet, 2)
        assert len(set(where.values())) == 2
        ended: list[int] = []

        def fail(part: int) -> None:
            if part == 0:
                raise ValueError("part 0 failed")
            time.sleep(0.05)
            ended.append(part)

        with pytest.raises(ValueError, match="part 0 failed"):
            on_pool(fail, 2)
        assert ended == [1]
        assert torch.get_num_threads() == 2
    finally:
        use_threads(threads)


WINOGRAD_CASES = [
    (d, m)
    for d in SPECS
    for m in (2, 4, 6)
    if WinogradBackend(m).supports(parse(d), "cpu", torch.float32) is None
]


def _winograd_engines(desc: str) -> list[tuple[str, str]]:
    """(transforms, engine) pairs a problem can be built with on this CPU: bmm either way,
    oneDNN's matmul where it takes the products, its grouped convolution after the fused
    transforms (which lay the tiles out for it)."""
    one_group = parse(desc).g == 1
    pairs = [("fused", "bmm"), ("torch", "bmm")]
    if one_group and has_onednn_matmul(torch.ones(1)):
        pairs += [("fused", "onednn"), ("torch", "onednn")]
    if one_group and has_onednn_grouped(torch.ones(1)):
        pairs += [("fused", "grouped")]
    return pairs


@pytest.mark.parametrize(
    ("desc", "m", "transforms", "gemm_by"),
    [(d, m, *pair) for d, m in WINOGRAD_CASES for pair in _winograd_engines(d)],
)
@pytest.mark.parametrize("target", [1, 3, 10**6])
def test_every_winograd_blocking_is_correct(
    desc: str, m: int, transforms: str, gemm_by: str, target: int
) -> None:
    """Both ways of transforming (the fused CPU kernels, and torch's operators, which CUDA
    takes) at every blocking, from a tile a block to one block of every tile, with the
    products by torch's bmm and, where it takes them, by oneDNN's matmul and (after the fused
    transforms, tile by tile) by oneDNN's grouped convolution."""
    spec = parse(desc)
    backend = WinogradBackend(m)

    def blocked(s: ConvSpec, w: torch.Tensor, b: torch.Tensor | None) -> Run:
        blocks = tile_blocks(s.mb, -(-s.oh // m), -(-s.ow // m), target)
        return backend._blocked(s, blocks, *backend.transforms(s, w), b, transforms, gemm_by)

    _assert_correct(spec, backend.name, blocked)


def test_fused_transforms_run_on_torchs_threads() -> None:
    """A run on one thread computes every stage on one: the fused kernels take torch's thread
    count at every call, not Numba's default of every core."""
    spec = parse("mb1ic8ih12oc8kh3ph1")
    data = make_inputs(spec).to("cpu", torch.float32)
    run = backends.get("winograd-f4").prepare(spec, data.weight, data.bias)
    assert run.params["transforms"] == "fused" and "fused transforms" in run.algorithm
    threads = torch.get_num_threads()
    try:
        for n in (1, threads):
            torch.set_num_threads(n)
            run(data.x)
            assert numba.get_num_threads() == min(n, numba.config.NUMBA_NUM_THREADS)
    finally:
        torch.set_num_threads(threads)


def test_numbas_pool_leaves_torchs_thread_count_alone() -> None:
    """Launching Numba's pool (once a process, at the first fused call) sets the thread count
    of the OpenMP runtime it shares with torch: a run on one thread stays on one."""
    script = (
        "import torch; torch.set_num_threads(1)\n"
        "from convbench import backends\n"
        "from convbench.inputs import make_inputs\n"
        "from convbench.spec import parse\n"
        "spec = parse('mb1ic8ih12oc8kh3ph1')\n"
        "d = make_inputs(spec).to('cpu', torch.float32)\n"
        "run = backends.get('winograd-f4').prepare(spec, d.weight, d.bias)\n"
        "run(d.x)\n"
        "print(run.params['transforms'], torch.get_num_threads())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["fused", "1"]


STRIDED = [
    "mb2ic6ih17iw12oc4kh3kw2sh3sw2dh2ph2",
    "mb3ic4ih15oc6kh3sh2ph1g2",
    "mb2ic4ih14oc4kh3sh2dh2",
]


@pytest.mark.parametrize("desc", [*SPECS, *STRIDED])
def test_every_im2col_blocking_is_correct(desc: str) -> None:
    """Unfolded columns in blocks of 1, 7 and every pixel, made by all threads block after
    block or by each thread its own blocks, and the columns as views in runs of as many
    (strides split the input into phases; with a dilation of the stride, only one phase is
    read)."""
    spec = parse(desc)
    for n in (1, 7, 10**6):
        for onednn in _gemm_libraries(spec):
            for apart in (False, True):
                _assert_correct(
                    spec,
                    "im2col",
                    lambda s, w, b, r=n, o=onednn, a=apart: Im2colBackend._nhwc(s, w, b, r, o, a),
                )
        _assert_correct(spec, "im2col", lambda s, w, b, r=n: Im2colBackend._views(s, w, b, r))


def _gemm_libraries(spec: ConvSpec) -> list[bool]:
    """The unfolded columns' GEMMs prepare may time on ``spec``: torch.mm, and oneDNN's
    matmul for one group where torch has it."""
    return [False, True] if spec.g == 1 and has_onednn_matmul(torch.ones(1)) else [False]


@pytest.mark.tuned
@pytest.mark.parametrize(
    "desc", ["mb2ic8ih12oc8kh3ph1", "mb2ic8ih12oc8kh3ph1g2", "mb2ic4ih24oc4kh3ph1"]
)
def test_im2col_times_the_unfolded_columns_with_each_gemm_library(desc: str) -> None:
    """Every block size by every GEMM library at hand (oneDNN's only for one group), with
    more than one thread and more than one block also blocks made by each thread apart, and
    params name the library and the form of the one kept."""
    spec = parse(desc)
    data = make_inputs(spec).to("cpu", torch.float32)
    prepared = backends.get("im2col").prepare(spec, data.weight, data.bias)
    unfolded = [label for label in prepared.params["tuned_ms"] if not label.startswith("views")]
    blocks = {label.removesuffix(" oneDNN") for label in unfolded}
    assert len(unfolded) == len(blocks) * len(_gemm_libraries(spec))
    assert {label.endswith(" oneDNN") for label in unfolded} == set(_gemm_libraries(spec))
    several = len(tile_blocks(spec.mb, spec.oh, spec.ow, min(Im2colBackend.PER_THREAD_ROWS))) > 1
    apart = torch.get_num_threads() > 1 and several
    assert any(label.endswith(" per thread") for label in blocks) == apart
    onednn = prepared.params["gemm_library"] == "oneDNN matmul"
    if prepared.params["columns"] == "unfolded":
        apart = prepared.params["gemms_at_once"] > 1
        assert prepared.algorithm == "im2col" + " oneDNN" * onednn + ", per thread" * apart
    else:
        assert not onednn and prepared.algorithm == "im2col views"


POINTWISE = [
    "mb3ic4ih9oc6kh1sh2ph1",
    "mb2ic4ih10oc6kh1sh3g2",
    "mb3ic6ih7oc8kh1",
    "mb1ic4ih5oc4kh1ph-1",
]


@pytest.mark.parametrize("desc", POINTWISE)
def test_every_im2col_pointwise_form_is_correct(desc: str) -> None:
    _assert_pointwise_forms_correct(parse(desc))


GEMM_OPERANDS = {
    "aten::mm": (0, 1),
    "aten::addmm": (1, 2),
    "aten::addmm_": (1, 2),
    "aten::bmm": (0, 1),
    "aten::baddbmm": (1, 2),
    "aten::baddbmm_": (1, 2),
    "mkldnn::_linear_pointwise": (0, 1),
}
"""torch's GEMM operators, and where their two factors are among the inputs."""


def _products(run: Run, x: torch.Tensor) -> Counter[tuple[int, int, int, int]]:
    """The [m × k]·[k × n] products one call of ``run`` makes, with how many each of its calls
    makes at once, read from torch's profiler: its outermost GEMM operators, a batched one
    once per batch item (the products torch may run inside it are not counted again);
    oneDNN's weight is [n × k]."""
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        run(x)
    found: Counter[tuple[int, int, int, int]] = Counter()
    for event in prof.events():
        if event.name not in GEMM_OPERANDS:
            continue
        parent = event.cpu_parent
        while parent is not None and parent.name not in GEMM_OPERANDS:
            parent = parent.cpu_parent
        if parent is not None:
            continue
        i, j = GEMM_OPERANDS[event.name]
        a, b = event.input_shapes[i], event.input_shapes[j]
        n = b[-2] if event.name.startswith("mkldnn") else b[-1]
        batch = a[0] if len(a) == 3 else 1
        found[(a[-2], a[-1], n, batch)] += batch
    return found


@pytest.mark.parametrize("desc", [*SPECS, *STRIDED, *POINTWISE])
@pytest.mark.parametrize("bias", [True, False])
def test_im2col_params_name_the_products_it_makes(desc: str, bias: bool) -> None:
    """``gemm_calls`` (what ``scripts/algorithm_targets.py`` times as the layer's GEMMs alone)
    lists exactly the products each form makes, and how many at a time, as torch's profiler
    sees them: the unfolded columns in blocks of 7 pixels and of all, by each GEMM library;
    the views in runs of as many; every 1×1 form."""
    spec = dataclasses.replace(parse(desc), bias=bias)
    data = make_inputs(spec).to("cpu", torch.float32)
    forms: list[tuple[Run, list[list[int]]]] = []
    if spec.kh == spec.kw == 1:
        for every, onednn in [(False, False), (True, False), (True, True)]:
            if not onednn or True in _gemm_libraries(spec):
                run = Im2colBackend._pointwise(spec, data.weight, data.bias, every, onednn)
                forms.append((run, Im2colBackend.pointwise_calls(spec, every, onednn)))
    else:
        for rows in (7, 10**6):
            for onednn in _gemm_libraries(spec):
                run = Im2colBackend._nhwc(spec, data.weight, data.bias, rows, onednn)
                forms.append((run, Im2colBackend.nhwc_calls(spec, bias, rows, onednn)))
        for pixels in (7, 10**6):
            run = Im2colBackend._views(spec, data.weight, data.bias, pixels)
            forms.append((run, Im2colBackend.views_calls(spec, bias, pixels)))
    for run, calls in forms:
        assert _products(run, data.x) == Counter({(m, k, n, b): c for m, k, n, c, b in calls})


def _assert_pointwise_forms_correct(spec: ConvSpec) -> None:
    """Per image, all images at once, and channels-last by oneDNN where prepare times it."""
    forms = [(False, False), (True, False)]
    if True in _gemm_libraries(spec):
        forms.append((True, True))
    for every, onednn in forms:
        _assert_correct(
            spec,
            "im2col",
            lambda s, w, b, a=every, o=onednn: Im2colBackend._pointwise(s, w, b, a, o),
        )


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**31))
def test_random_candidates_are_correct(seed: int) -> None:
    """Every FFT tiling and each im2col form of random problems (padding, stride, dilation,
    groups, rectangles) — the winners of this machine are not the winners of another."""
    (spec,) = fuzz(1, seed, max_flops=2e6)
    for tiling in plan(spec, count=3):
        for mac in (False, True):
            _assert_correct(
                spec,
                "fft-torch",
                lambda s, w, b, t=tiling, m=mac: FFTTorchBackend().build(s, t, w, b, mac=m),
            )
    if spec.kh * spec.kw > 1:
        for onednn in _gemm_libraries(spec):
            for apart in (False, True):
                _assert_correct(
                    spec,
                    "im2col",
                    lambda s, w, b, o=onednn, a=apart: Im2colBackend._nhwc(s, w, b, 5, o, a),
                )
        _assert_correct(spec, "im2col", lambda s, w, b: Im2colBackend._views(s, w, b, 5))
    else:
        _assert_pointwise_forms_correct(spec)


def _whole(half_spectra: torch.Tensor, width: int) -> torch.Tensor:
    """Whole spectra (..., rows, width) from the half spectra of real signals (..., rows,
    width/2 + 1), by Hermitian symmetry: Z[u, v] = conj(Z[−u, −v])."""
    rows, half = half_spectra.shape[-2:]
    out = half_spectra.new_zeros(*half_spectra.shape[:-1], width)
    out[..., :half] = half_spectra
    for v in range(half, width):
        out[..., v] = half_spectra[..., (-torch.arange(rows)) % rows, width - v].conj()
    return out


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 9),
    st.integers(1, 9),
    st.integers(1, 4),
    st.integers(1, 6),
    st.integers(1, 12),
    st.booleans(),
    st.sampled_from([torch.float32, torch.float64]),
    st.integers(1, 5),
    st.integers(0, 2**31),
)
def test_fused_channel_sums_match_a_product_of_spectra(
    n: int,
    g: int,
    cg: int,
    kg: int,
    t: int,
    rows: int,
    width: int,
    paired: bool,
    dtype: torch.dtype,
    chunk: int,
    seed: int,
) -> None:
    """The fused kernel sums Y[n, k, t, f] = Σ_c X[n, c, t, f]·W[k, c, f] within each group
    for any channel counts (not only multiples of its block of four outputs), frequencies (not
    only multiples of its run), both precisions and any number of (image, tile) runs split at
    once (a last chunk of fewer among them); paired (one group), it reads the whole
    spectra of x₂ₚ + i·x₂ₚ₊₁ and writes Y₂ₚ + i·Y₂ₚ₊₁ over the whole rows × width grid, an odd
    last channel paired with zeros on either side."""
    from convbench.backends import fft_kernels

    g = 1 if paired else g
    nf = rows * (width // 2 + 1)
    gen = torch.Generator().manual_seed(seed)
    cplx = torch.complex64 if dtype == torch.float32 else torch.complex128
    # Spectra of real signals, as the kernel meets them.
    signals = torch.randn(n, g * cg, t, rows, width, dtype=torch.float64, generator=gen)
    x = torch.fft.rfft2(signals).reshape(n, g * cg, t, nf)
    w = torch.randn(g * kg, cg, nf, dtype=torch.complex128, generator=gen)
    want = torch.einsum(
        "ngctf,gkcf->ngktf", x.view(n, g, cg, t, nf), w.view(g, kg, cg, nf)
    ).reshape(n, g * kg, t, nf)
    if paired:
        pairs = (kg + 1) // 2
        ys = torch.cat([want, want.new_zeros(n, 2 * pairs - kg, t, nf)], 1)
        ys = _whole(ys.view(n, pairs, 2, t, rows, nf // rows), width)
        want = (ys[:, :, 0] + 1j * ys[:, :, 1]).reshape(n, pairs, t, rows * width)
        pairs_in = torch.cat([signals, signals.new_zeros(n, cg % 2, t, rows, width)], 1)
        pairs_in = pairs_in.view(n, -1, 2, t, rows, width)
        x = torch.fft.fft2(pairs_in[:, :, 0] + 1j * pairs_in[:, :, 1])
    y = torch.full(want.shape, float("nan"), dtype=cplx)
    scratch = torch.empty(fft_kernels.POOL, chunk, cg, 2, fft_kernels.LANES, dtype=dtype)
    scratch = scratch.numpy()
    fft_kernels.channel_sums(
        torch.view_as_real(x.to(cplx)).reshape(*x.shape[:3], -1).numpy(),
        fft_kernels.weight_layout(w.to(cplx), g),
        torch.view_as_real(y).view(*y.shape[:3], -1).numpy(),
        scratch,
        width if paired else 0,
    )
    scale = x.abs().max().item() * w.abs().max().item()
    err = (y.to(torch.complex128) - want).abs().max().item()
    assert err <= 8 * cg * unit_roundoff(dtype) * scale


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(1, 3),
    st.integers(2, 9),
    st.integers(2, 9),
    st.sampled_from([torch.float32, torch.float64]),
    st.integers(0, 2**31),
)
def test_unpairing_places_each_tiles_outputs_and_bias(
    n: int, pairs: int, br: int, nw: int, th: int, tw: int, dtype: torch.dtype, seed: int
) -> None:
    """Paired inverse transforms go to channels 2p (real) and 2p + 1 (imaginary), each tile's
    first S×S outputs at its place in a block of rows below ``top``, plus the bias; nothing
    else in the output is touched."""
    from convbench.backends import fft_kernels

    gen = torch.Generator().manual_seed(seed)
    sh, sw = 1 + seed % th, 1 + (seed // 7) % tw
    z = torch.randn(n, pairs, br, nw, th, tw, 2, dtype=dtype, generator=gen)
    bias = torch.randn(2 * pairs, dtype=dtype, generator=gen)
    image, top = seed % 2, sh * ((seed // 3) % 2)
    y = torch.full((n + image, 2 * pairs, top + br * sh + 1, nw * sw), float("nan"), dtype=dtype)
    fft_kernels.unpair(z.numpy(), y.numpy(), bias.numpy(), image, top, sh, sw)
    want = z[..., :sh, :sw, :].permute(0, 1, 6, 2, 4, 3, 5).reshape(n, 2 * pairs, br * sh, -1)
    assert torch.equal(y[image:, :, top : top + br * sh], want + bias.view(1, -1, 1, 1))
    y[image:, :, top : top + br * sh] = float("nan")
    assert y.isnan().all()


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 9), st.integers(1, 12), st.integers(1, 12), st.integers(1, 400))
def test_blocks_cover_the_work_once(n: int, th: int, tw: int, target: int) -> None:
    blocks = tile_blocks(n, th, tw, target)
    seen = [(i, r) for b in blocks for i in range(n)[b.images] for r in range(th)[b.rows]]
    assert sorted(seen) == [(i, r) for i in range(n) for r in range(th)]
    for b in blocks:
        assert b.tiles == len(range(n)[b.images]) * len(range(th)[b.rows]) * tw
        assert b.tiles <= max(target, tw)  # one row of one image is never split


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 2**31))
def test_tilings_cover_the_output(seed: int) -> None:
    (spec,) = fuzz(1, seed, max_flops=5e7)
    hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
    eh, ew = (spec.kh - 1) * spec.dh + 1, (spec.kw - 1) * spec.dw + 1
    tilings = plan(spec)
    whole = [t for t in tilings if t.tiles == (1, 1)]
    assert whole, "the textbook single tile is always a candidate"
    for t in tilings:
        assert t.step[0] * t.tiles[0] >= hp - eh + 1 and t.step[1] * t.tiles[1] >= wp - ew + 1
        assert t.extent[0] >= hp and t.extent[1] >= wp and min(t.step) >= 1
        assert cost(spec, t) > 0
        assert all(n % 2 == 0 and _smooth(n) for n in t.size), t.size
    # The model's picks other than the whole image (which is always timed) differ in area.
    areas = [t.size[0] * t.size[1] for t in tilings if t.tiles != (1, 1)]
    assert all(max(a, b) / min(a, b) >= DISTINCT_AREA for a in areas for b in areas if a != b)
    assert len(set(areas)) == len(areas)


def _smooth(n: int) -> bool:
    """No prime factor above 7."""
    for p in (2, 3, 5, 7):
        while n % p == 0:
            n //= p
    return n == 1


def test_fast_sizes_include_5s_7s_and_3_cubed_but_no_odd_size() -> None:
    assert {200, 210, 216, 224, 240} <= set(FAST_SIZES)
    assert not {135, 175, 204, 225} & set(FAST_SIZES)
    assert FAST_SIZES == sorted(FAST_SIZES)


@pytest.mark.tuned
def test_fastest_keeps_the_fastest() -> None:
    def slow(x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.01)
        return x

    x = torch.ones(3)
    for order in (["slow", "quick"], ["quick", "slow"]):
        made = {"slow": lambda: slow, "quick": lambda: torch.clone}
        label, run, times = fastest(((k, made[k]) for k in order), x)
        assert label == "quick" and run is torch.clone
        assert set(times) == {"slow", "quick"} and times["slow"] >= 10 > times["quick"]


@pytest.mark.tuned
def test_fastest_settles_a_drift_by_a_rematch() -> None:
    """A machine that slows down while candidates are timed in turn: "early" (2 ms a call)
    is timed while it is fast, "late" (1 ms) after it slowed 2.2-fold, so in turn "early"
    looks quicker (2 ms against 2.2, near enough for a meeting). Met again side by side,
    "late" is (2.2 ms against 4.4): it is kept."""
    calls = 0

    def taking(ms: float) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            nonlocal calls
            calls += 1
            time.sleep(ms / 1e3 * (1 if calls <= 5 else 2.2))
            return x

        return run

    early, late = taking(2), taking(1)
    label, run, times = fastest([("early", lambda: early), ("late", lambda: late)], torch.ones(1))
    assert label == "late" and run is late
    # As timed in turn the drift misled, within reach of a meeting.
    assert times["early"] < times["late"] < NEAR * times["early"]


@pytest.mark.tuned
def test_fastest_judges_a_candidate_call_after_call() -> None:
    """ "hungry" takes 4 ms a call, but 20 ms on a call that follows another candidate's (its
    data gone from the caches); "even" takes 4.6 ms whatever ran before. Timed in turn, hungry
    is quicker (4 against 4.6 ms, near enough for a meeting); met side by side, its first call
    of each turn is a cold one, and only its calls back to back show what a benchmark of it
    would: it is kept."""
    last = ""

    def taking(name: str, warm_ms: float, cold_ms: float) -> Callable[[torch.Tensor], torch.Tensor]:
        def run(x: torch.Tensor) -> torch.Tensor:
            nonlocal last
            time.sleep((warm_ms if last == name else cold_ms) / 1e3)
            last = name
            return x

        return run

    hungry, even = taking("hungry", 4, 20), taking("even", 4.6, 4.6)
    label, run, times = fastest([("hungry", lambda: hungry), ("even", lambda: even)], torch.ones(1))
    assert times["hungry"] < times["even"] < NEAR * times["hungry"]
    assert label == "hungry" and run is hungry


@pytest.mark.tuned
def test_choices_are_recorded() -> None:
    spec = parse("mb2ic8ih64oc8kh11ph5")
    data = make_inputs(spec).to("cpu", torch.float32)
    for name in ("fft-torch", "fft-scipy", "winograd-f4", "im2col"):
        if name.startswith("winograd"):
            spec_w = parse("mb2ic8ih64oc8kh3ph1")
            d = make_inputs(spec_w).to("cpu", torch.float32)
            params = backends.get(name).prepare(spec_w, d.weight, d.bias).params
        else:
            params = backends.get(name).prepare(spec, data.weight, data.bias).params
        times = params["tuned_ms"]
        assert times and all(v > 0 for v in times.values())
        if name.startswith("winograd"):
            # Both ways of transforming were timed on the CPU, each with both GEMM libraries
            # where oneDNN takes the products, and the fused one with oneDNN's grouped
            # convolution where it takes them.
            parts = [label.split(", ") for label in times]
            assert {part[1] for part in parts} == {"fused", "torch"}
            libraries = {"bmm", "onednn"} if has_onednn_matmul(data.weight) else {"bmm"}
            grouped = {"grouped"} if has_onednn_grouped(data.weight) else set()
            assert {part[2] for part in parts} == libraries | grouped
            assert all(part[1] == "fused" for part in parts if part[2] == "grouped")
            near = [k for k, v in times.items() if v <= NEAR * min(times.values())]
            engine = {name: e for e, name in GEMM_LIBRARIES.items()}[params["gemm_library"]]
            assert any(k.split(", ")[1:] == [params["transforms"], engine] for k in near)
    fft = backends.get("fft-torch").prepare(spec, data.weight, data.bias).params
    label = "x".join(map(str, fft["fft_size"]))
    if fft["channel_sums"] == "multiply-accumulate":
        label += " mac"
    # Timed in turn, then settled by meetings among those within NEAR of the best.
    assert label in fft["tuned_ms"] and fft["tuned_ms"][label] <= NEAR * min(
        fft["tuned_ms"].values()
    )
    assert any(name.endswith(" mac") for name in fft["tuned_ms"])  # 64 channel pairs: both
    scipy = backends.get("fft-scipy").prepare(spec, data.weight, data.bias)
    threads = torch.get_num_threads()
    assert scipy.params["fft_workers"] in {1, threads} and "fft_workers" not in fft
    if threads > 1:  # the chosen way was timed again with the FFTs on one thread
        ones = [name for name in scipy.params["tuned_ms"] if name.endswith(", 1 worker")]
        assert len(ones) == 1
        assert ("FFTs on 1 thread" in scipy.algorithm) == (scipy.params["fft_workers"] == 1)


def test_tuning_off_takes_the_first_candidate(monkeypatch: pytest.MonkeyPatch) -> None:
    """What instruction counts rely on: the same computation every run, untimed."""
    monkeypatch.setenv("CONVBENCH_TUNING", "off")
    built = []

    def make(label: str) -> Callable[[], Run]:
        def build() -> Run:
            built.append(label)
            return torch.clone

        return build

    label, run, times = fastest(
        [("first", make("first")), ("second", make("second"))], torch.ones(2)
    )
    assert (label, built, times) == ("first", ["first"], {}) and run is torch.clone
