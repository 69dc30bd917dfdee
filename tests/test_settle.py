"""Settling a tuning table in its network: the stretches, and which choices stay."""

from __future__ import annotations

import socket

import pytest
import torch

from convbench.network import conv_layers
from convbench.settle import settle, stretches
from convbench.tuning import Choice, Table, problem_key


def test_a_stretch_runs_to_the_next_converted_layer() -> None:
    stamps = [("stem", 0.0), ("a", 1.0), ("b", 3.0), ("c", 6.0), ("a", 10.0), ("d", 11.0)]
    # "stem" precedes every converted layer: it belongs to no stretch. "b" and "d" are torch
    # layers inside the stretches of "a"; "a" runs twice (a shared module) and sums both.
    assert stretches(stamps, 15.0, {"a", "c"}) == {"a": 5.0 + 5.0, "c": 4.0}
    assert stretches(stamps, 15.0, {"d"}) == {"d": 4.0}
    assert stretches(stamps, 15.0, set()) == {}


def _table(net: torch.nn.Module, x: torch.Tensor, chosen: list[str]) -> Table:
    """Each layer's problem given the backend in ``chosen``, as if it were 1.5x torch alone."""
    host = socket.gethostname()
    claim = dict(speedup=1.5, speedup_lo=1.4, speedup_hi=1.6, rel_l2_error=1e-6, rounds=10)
    layers = conv_layers(net, x)
    return Table(
        [
            Choice(
                problem_key(spec),
                "cpu",
                "float32",
                host,
                backend,
                "given",
                **claim,
                others={} if backend == "torch" else {"torch": f"slower: {backend} runs 1.5x"},
            )
            for (_, spec), backend in zip(layers, chosen, strict=True)
        ]
    )


def _net(kernel: int) -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(16, 16, kernel, padding=kernel // 2),
        torch.nn.ReLU(),
        torch.nn.Conv2d(16, 8, 3, padding=1),  # a problem of its own, whatever the kernel
    ).eval()


def test_a_choice_slower_in_the_network_falls_back_to_torch_and_says_why() -> None:
    """The definition of convolution (``direct``) runs a 3x3 layer about 3x slower than
    oneDNN: whatever the table claims of it alone, the network shows otherwise."""
    net, x = _net(3), torch.randn(2, 16, 32, 32)
    table = _table(net, x, ["direct", "torch"])
    settled = settle(net, x, table, budget_s=0.3)
    (check,) = settled.checks  # one problem checked; torch's layer is not
    assert check.paths == ("0",) and check.backend == "direct" and check.step == 1
    assert check.ratio.hi < 1 and check.verdict == "slower" and not check.kept
    assert settled.fallen == [check] and settled.problems == 1
    fell, kept = settled.table.choices
    assert fell.backend == "torch" and fell.speedup == 1.0 and fell.rounds == 0
    assert "direct is 1.50x [1.40-1.60] alone, but direct 0." in fell.why
    assert "(slower) in the network" in fell.others["direct"] and fell.network == check.text
    assert "torch" not in fell.others  # the backend chosen is no "other"
    assert kept == table.choices[1]  # untouched: it was torch already
    # The whole network decides last: neither table is faster than torch there.
    assert set(settled.whole) == {"per-layer", "settled"} and settled.chosen == "torch"
    assert settled.whole["per-layer"].hi < 1 and "as a whole is not faster" in settled.table.network
    assert table.choices[0].backend == "direct"  # the table given is not changed
    assert not any(m._forward_pre_hooks for m in net.modules())  # its stamps are gone


def test_a_choice_that_stays_says_what_the_network_showed() -> None:
    """Nothing falls (torch's layer is not checked): the table is the one given, with the
    speed-up its choice showed in the network."""
    net, x = _net(31), torch.randn(1, 16, 64, 64)
    settled = settle(net, x, _table(net, x, ["fft-torch", "torch"]), budget_s=0.3)
    (check,) = settled.checks
    assert check.kept and settled.fallen == [] and settled.chosen == "per-layer"
    fft, kept = settled.table.choices
    assert fft.backend == "fft-torch" and fft.network == check.text and fft.why == "given"
    assert kept.backend == "torch" and kept.network == ""


def test_a_choice_faster_in_the_network_stays_and_is_checked_again() -> None:
    """FFT runs a 31x31 kernel several times faster than oneDNN, so it stays; the direct layer
    after it falls, and the pass after that checks FFT again in its longer stretch."""
    net, x = _net(31), torch.randn(1, 16, 64, 64)
    settled = settle(net, x, _table(net, x, ["fft-torch", "direct"]), budget_s=0.3)
    steps = [(c.step, c.backend, c.kept) for c in settled.checks]
    assert steps == [(1, "fft-torch", True), (1, "direct", False), (2, "fft-torch", True)]
    fft, direct = settled.table.choices
    assert fft.backend == "fft-torch" and fft.network == settled.checks[-1].text
    assert settled.checks[-1].ratio.lo > 1.05 and fft.why == "given"
    assert direct.backend == "torch"
    assert settled.chosen == "settled" and settled.whole["settled"].lo > 1.05
    # The settled table round-trips with what it learnt in the network.
    again = Table.from_dict(settled.table.to_dict())
    assert [c.network for c in again.choices] == [fft.network, direct.network]
    assert again.network == settled.table.network and "settled chosen" in again.network


def test_passes_stop_after_the_last_allowed() -> None:
    net, x = _net(3), torch.randn(2, 16, 32, 32)
    settled = settle(net, x, _table(net, x, ["direct", "direct"]), budget_s=0.2, passes=1)
    assert {c.step for c in settled.checks} == {1}
    with pytest.raises(ValueError, match="passes"):
        settle(net, x, Table([]), passes=0)


def test_a_table_of_torch_alone_is_not_timed() -> None:
    net, x = _net(3), torch.randn(1, 16, 8, 8)
    table = _table(net, x, ["torch", "torch"])
    settled = settle(net, x, table, budget_s=60.0)
    assert settled.checks == [] and settled.table.choices == table.choices
    assert settled.whole == {} and settled.chosen == "torch"
