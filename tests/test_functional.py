"""``convbench.conv2d`` against ``torch.nn.functional.conv2d``: every argument form torch takes
gives torch's result, with each backend; every call torch refuses raises torch's exception type;
``padding_mode`` pads as ``nn.Conv2d`` does."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import event, given, settings
from hypothesis import strategies as st

import convbench

# Torch's own warning, which convbench passes on as F.conv2d gives it.
pytestmark = pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")

# "direct" is the definition itself and takes every problem; "torch" must take every one too.
BACKENDS = ["torch", "direct"]


def randn(*shape: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(shape, generator=gen)


def outcome(fn: Callable[[], torch.Tensor]) -> torch.Tensor | Exception:
    """What ``fn`` returns, or what it raises."""
    try:
        return fn()
    except Exception as exc:
        return exc


def assert_does_what_torch_does(
    x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None, kwargs: dict[str, Any]
) -> None:
    """Each backend gives ``F.conv2d``'s result, or raises the exception type it raises; a
    backend other than "torch" may decline the problem."""
    want = outcome(lambda: F.conv2d(x, w, b, **kwargs))
    event(type(want).__name__)
    for name in BACKENDS:
        got = outcome(lambda: convbench.conv2d(x, w, b, backend=name, **kwargs))  # noqa: B023
        if isinstance(want, Exception):
            assert type(got) is type(want), f"{name}: {got!r}, torch: {want!r}"
        elif isinstance(got, convbench.UnsupportedConfig) and name != "torch":
            continue
        else:
            assert isinstance(got, torch.Tensor), f"{name} raised {got!r}"
            torch.testing.assert_close(got, want)


# --- random argument forms -----------------------------------------------------------------


def int_args(valid: st.SearchStrategy[int], invalid: Sequence[object]) -> st.SearchStrategy[Any]:
    """Each form ``F.conv2d`` takes for stride, padding or dilation, and now and then one that
    it refuses."""
    return st.one_of(
        valid,
        valid.map(np.int64),
        st.tuples(valid),
        st.tuples(valid, valid),
        st.tuples(valid.map(np.int64), valid),
        st.lists(valid, min_size=1, max_size=2),
        st.tuples(valid, valid).map(torch.Size),
        st.sampled_from(invalid),
    )


STRIDES = int_args(st.integers(1, 3), [0, -1, (1, 0), [], (1, 1, 1)])
PADDINGS = st.one_of(
    int_args(st.integers(0, 2), [-1, (-1,), (1, -1), (), [1, 1, 1], "full"]),
    st.sampled_from(["same", "valid"]),
)
DILATIONS = int_args(st.integers(1, 3), [0, -1, [1, 0], (), (1, 1, 1)])


@st.composite
def problems(
    draw: st.DrawFn,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, Any]]:
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    groups = draw(st.sampled_from([1, 2, 4]))
    c, oc = (groups * draw(st.integers(1, 4 // groups)) for _ in range(2))
    h, w, kh, kw = (draw(st.integers(1, n)) for n in (9, 9, 3, 3))
    shape = (draw(st.integers(1, 2)), c, h, w) if draw(st.booleans()) else (c, h, w)
    x, weight = randn(*shape, gen=gen), randn(oc, c // groups, kh, kw, gen=gen)
    bias = randn(oc, gen=gen) if draw(st.booleans()) else None
    kwargs = {"stride": draw(STRIDES), "padding": draw(PADDINGS), "dilation": draw(DILATIONS)}
    return x, weight, bias, {**kwargs, "groups": groups}


@settings(max_examples=200, deadline=None)
@given(problems())
def test_random_argument_forms_do_what_torch_does(
    problem: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, dict[str, Any]],
) -> None:
    assert_does_what_torch_does(*problem)


# --- chosen argument forms -----------------------------------------------------------------

FORMS = [
    {"stride": (2,)},
    {"padding": (1,)},
    {"dilation": [2]},
    {"stride": torch.Size([2, 1])},
    {"padding": np.int64(1)},
    {"stride": (np.int64(2), 1), "padding": [2, 0]},
    {"stride": torch.tensor(2), "dilation": torch.tensor([2])},
    {"padding": "same", "dilation": (2,)},
    {"padding": "valid", "stride": [1, 2]},
]


@pytest.mark.parametrize("batched", [True, False], ids=["batched", "unbatched"])
@pytest.mark.parametrize("kwargs", FORMS, ids=repr)
def test_argument_forms_match_torch(kwargs: dict[str, Any], batched: bool) -> None:
    gen = torch.Generator().manual_seed(0)
    x = randn(2, 4, 9, 8, gen=gen) if batched else randn(4, 9, 8, gen=gen)
    w, b = randn(6, 2, 3, 2, gen=gen), randn(6, gen=gen)
    want = F.conv2d(x, w, b, groups=2, **kwargs)
    for name in BACKENDS:
        got = convbench.conv2d(x, w, b, groups=2, backend=name, **kwargs)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want)


def test_empty_batch_gives_torchs_empty_output() -> None:
    x, w = torch.empty(0, 4, 8, 8), torch.ones(6, 4, 3, 3)
    want = F.conv2d(x, w, stride=(2,))
    for name in BACKENDS:
        assert convbench.conv2d(x, w, stride=(2,), backend=name).shape == want.shape


@pytest.mark.parametrize("name", ["direct", "im2col", "fft-torch", "winograd-f4", "torch"])
@pytest.mark.parametrize(
    ("shape", "kwargs"),
    [
        ((2, 4, 9, 10), {"padding": "same"}),
        ((2, 4, 9, 10), {"padding": "valid"}),
        ((4, 9, 10), {"padding": 1}),
        ((1, 4, 12, 12), {"padding": (2, 1), "groups": 2}),
        ((1, 4, 12, 12), {"padding": 2, "padding_mode": "reflect"}),
        ((1, 4, 12, 12), {"padding": "same", "padding_mode": "circular"}),
    ],
)
def test_conv2d_matches_torch(name: str, shape: tuple[int, ...], kwargs: dict) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=gen, dtype=torch.float64)
    groups = kwargs.get("groups", 1)
    w = torch.randn(6, 4 // groups, 3, 3, generator=gen, dtype=torch.float64)
    b = torch.randn(6, generator=gen, dtype=torch.float64)
    kwargs = dict(kwargs)  # the parameter is one dict, shared by every backend's case
    mode = kwargs.pop("padding_mode", "zeros")
    conv = torch.nn.Conv2d(4, 6, 3, bias=True, padding_mode=mode, dtype=torch.float64, **kwargs)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        want = conv(x)
    got = convbench.conv2d(x, w, b, padding_mode=mode, backend=name, **kwargs)
    assert got.shape == want.shape and got.dtype == want.dtype
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "circular"])
def test_outputs_that_read_padding_alone(mode: str) -> None:
    """With stride 7, the one output row reads the top padding alone (no row of the input)."""
    gen = torch.Generator().manual_seed(0)
    x, w, b = randn(2, 3, 3, 6, gen=gen), randn(4, 3, 1, 2, gen=gen), randn(4, gen=gen)
    conv = torch.nn.Conv2d(3, 4, (1, 2), stride=(7, 1), padding=2, padding_mode=mode)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        want = conv(x)
    for name in BACKENDS:
        got = convbench.conv2d(
            x, w, b, stride=(7, 1), padding=(2,), padding_mode=mode, backend=name
        )
        torch.testing.assert_close(got, want)


# --- padding modes -------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
@pytest.mark.parametrize(
    ("padding", "as_pair"),
    [(1, (1, 1)), ((1,), (1, 1)), ([2, 1], (2, 1)), (np.int64(1), (1, 1)),
     (torch.Size([0, 2]), (0, 2)), ("same", "same"), ("valid", "valid")],
    ids=repr,
)  # fmt: skip
def test_padding_modes_pad_as_nn_conv2d(mode: str, padding: Any, as_pair: Any) -> None:
    """nn.Conv2d itself reads a 1-tuple as one padding for one dimension, so it is given the
    pair F.conv2d reads."""
    gen = torch.Generator().manual_seed(0)
    x, w, b = randn(2, 4, 7, 8, gen=gen), randn(6, 4, 3, 2, gen=gen), randn(6, gen=gen)
    conv = torch.nn.Conv2d(4, 6, (3, 2), padding=as_pair, dilation=(2, 1), padding_mode=mode)
    with torch.no_grad():
        conv.weight.copy_(w)
        conv.bias.copy_(b)
        want = conv(x)
    for name in BACKENDS:
        for batch in (x, x[0]):
            got = convbench.conv2d(
                batch, w, b, padding=padding, dilation=(2, 1), padding_mode=mode, backend=name
            )
            torch.testing.assert_close(got, want if batch is x else want[0])


@pytest.mark.parametrize(("mode", "padding"), [("reflect", 8), ("circular", 9)])
def test_padding_modes_refuse_what_nn_conv2d_refuses(mode: str, padding: int) -> None:
    x, w = torch.ones(1, 4, 8, 8), torch.ones(6, 4, 3, 3)
    want = outcome(lambda: torch.nn.Conv2d(4, 6, 3, padding=padding, padding_mode=mode)(x))
    assert isinstance(want, RuntimeError)
    for name in BACKENDS:
        for form in (padding, (padding,)):
            got = outcome(
                lambda: convbench.conv2d(x, w, padding=form, padding_mode=mode, backend=name)  # noqa: B023
            )
            assert type(got) is RuntimeError, repr(got)  # its message names the empty batch


# --- what torch refuses --------------------------------------------------------------------

# name: (input shape, weight shape, bias shape or None, keyword arguments)
X, W = (1, 4, 8, 8), (6, 4, 3, 3)
ERRORS: dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...] | None, dict]] = {
    "input 2-D": ((8, 8), W, None, {}),
    "input 5-D": ((1, 1, 4, 8, 8), W, None, {}),
    "weight 3-D": (X, (6, 4, 3), None, {}),
    "channels": (X, (6, 3, 3, 3), None, {}),
    "channels, unbatched": ((4, 8, 8), (6, 3, 3, 3), None, {}),
    "groups not dividing channels": (X, W, None, {"groups": 3}),
    "groups not dividing out channels": (X, (5, 2, 3, 3), None, {"groups": 2}),
    "groups 0": (X, W, None, {"groups": 0}),
    "bias size": (X, W, (5,), {}),
    "bias 2-D": ((4, 8, 8), W, (6, 1), {}),
    "kernel beyond padded input": ((1, 4, 4, 4), (6, 4, 7, 7), None, {"padding": 1}),
    "dilated kernel beyond input": (X, W, None, {"dilation": (4,)}),
    "empty kernel": (X, (6, 4, 0, 3), None, {}),
    "same with stride 2": (X, W, None, {"padding": "same", "stride": 2}),
    "same with stride (2,)": (X, W, None, {"padding": "same", "stride": (2,)}),
    "padding string": (X, W, None, {"padding": "bogus"}),
    "negative padding": (X, W, None, {"padding": -1}),
    "negative padding (1,)": (X, W, None, {"padding": (-1,)}),
    "zero stride": (X, W, None, {"stride": 0}),
    "zero stride (1, 0)": ((4, 8, 8), W, None, {"stride": (1, 0)}),
    "zero dilation": (X, W, None, {"dilation": [0]}),
    "three strides": (X, W, None, {"stride": (1, 1, 1)}),
    "no padding values": (X, W, None, {"padding": ()}),
    "float stride": (X, W, None, {"stride": 2.0}),
}
# convbench checks an empty batch ([0, ...] in torch's message) and passes torch every argument.
REWORDED = {"channels", "channels, unbatched", "groups not dividing channels", "float stride"}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", list(ERRORS))
def test_raises_what_torch_raises(case: str, backend: str) -> None:
    x, w, b, kwargs = ERRORS[case]
    gen = torch.Generator().manual_seed(0)
    args = randn(*x, gen=gen), randn(*w, gen=gen), None if b is None else randn(*b, gen=gen)
    want = outcome(lambda: F.conv2d(*args, **kwargs))
    got = outcome(lambda: convbench.conv2d(*args, backend=backend, **kwargs))
    assert isinstance(want, Exception)
    assert type(got) is type(want), f"{got!r}, torch: {want!r}"
    assert case in REWORDED or str(got) == str(want)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize(
    ("x", "w", "b"),
    [(torch.float32, torch.float64, None), (torch.float64, torch.float32, torch.float64),
     (torch.float32, torch.float16, torch.float32), (torch.int64, torch.float32, None),
     (torch.float32, torch.float32, torch.float64)],
    ids=str,
)  # fmt: skip
def test_mixed_dtypes_raise_what_torch_raises(
    x: torch.dtype, w: torch.dtype, b: torch.dtype | None, backend: str
) -> None:
    """An empty batch does not reach the kernel that checks the weight's dtype on the CPU, so
    convbench checks it, with the message torch's generic check gives (the CPU kernel's reads
    "expected scalar type Float but found Double")."""
    gen = torch.Generator().manual_seed(0)
    args = (randn(2, 4, 8, 8, gen=gen).to(x), randn(6, 4, 3, 3, gen=gen).to(w),
            None if b is None else randn(6, gen=gen).to(b))  # fmt: skip
    want = outcome(lambda: F.conv2d(*args, stride=(2,)))
    got = outcome(lambda: convbench.conv2d(*args, stride=(2,), backend=backend))
    assert isinstance(want, RuntimeError)
    assert type(got) is RuntimeError, repr(got)


def test_raises_its_own_errors() -> None:
    x, w = torch.randn(1, 4, 8, 8), torch.randn(6, 4, 3, 3)
    with pytest.raises(ValueError, match="unknown backend"):
        convbench.conv2d(x, w, backend="nope")
    with pytest.raises(ValueError, match="padding_mode"):
        convbench.conv2d(x, w, padding_mode="mirror")
    with pytest.raises(convbench.UnsupportedConfig, match="stride"):
        convbench.conv2d(x, w, stride=(2,), backend="winograd-f2")
    assert issubclass(convbench.UnsupportedConfig, ValueError)
