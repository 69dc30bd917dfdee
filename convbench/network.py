"""A whole network, end to end: its convolution problems, and the network timed with torch and
with a tuning table, interleaved, and checked against the same network in float64.

Per-layer speed-ups do not add up to a network's: the layers between the convolutions (ReLU,
pooling, batch norm, the classifier's GEMMs) take their share, and a backend's working set
evicts the next layer's inputs from the caches. So the network is timed whole, both versions
in interleaved rounds (the measure layer's paired timing, one call per turn: a call of a whole
network is long enough that the wake of the other version does not matter), and its output is
compared with the float64 network's on the same seeded input.
"""

from __future__ import annotations

import copy
import dataclasses
import random
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape

from convbench.console import titled_table
from convbench.functional import problem
from convbench.measure.accuracy import compare
from convbench.measure.timing import Clock, Rounds, Sampler, TimingConfig, measure_rounds
from convbench.nn import convert
from convbench.report.summary import format_seconds
from convbench.spec import ConvSpec
from convbench.tuning import Table, problem_key
from convbench.verdicts import SPEEDUP_MARGIN, speedup_verdict

__all__ = [
    "LayerRow",
    "NetworkResult",
    "conv_layers",
    "evaluate",
    "example_input",
    "interleaved",
    "print_result",
]


def example_input(
    input_size: tuple[int, int, int],
    mb: int,
    size: tuple[int, int] | None = None,
    seed: int = 0,
    device: str = "cpu",
    dtype: str = "float32",
) -> torch.Tensor:
    """A seeded N(0, 1) input of ``mb`` images (``size`` overrides their height and width);
    on the meta device, a shape only."""
    c, h, w = input_size
    shape = (mb, c, *(size or (h, w)))
    if device == "meta":
        return torch.empty(shape, device="meta", dtype=getattr(torch, dtype))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return x.to(device, getattr(torch, dtype))


def conv_layers(model: torch.nn.Module, x: torch.Tensor) -> list[tuple[str, ConvSpec]]:
    """Every ``nn.Conv2d`` call of ``model`` on ``x``, in call order, as a named problem. The
    network runs on the meta device (shapes only, no arithmetic) where its modules allow it."""
    found: list[tuple[str, ConvSpec]] = []

    def hook(path: str):  # type: ignore[no-untyped-def]
        def record(m: torch.nn.Conv2d, args: tuple[torch.Tensor, ...]) -> None:
            p = problem(
                args[0], m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups,
                m.padding_mode,
            )  # fmt: skip
            if p is not None:  # an empty batch poses no problem
                found.append((path, dataclasses.replace(p.spec, name=path)))

        return record

    def run(net: torch.nn.Module, inp: torch.Tensor) -> None:
        handles = [
            m.register_forward_pre_hook(hook(path))
            for path, m in net.named_modules()
            if isinstance(m, torch.nn.Conv2d)
        ]
        try:
            with torch.no_grad():
                net(inp)
        finally:
            for h in handles:
                h.remove()

    try:
        run(copy.deepcopy(model).to("meta"), x.to("meta"))
    except (NotImplementedError, RuntimeError) as exc:
        if x.device.type == "meta":
            raise ValueError(f"the network does not run on the meta device: {exc}") from None
        found.clear()
        run(model, x)
    return found


@dataclass(frozen=True)
class LayerRow:
    """One convolution layer of the network and what the table chose for it."""

    path: str
    problem: str
    backend: str
    why: str
    speedup: str
    rel_l2_error: float | None
    run_backend: str  # what the converted network actually ran it with
    network: str = ""  # the choice's speed-up in the network it was settled in ("": not settled)


@dataclass
class NetworkResult:
    """The end-to-end comparison; plain data, for the terminal, the page and JSON."""

    name: str
    source: str
    input_shape: list[int]
    threads: int
    torch_s: float
    convbench_s: float
    speedup: float
    speedup_lo: float
    speedup_hi: float
    rounds: int
    verdict: str  # faster / slower / not significant: the interval against the noise margin
    torch_error: float
    convbench_error: float
    max_error: float | None
    layers: list[LayerRow] = field(default_factory=list)
    tuning: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def interleaved(
    samplers: dict[str, Sampler],
    budget_s: float,
    seed: int,
    rel_precision: float = TimingConfig.rel_precision,
) -> Rounds:
    """``torch`` and ``convbench``, each a whole network, timed in interleaved rounds of one
    call a turn, ``budget_s`` each, until their ratio is known to ``rel_precision`` (0: until
    the budget is spent). A network that raises while timed fails the whole."""
    timing = TimingConfig(
        budget_s=budget_s, warmup_s=0.0, min_samples=5, rel_precision=rel_precision,
        turn_samples=1, turn_warmup_s=0.0,
    )  # fmt: skip
    rounds = measure_rounds(samplers, timing, baseline="torch", rng=random.Random(seed))
    if rounds.errors:
        name, exc = next(iter(rounds.errors.items()))
        raise RuntimeError(f"{name} network failed while timed: {exc}") from exc
    return rounds


def evaluate(
    model: torch.nn.Module,
    x: torch.Tensor,
    table: Table,
    *,
    name: str = "",
    source: str = "",
    threads: int | None = None,
    budget_s: float = 10.0,
    seed: int = 0,
) -> NetworkResult:
    """Time ``model`` on ``x`` with torch and converted with ``table``, interleaved, on
    ``threads`` CPU threads, and compare both outputs with the float64 network's (``model`` in
    eval mode, no grad)."""
    if threads:
        torch.set_num_threads(threads)
    model = model.eval().to(x.device, x.dtype)
    with torch.no_grad():
        reference = copy.deepcopy(model).double()(x.double())
        conversion = convert(model, table=table, example=x)
        fast = conversion.model
        ours = fast(x)
        theirs = model(x)
        clock = Clock(x.device.type)
        samplers = {
            "torch": clock.sampler(lambda: model(x)),
            "convbench": clock.sampler(lambda: fast(x)),
        }
        rounds = interleaved(samplers, budget_s, seed)
    ratio = rounds.speedup("convbench")
    if ratio is None:
        raise RuntimeError("the network was not timed: no round took both versions")
    dtype = str(x.dtype).removeprefix("torch.")
    rows = []
    for choice in conversion.choices:
        entry = table.lookup(choice.spec, x.device.type, dtype) if choice.spec else None
        rows.append(
            LayerRow(
                path=choice.path,
                problem=problem_key(choice.spec) if choice.spec else "",
                backend=entry.backend if entry else "torch",
                why=entry.why if entry else "not in the table",
                speedup=entry.speedup_text if entry else "-",
                rel_l2_error=entry.rel_l2_error if entry else None,
                run_backend=choice.backend,
                network=entry.network if entry else "",
            )
        )
    return NetworkResult(
        name=name,
        source=source,
        input_shape=list(x.shape),
        threads=torch.get_num_threads(),
        torch_s=rounds.timings["torch"].median_s,
        convbench_s=rounds.timings["convbench"].median_s,
        speedup=ratio.value,
        speedup_lo=ratio.lo,
        speedup_hi=ratio.hi,
        rounds=ratio.n,
        verdict=speedup_verdict(ratio),
        torch_error=compare(theirs, reference).rel_l2_error,
        convbench_error=compare(ours, reference).rel_l2_error,
        max_error=table.max_error,
        layers=rows,
    )


def _verdict_text(verdict: str) -> str:
    if verdict == "not significant":
        return f"not significant: within ±{SPEEDUP_MARGIN:g} % or the interval holds 1"
    if verdict == "slower":
        return "slower: on this network the table does not pay, keep torch"
    return verdict


def print_result(console: Console, r: NetworkResult) -> None:
    """The layers' choices, then the end-to-end line."""
    table = titled_table(
        f"convbench model {r.name}",
        ["layer", "problem", "backend", "alone vs torch [95% CI]", "in the network", "rel. error"],
        right=("alone vs torch [95% CI]", "in the network", "rel. error"),
    )
    for row in r.layers:
        ran = row.backend if row.run_backend == row.backend else f"{row.run_backend} (!)"
        err = f"{row.rel_l2_error:.1e}" if row.rel_l2_error is not None else "-"
        alone = row.speedup if row.backend != "torch" or not row.network else "-"
        table.add_row(escape(row.path), escape(row.problem), ran, alone, row.network or "-", err)
    console.print(table)
    shape = "x".join(str(d) for d in r.input_shape)
    console.print(
        f"{r.name} ({r.source}), input {shape}, {r.threads} threads: torch "
        f"{format_seconds(r.torch_s)}, with the table {format_seconds(r.convbench_s)}: "
        f"{r.speedup:.2f}x [{r.speedup_lo:.2f}-{r.speedup_hi:.2f}] over {r.rounds} rounds "
        f"({_verdict_text(r.verdict)}); "
        f"output error vs float64: torch {r.torch_error:.1e}, with the table "
        f"{r.convbench_error:.1e}",
        markup=False,
        highlight=False,
    )
    if r.tuning:
        said = "; ".join(f"{k}: {v}" for k, v in r.tuning.items())
        console.print(f"tuning: {said}", markup=False, highlight=False)
