"""A tuning table settled in its network: a choice stays only where it is faster in the network
too, not only when its layer is timed alone.

Per-layer timings overrate a backend placed between torch's operators, in two ways that a layer
timed alone cannot show:

- a GEMM right after a oneDNN operator runs several times slower than alone
  (``scripts/library_switch.py`` measures it);
- a backend's output layout slows the operators after it: on the channels-last output of an
  im2col 1×1 layer, MobileNetV2's depthwise convolutions (which torch keeps) take 1.2–2.4× as
  long as on torch's own output.

So the network is timed with torch and with the table in interleaved rounds (the measure layer's
paired timing), and the start of every convolution call is stamped by a forward pre-hook. From a
converted layer's start to the next converted layer's start runs its *stretch*: the layer, and
whatever torch computes after it on its output up to the next converted layer; the torch network
runs the same modules in the same stretch. A problem's stretches (every layer it has) are summed
per call; torch's sum over the table's, paired by round, is the problem's speed-up in the network,
with the 95 % interval of its median. A choice stays where that is faster beyond noise by the rule
the table chose it by (:func:`convbench.verdicts.speedup_verdict`); the others fall back to torch.
A fallen layer lengthens the stretch before it, so what is left is checked again, for up to
``passes`` passes, until nothing more falls.

A stretch does not hold every effect: a layout can outlast the next converted layer, and a gain
of a few per cent on each of many stretches (each within the noise margin) can add up to a gain
of the whole. So the whole network decides last: torch, the per-layer table and the settled one
are timed together, in interleaved rounds, and the table that comes out is the settled one where
it is faster than torch beyond noise, unless the per-layer one is faster than it beyond noise in
the same rounds (paired), and torch on every layer where neither is. The two differ only in the
choices the network showed slower, often on small layers: picking the larger of two ratios that
noise alone separates would throw away what the passes learnt, at random. With the
stretches alone, MobileNetV2 at minibatch 8 ran 1.02x torch end to end, where its per-layer
table ran 1.12x (two runs of ``convbench model``, which settles every table it tunes).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from convbench.measure.stats import Ratio, paired_ratio
from convbench.measure.timing import Clock
from convbench.network import interleaved
from convbench.nn import BASELINE, Conversion, convert
from convbench.report.summary import ratio_text
from convbench.tuning import Choice, Table, problem_key
from convbench.verdicts import speedup_verdict

__all__ = ["Check", "Settled", "settle", "stretches"]

Stamps = list[tuple[str, float]]


@dataclass(frozen=True)
class Check:
    """One problem's choice timed in the network in one pass."""

    problem: str
    backend: str
    paths: tuple[str, ...]
    ratio: Ratio  # torch's stretches over the table's: above 1, faster in the network
    verdict: str
    step: int  # the pass, from 1

    @property
    def kept(self) -> bool:
        return self.verdict == "faster"

    @property
    def text(self) -> str:
        return f"{self.backend} {ratio_text(self.ratio)} ({self.verdict})"


@dataclass(frozen=True)
class Settled:
    table: Table
    checks: list[Check]  # every pass's, in order
    whole: dict[str, Ratio]  # the whole network's speed-up with the per-layer and settled tables
    chosen: str  # which of those the table holds: "per-layer", "settled", or "torch" (neither)
    wall_s: float

    @property
    def fallen(self) -> list[Check]:
        return [c for c in self.checks if not c.kept]

    @property
    def problems(self) -> int:
        """Problems checked (each once at least)."""
        return len({c.problem for c in self.checks})


def stretches(stamps: Stamps, end: float, starts: set[str]) -> dict[str, float]:
    """Seconds from each stamp of a path in ``starts`` to the next such stamp (the last one: to
    ``end``), summed by path. Stamps before the first of ``starts`` belong to no stretch."""
    out: dict[str, float] = {}
    current, since = "", 0.0
    for path, t in stamps:
        if path in starts:
            if current:
                out[current] = out.get(current, 0.0) + t - since
            current, since = path, t
    if current:
        out[current] = out.get(current, 0.0) + end - since
    return out


@contextmanager
def _stamped(net: torch.nn.Module, stamps: Stamps, sync: Callable[[], None]) -> Iterator[None]:
    """While inside, every ``Conv2d`` call of ``net`` appends its path and start to ``stamps``."""

    def hook(path: str) -> Callable[[torch.nn.Module, object], None]:
        def stamp(_module: torch.nn.Module, _args: object) -> None:
            sync()
            stamps.append((path, time.perf_counter()))

        return stamp

    handles = [
        m.register_forward_pre_hook(hook(path))
        for path, m in net.named_modules()
        if isinstance(m, torch.nn.Conv2d)
    ]
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _measure(
    nets: dict[str, torch.nn.Module],
    x: torch.Tensor,
    group: dict[str, str],
    budget_s: float,
    seed: int,
) -> dict[str, Ratio]:
    """Each problem's speed-up in the network: torch's stretches over the converted network's,
    paired by round. ``group`` maps each converted layer's path to its problem."""
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    starts = set(group)
    sums: dict[str, list[dict[str, float]]] = {name: [] for name in nets}
    stamps: dict[str, Stamps] = {name: [] for name in nets}

    def sampler(name: str) -> Callable[[int], float]:
        net, out, marks = nets[name], sums[name], stamps[name]

        def sample(number: int) -> float:
            acc: dict[str, float] = {}
            t0 = time.perf_counter()
            for _ in range(number):
                marks.clear()
                net(x)
                sync()
                for path, s in stretches(marks, time.perf_counter(), starts).items():
                    acc[group[path]] = acc.get(group[path], 0.0) + s / number
            out.append(acc)
            return time.perf_counter() - t0

        return sample

    # No precision ends it early: the whole network's ratio is known long before its parts'.
    with (
        torch.no_grad(),
        _stamped(nets["torch"], stamps["torch"], sync),
        _stamped(nets["convbench"], stamps["convbench"], sync),
    ):
        rounds = interleaved({name: sampler(name) for name in nets}, budget_s, seed, 0.0)
    n = min(len(t.samples_s) for t in rounds.timings.values())
    # One sampler call per participant and round; the warm-up's calls come before them all.
    torch_sums, ours = sums["torch"][-n:], sums["convbench"][-n:]
    return {
        problem: paired_ratio([s[problem] for s in torch_sums], [s[problem] for s in ours])
        for problem in set(group.values())
    }


def _checks(
    conversion: Conversion, model: torch.nn.Module, x: torch.Tensor, budget_s: float, step: int
) -> list[Check]:
    """This pass's checks of every problem the converted network computes with a backend."""
    layers = {path: m.last for path, m in conversion.layers.items()}
    group = {
        path: problem_key(c.spec)
        for path, c in layers.items()
        if c.spec is not None and c.backend != BASELINE
    }
    if not group:
        return []
    nets = {"torch": model, "convbench": conversion.model}
    ratios = _measure(nets, x, group, budget_s, seed=step)
    paths: dict[str, list[str]] = {}
    for path, problem in group.items():
        paths.setdefault(problem, []).append(path)
    return [
        Check(
            problem=problem,
            backend=layers[ps[0]].backend,
            paths=tuple(ps),
            ratio=ratios[problem],
            verdict=speedup_verdict(ratios[problem]),
            step=step,
        )
        for problem, ps in paths.items()
    ]


def _fall(c: Choice, why: str, network: str) -> Choice:
    """``c`` given back to torch, with why."""
    alone = f"{c.speedup_text} alone"
    return dataclasses.replace(
        c,
        backend=BASELINE,
        why=f"{c.backend} is {alone}, but {why}: {BASELINE} kept",
        speedup=1.0,
        speedup_lo=None,
        speedup_hi=None,
        rounds=0,
        rel_l2_error=None,
        bound=None,
        within=True,
        network=network,
        others={
            **{b: text for b, text in c.others.items() if b != BASELINE},
            c.backend: f"{alone}, but {why}",
        },
    )


def _settled(table: Table, last: dict[str, Check], device: str, dtype: str) -> Table:
    """``table`` with each checked choice's speed-up in the network, and torch where it fell."""
    chosen = {}
    for problem in last:
        found = table.lookup(problem, device, dtype)
        if found is not None:
            chosen[id(found)] = last[problem]
    choices = []
    for c in table.choices:
        check = chosen.get(id(c))
        if check is not None and check.kept:
            c = dataclasses.replace(c, network=check.text)
        elif check is not None:
            c = _fall(c, f"{check.text} in the network", check.text)
        choices.append(c)
    return dataclasses.replace(table, choices=choices)


def _whole(
    model: torch.nn.Module, x: torch.Tensor, nets: dict[str, torch.nn.Module], budget_s: float
) -> tuple[dict[str, Ratio], Ratio | None]:
    """Each converted network's speed-up over torch, all timed in the same interleaved rounds,
    and the per-layer network's over the settled one (paired by round) where both ran."""
    clock = Clock(x.device.type)
    with torch.no_grad():
        samplers = {"torch": clock.sampler(lambda: model(x))} | {
            name: clock.sampler(lambda net=net: net(x)) for name, net in nets.items()
        }
        rounds = interleaved(samplers, budget_s, seed=0)
    between = rounds.ratio("settled", "per-layer")
    return {name: rounds.speedup(name) for name in nets}, between  # type: ignore[misc]


def _all_torch(table: Table, problems: set[str], why: str, device: str, dtype: str) -> Table:
    """``table`` with torch for every one of ``problems`` (on this device and dtype) that does
    not have it yet."""
    looked = {id(table.lookup(p, device, dtype)) for p in problems}
    choices = [
        _fall(c, why, why) if id(c) in looked and c.backend != BASELINE else c
        for c in table.choices
    ]
    return dataclasses.replace(table, choices=choices, network=why)


def settle(
    model: torch.nn.Module,
    x: torch.Tensor,
    table: Table,
    *,
    threads: int | None = None,
    budget_s: float = 10.0,
    passes: int = 3,
    network: str = "the network",
) -> Settled:
    """``table`` settled in ``model`` on ``x`` (see the module's docstring): each pass times both
    networks for ``budget_s`` each, on ``threads`` CPU threads, and so does the choice between
    the tables. ``network`` names the network in what the table says."""
    if passes < 1:
        raise ValueError(f"passes must be at least 1, got {passes}")
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)
    model = model.eval().to(x.device, x.dtype)
    with torch.no_grad():
        conversion = convert(model, table=table, example=x)
    checks: list[Check] = []
    last: dict[str, Check] = {}
    for step in range(1, passes + 1):
        now = _checks(conversion, model, x, budget_s, step)
        checks += now
        last |= {c.problem: c for c in now}
        fallen = [c for c in now if not c.kept]
        if not fallen:
            break
        for c in fallen:
            for path in c.paths:
                conversion.layers[path].set_backend(BASELINE)
        with torch.no_grad():
            conversion.model(x)  # what each layer computes with, for the next pass
    if not checks:  # torch on every layer already: nothing to settle
        return Settled(table, [], {}, BASELINE, time.perf_counter() - start)
    device, dtype = x.device.type, str(x.dtype).removeprefix("torch.")
    settled = _settled(table, last, device, dtype)
    # The settled network is the one the passes ran (prepared already); the per-layer one is
    # made again only where some choice fell (otherwise the two are the same).
    fell = any(not c.kept for c in checks)
    # Where nothing fell the two are the same choices, with what the network showed of each.
    tables = {"per-layer": table if fell else settled}
    nets = {"per-layer": conversion.model}
    if fell:
        tables["settled"], nets["settled"] = settled, conversion.model
        with torch.no_grad():
            nets["per-layer"] = convert(model, table=table, example=x).model
    whole, between = _whole(model, x, nets, budget_s)
    said = ", ".join(f"{name} {ratio_text(r)}" for name, r in whole.items())
    # The settled table where it is faster than torch beyond noise, the per-layer one where
    # that is faster than torch and than the settled one, else torch on every layer.
    faster = {name: r for name, r in whole.items() if speedup_verdict(r) == "faster"}
    if faster:
        chosen = "settled" if "settled" in faster else "per-layer"
        if "per-layer" in faster and speedup_verdict(between) == "faster":
            chosen = "per-layer"
        out = dataclasses.replace(tables[chosen], network=f"in {network}, {chosen} chosen: {said}")
    else:
        chosen = BASELINE
        why = f"{network} as a whole is not faster with the table beyond noise ({said})"
        out = _all_torch(settled, set(last), why, device, dtype)
    return Settled(out, checks, whole, chosen, time.perf_counter() - start)
