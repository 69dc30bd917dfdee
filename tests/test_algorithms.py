"""Every backend against the float64 reference: hand-picked layers, real networks, random
configurations (hypothesis), padding modes, and the worked example; plus the Winograd
transforms in exact arithmetic, the registry's names and the profiler labels."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest
import torch
from conftest import check
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.profiler import ProfilerActivity, profile, record_function

from convbench import backends
from convbench.backends.base import stage
from convbench.backends.winograd import MAX_TILE, transform_matrices
from convbench.inputs import make_inputs
from convbench.spec import PADDING_MODES, ConvSpec, SpecError, parse, read_batch_file
from convbench.suites import SUITES, fuzz
from convbench.sweep import reference

DATA = Path(__file__).resolve().parent / "data" / "benchdnn"
CUDA = torch.cuda.is_available()
DEVICES = ["cpu", "cuda"] if CUDA else ["cpu"]
ALGORITHMS = ["direct", "im2col", "fft-scipy", "fft-torch", "winograd-f2", "winograd-f4",
              "winograd-f6", "torch", "torch-cudnn-autotune"]  # fmt: skip


def test_all_algorithms_registered() -> None:
    assert set(ALGORITHMS) <= set(backends.names())


# --- Winograd transforms, exactly -----------------------------------------------------------

PAIRS = [(m, r) for m in (2, 4, 6) for r in range(1, 8) if m + r - 1 <= MAX_TILE]


@pytest.mark.parametrize(("m", "r"), PAIRS)
def test_winograd_transforms_are_exact(m: int, r: int) -> None:
    """Aᵀ[(G g) ⊙ (Bᵀ d)] equals the correlation of d and g, in exact rational arithmetic."""
    at, g_mat, bt, points = transform_matrices(m, r)
    n = m + r - 1
    assert len(at) == m and len(at[0]) == n and len(g_mat) == n and len(bt) == n
    assert len(set(points)) == n - 1
    rng = random.Random(m * 10 + r)
    for _ in range(3):
        d = [Fraction(rng.randint(-9, 9)) for _ in range(n)]
        g = [Fraction(rng.randint(-9, 9)) for _ in range(r)]
        gt = [sum(row[j] * g[j] for j in range(r)) for row in g_mat]
        dt = [sum(row[j] * d[j] for j in range(n)) for row in bt]
        y = [sum(at[i][j] * gt[j] * dt[j] for j in range(n)) for i in range(m)]
        assert y == [sum(d[i + k] * g[k] for k in range(r)) for i in range(m)]


def test_winograd_points_are_small_and_include_halves() -> None:
    _, _, _, points = transform_matrices(6, 3)
    assert Fraction(1, 2) in points and Fraction(-1, 2) in points
    assert max(abs(p) for p in points) <= 2


# --- correctness over chosen, real and random problems ---------------------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("name", ALGORITHMS)
def test_smoke_suite(name: str, dtype: torch.dtype, device: str) -> None:
    for w in SUITES["smoke"].workloads():
        check(w.spec, name, device, dtype)


@pytest.mark.parametrize("mode", PADDING_MODES)
@pytest.mark.parametrize("name", ALGORITHMS)
def test_padding_modes_match_nn_conv2d(name: str, mode: str) -> None:
    spec = parse(f"--padding-mode={mode} mb2ic4ih9iw11oc6oh9ow11kh3kw5ph1pw2")
    declined = check(spec, name, "cpu", torch.float64) is None
    assert declined == (name in ("winograd-f6", "torch-cudnn-autotune"))  # 8x10 tile; no CUDA
    # The reference itself is nn.Conv2d with that padding mode.
    inputs = make_inputs(spec)
    conv = torch.nn.Conv2d(4, 6, (3, 5), padding=(1, 2), padding_mode=mode, dtype=torch.float64)
    with torch.no_grad():
        conv.weight.copy_(inputs.weight)
        conv.bias.copy_(inputs.bias)
        torch.testing.assert_close(reference(spec, inputs), conv(inputs.x), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ALGORITHMS)
def test_seed_example_is_exact(name: str) -> None:
    spec = SUITES["seed"].workloads()[0].spec
    inputs = make_inputs(spec, "seed")
    want = reference(spec, inputs)
    b = backends.get(name)
    for dtype in (torch.float32, torch.float64):
        if b.supports(spec, "cpu", dtype):
            continue
        data = inputs.to("cpu", dtype)
        y = b.prepare(spec, data.weight, data.bias)(data.x).double()
        assert (y - want).abs().max() < 1e-4
        assert torch.equal(y.round(), want)
    assert want[0, 0, 2].tolist() == [-36.0, -6.0, -6.0, -6.0, 42.0]


@pytest.mark.parametrize("name", [a for a in ALGORITHMS if a != "torch-cudnn-autotune"])
def test_real_network_layers(name: str) -> None:
    """float32 within tolerance on every ResNet-50 and VGG-16 layer (minibatch 1)."""
    checked = 0
    for suite in ("resnet50", "vgg16"):
        for w in SUITES[suite].workloads(1):
            checked += check(w.spec, name, "cpu", torch.float32) is not None
    assert checked >= (9 if name.startswith("winograd") else 32)


@pytest.mark.parametrize("name", [a for a in ALGORITHMS if a != "torch-cudnn-autotune"])
def test_benchdnn_rows_and_single_planes(name: str) -> None:
    """float32 within tolerance on benchdnn's 1-D lines (one row, padded by up to 100) and on a
    seeded sample of its one-plane 3-D lines (dilations up to 6 over inputs of 1 to 33)."""
    rows = [
        s for s in read_batch_file(DATA / "shapes_large_padding", skip_unsupported=True)
        if s.ih == 1
    ]  # fmt: skip
    planes = read_batch_file(DATA / "shapes_dilated_2d_strided_padding")
    sample = [*rows, *random.Random(0).sample(planes, 24)]
    assert len(rows) == 2 and any(s.dh > 4 for s in sample)
    checked = sum(check(s, name, "cpu", torch.float32, seed=i) is not None
                  for i, s in enumerate(sample))  # fmt: skip
    dense = sum(s.sh == s.sw == s.dh == s.dw == 1 for s in sample)  # Winograd takes these only
    assert checked >= (dense if name.startswith("winograd") else len(sample)) >= 1


@st.composite
def problems(draw: st.DrawFn) -> ConvSpec:
    seed = draw(st.integers(0, 2**31))
    (spec,) = fuzz(1, seed, max_flops=3e6)
    mode = draw(st.sampled_from(PADDING_MODES))
    try:
        return ConvSpec(**{**spec.__dict__, "padding_mode": mode})
    except SpecError:  # reflect/circular padding wider than the input
        return spec


@settings(max_examples=60, deadline=None)
@given(problems(), st.sampled_from([torch.float32, torch.float64]))
def test_random_configurations(spec: ConvSpec, dtype: torch.dtype) -> None:
    for name in ALGORITHMS:
        check(spec, name, "cpu", dtype)


@settings(max_examples=30, deadline=None)
@given(problems())
def test_random_stride1_for_winograd(spec: ConvSpec) -> None:
    """Winograd declines strides and dilations: here every problem is one it may accept."""
    hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
    spec = ConvSpec(**{**spec.__dict__, "sh": 1, "sw": 1, "dh": 1, "dw": 1,
                       "oh": hp - spec.kh + 1, "ow": wp - spec.kw + 1})  # fmt: skip
    for name in ("winograd-f2", "winograd-f4", "winograd-f6"):
        m = int(name[-1])
        accepted = check(spec, name, "cpu", torch.float32) is not None
        assert accepted == (m + max(spec.kh, spec.kw) - 1 <= MAX_TILE)


# --- what backends decline, and why ---------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "desc", "device", "dtype", "needle"),
    [
        ("winograd-f4", "mb1ic2ih8oc2kh3sh2", "cpu", torch.float32, "stride"),
        ("winograd-f2", "mb1ic2ih8oc2kh3dh1", "cpu", torch.float32, "dilation"),
        ("winograd-f6", "mb1ic2ih12oc2kh5", "cpu", torch.float32, "tile"),
        ("winograd-f4", "mb1ic2ih8oc2kh3", "cpu", torch.float16, "float16"),
        ("fft-torch", "mb1ic2ih8oc2kh3", "cpu", torch.bfloat16, "bfloat16"),
        ("fft-scipy", "mb1ic2ih8oc2kh3", "cuda", torch.float32, "CPU only"),
        ("torch-cudnn-autotune", "mb1ic2ih8oc2kh3", "cpu", torch.float32, "CUDA"),
    ],
)
def test_declined_with_a_reason(
    name: str, desc: str, device: str, dtype: torch.dtype, needle: str
) -> None:
    reason = backends.get(name).supports(parse(desc), device, dtype)
    assert reason and needle in reason


# --- the registry ---------------------------------------------------------------------------


def test_names() -> None:
    assert backends.names()[0] == "torch"
    assert "winograd-f6" in backends.names()


# --- seeing inside ------------------------------------------------------------------------

STAGES = {
    "winograd-f4": ["winograd/filter_transform", "winograd/input_transform", "winograd/gemm",
                    "winograd/output_transform"],
    "fft-torch": ["fft/filter_spectrum", "fft/forward", "fft/pointwise", "fft/inverse"],
    "fft-scipy": ["fft/forward", "fft/pointwise", "fft/inverse"],
    "im2col": ["im2col/unfold", "im2col/gemm"],
    "direct": ["direct/taps"],
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(STAGES))
def test_profiler_sees_the_stages(name: str) -> None:
    spec = parse("mb1ic4ih12oc4kh3ph1")
    data = make_inputs(spec).to("cpu", torch.float32)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        fn = backends.get(name).prepare(spec, data.weight, data.bias)
        fn(data.x)
    seen = {e.key for e in prof.key_averages()}
    assert set(STAGES[name]) <= seen
    assert fn.params  # the algorithm's own parameters are recorded


def test_stages_are_labelled_only_while_a_profiler_records() -> None:
    # A label costs ~10 µs when recorded; the timed calls, run with no profiler, must not pay it.
    assert not isinstance(stage("fft/forward"), record_function)
    with profile(activities=[ProfilerActivity.CPU]):
        assert isinstance(stage("fft/forward"), record_function)
    assert not isinstance(stage("fft/forward"), record_function)


def test_algorithm_parameters() -> None:
    spec = parse("mb1ic4ih12oc4kh3ph1")
    data = make_inputs(spec).to("cpu", torch.float32)
    wino = backends.get("winograd-f6").prepare(spec, data.weight, data.bias)
    assert wino.params["tile"] == [8, 8] and wino.params["points"][-1] == "inf"
    fft = backends.get("fft-torch").prepare(spec, data.weight, data.bias)
    (th, tw), (sh, sw) = fft.params["fft_size"], fft.params["tile_step"]
    assert (sh, sw) == (th - 2, tw - 2)  # a 3×3 kernel's tile keeps its first T − 2 outputs
    assert [n * s for n, s in zip(fft.params["tiles"], (sh, sw), strict=True)] >= [12, 12]


@pytest.mark.skipif(not CUDA, reason="CUDA is not available")
def test_autotune_records_tf32() -> None:
    spec = parse("mb2ic8ih16oc8kh3ph1")
    data = make_inputs(spec).to("cuda", torch.float32)
    fn = backends.get("torch-cudnn-autotune").prepare(spec, data.weight, data.bias)
    assert fn.params["cudnn_benchmark"] is True
    assert fn.params["tf32"] == torch.backends.cudnn.allow_tf32
