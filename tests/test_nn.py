"""``convbench.nn.Conv2d`` and ``convbench.convert``: torch's module, computed by a backend."""

from __future__ import annotations

import socket
import warnings
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convbench import backends
from convbench.backends.im2col import Im2colBackend
from convbench.measure.accuracy import compare
from convbench.network import conv_layers
from convbench.nn import Conv2d, convert
from convbench.results import Record
from convbench.tuning import Table, choose

GEN = torch.Generator().manual_seed(0)


def randn(*shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=GEN)


def tolerance(backend: str) -> float:
    return backends.get(backend).tolerance(torch.float32, "cpu")


def close(a: torch.Tensor, b: torch.Tensor, backend: str) -> None:
    """Within the backend's own relative L2 tolerance (what the harness holds it to)."""
    err = compare(a, b).rel_l2_error
    assert err <= tolerance(backend), f"{backend}: rel. error {err:.2e}"


CONFIGS = [
    dict(in_channels=4, out_channels=6, kernel_size=3, padding=1),
    dict(in_channels=4, out_channels=6, kernel_size=3, padding="same", bias=False),
    dict(in_channels=4, out_channels=8, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2)),
    dict(in_channels=4, out_channels=8, kernel_size=3, groups=2, dilation=2, padding=2),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, padding_mode="reflect"),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, padding_mode="circular"),
    dict(in_channels=4, out_channels=6, kernel_size=1),
]


@pytest.mark.parametrize("backend", ["torch", "direct", "im2col", "fft-torch", "winograd-f4"])
@pytest.mark.parametrize(
    "config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items())
)
def test_every_backend_computes_what_nn_conv2d_computes(backend: str, config: dict) -> None:
    torch.manual_seed(1)
    ref = nn.Conv2d(**config)
    ours = Conv2d(**config, backend=backend)
    ours.load_state_dict(ref.state_dict())
    x = randn(2, 4, 11, 13)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a backend that declines says so; torch computes it
        close(ours(x), ref(x), backend)
        close(ours(x[0]), ref(x[0]), backend)  # unbatched, as nn.Conv2d takes it


def test_state_dict_and_repr_are_nn_conv2d_s() -> None:
    torch.manual_seed(2)
    ref = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    ours = Conv2d(3, 5, 3, stride=2, padding=1, backend="im2col")
    assert isinstance(ours, nn.Conv2d)
    assert ours.state_dict().keys() == ref.state_dict().keys()
    ours.load_state_dict(ref.state_dict())
    assert all(
        torch.equal(a, b)
        for a, b in zip(ours.state_dict().values(), ref.state_dict().values(), strict=True)
    )
    assert "backend='im2col'" in repr(ours)


@pytest.fixture
def counting() -> Iterator[list[int]]:
    """im2col under another name, counting its preparations."""
    calls: list[int] = []

    class Counting(Im2colBackend):
        name = "counting-im2col"

        def prepare(self, spec, weight, bias):  # type: ignore[no-untyped-def]
            calls.append(1)
            return super().prepare(spec, weight, bias)

    backends.register(Counting())
    yield calls
    backends.unregister("counting-im2col")


def test_prepares_once_per_shape_and_again_when_the_weights_change(counting: list[int]) -> None:
    m = Conv2d(4, 8, 3, padding=1, backend="counting-im2col").eval()
    a, b = randn(2, 4, 12, 12), randn(1, 4, 9, 9)
    with torch.no_grad():
        for _ in range(3):
            m(a)
        assert len(counting) == 1
        m(b)
        m(a)
        assert len(counting) == 2
        m.weight.mul_(2)  # in place, as load_state_dict and optimisers change weights
        y = m(a)
        assert len(counting) == 3
        close(y, F.conv2d(a, m.weight, m.bias, padding=1), "im2col")
        m.load_state_dict({"weight": randn(8, 4, 3, 3), "bias": randn(8)})
        close(m(a), F.conv2d(a, m.weight, m.bias, padding=1), "im2col")
        m.weight = nn.Parameter(randn(8, 4, 3, 3))  # replaced
        close(m(a), F.conv2d(a, m.weight, m.bias, padding=1), "im2col")
    assert len(counting) == 5


def test_a_parametrized_weight_is_read_through_its_parametrization() -> None:
    """The forward reads parameters from ``_parameters``, where a parametrized weight is not:
    the weight the parametrization computes must be the one convolved."""

    class Doubled(nn.Module):
        def forward(self, w: torch.Tensor) -> torch.Tensor:
            return 2 * w

    m = Conv2d(4, 8, 3, padding=1, backend="im2col").eval()
    torch.nn.utils.parametrize.register_parametrization(m, "weight", Doubled())
    x = randn(2, 4, 10, 10)
    with torch.no_grad():
        y = m(x)
        assert m.last.backend == "im2col"
        close(y, F.conv2d(x, 2 * m.parametrizations.weight.original, m.bias, padding=1), "im2col")


def test_a_declined_problem_falls_back_to_torch_and_says_so_once() -> None:
    m = Conv2d(4, 8, 3, stride=2, padding=1, backend="winograd-f4")
    x = randn(2, 4, 10, 10)
    with torch.no_grad():
        with pytest.warns(UserWarning, match="winograd-f4 declines .*; torch computes it"):
            y = m(x)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            m(x)  # said once
    assert m.last.backend == "torch" and "declines" in m.last.why
    torch.testing.assert_close(y, F.conv2d(x, m.weight, m.bias, stride=2, padding=1))


def test_with_autograd_on_torch_computes_and_says_so() -> None:
    m = Conv2d(4, 8, 3, padding=1, backend="winograd-f4")
    x = randn(1, 4, 8, 8)
    with pytest.warns(UserWarning, match="inference only"):
        y = m(x)
    assert y.requires_grad
    y.sum().backward()
    assert m.weight.grad is not None and m.weight.grad.abs().sum() > 0


def test_bad_arguments_fail_as_nn_conv2d_s_do() -> None:
    with pytest.raises(ValueError, match="needs a tuning table"):
        Conv2d(4, 8, 3, backend="auto")
    with pytest.raises(KeyError, match="unknown backend 'nope'"):
        Conv2d(4, 8, 3, backend="nope")
    for bad in (dict(groups=3), dict(padding_mode="mirror"), dict(padding="same", stride=2)):
        with pytest.raises(ValueError):
            nn.Conv2d(4, 8, 3, **bad)  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            Conv2d(4, 8, 3, **bad)  # type: ignore[arg-type]
    m = Conv2d(4, 8, 3, backend="im2col")
    with torch.no_grad(), pytest.raises(RuntimeError):
        m(randn(1, 5, 8, 8))  # wrong channel count: torch's error


def _net() -> nn.Module:
    torch.manual_seed(3)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.ReLU(),
        nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU()),
        nn.Conv2d(8, 4, 3, stride=2),
    ).eval()


def test_convert_swaps_every_conv_and_reports_its_choice() -> None:
    net, x = _net(), randn(2, 3, 16, 16)
    with torch.no_grad():
        want = net(x)
    with pytest.warns(UserWarning, match="winograd-f2 declines .*sh2sw2"):
        conv = convert(net, backend="winograd-f2", example=x)
    assert type(net[0]) is nn.Conv2d  # a copy was converted
    assert list(conv.layers) == ["0", "2.0", "3"]
    assert all(isinstance(m, Conv2d) for m in conv.layers.values())
    got = [(c.path, c.backend) for c in conv.choices]
    assert got == [("0", "winograd-f2"), ("2.0", "winograd-f2"), ("3", "torch")]
    assert conv.choices[0].spec is not None and conv.choices[0].spec.ic == 3
    with torch.no_grad():
        close(conv.model(x), want, "winograd-f2")
    same = convert(net, backend="im2col", inplace=True)
    assert same.model is net and isinstance(net[2][0], Conv2d)
    with pytest.raises(ValueError, match="lone Conv2d"):
        convert(nn.Conv2d(3, 3, 1))


def test_auto_takes_the_table_s_choice_per_problem() -> None:
    net, x = _net(), randn(2, 3, 16, 16)
    layers = conv_layers(net, x)
    records = []
    for path, spec in layers:
        fast = "winograd-f4" if path == "2.0" else "im2col"
        common = dict(run_id="r", spec=spec.format(), name=path, device="cpu", dtype="float32")
        common |= dict(status="ok", host=socket.gethostname(), rel_l2_error=1e-6, median_s=1.0)
        records += [
            Record(backend="torch", **common),  # type: ignore[arg-type]
            Record(backend=fast, speedup=2.0, speedup_lo=1.9, speedup_hi=2.1, **common),  # type: ignore[arg-type]
        ]
    table = Table(choose(records))
    conv = convert(net, table=table, example=x)
    assert [c.backend for c in conv.choices] == ["im2col", "winograd-f4", "im2col"]
    with torch.no_grad():
        close(conv.model(x), net(x), "winograd-f4")
        other = randn(1, 3, 20, 20)  # a shape the table does not have: torch
        conv.model(other)
    assert [c.backend for c in conv.choices] == ["torch"] * 3
    assert conv.choices[0].why == "not in the table"
