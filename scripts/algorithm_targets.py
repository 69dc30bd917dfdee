"""Where each algorithm should win, over whole classes of layers: every backend timed side by side
with torch in interleaved rounds (``measure_rounds``), its speed-up the median of per-round ratios
with a 95 % interval, float32, all threads, transforms done in ``prepare``.

    python scripts/algorithm_targets.py [--quick] [--family winograd,fft-large,...] [--json OUT]
                                        [--cold-cache]

The classes are generated, not listed: 3×3 stride-1 layers at every size from 7×7 to 112×112 with
the channel counts networks pair with them (and a few seeded draws in between), 11×11 and larger
kernels on 128×128 and larger images at 8 to 256 channels and minibatch 1 to 16, 7×7 to 15×15 on
(4, 32, 64×64), and every ResNet-50 layer. A problem whose direct FLOPs exceed ``--max-gflop``
is left out (and counted) so that the run ends in minutes. A benchmark, not a test: read ratios.
The targets are set for warm calls (back to back); ``--cold-cache`` shows what is left of each
speed-up inside a network, where every call finds its weights evicted.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from convbench import backends
from convbench.backends.base import onednn_linear
from convbench.backends.numba_pool import on_pool
from convbench.env import PEAK_GEMM_N, cpu_count, gemm_peak, gemm_products
from convbench.inputs import make_inputs
from convbench.measure.cache import regime_sampler, regime_timing
from convbench.measure.timing import Clock, TimingConfig, measure_rounds
from convbench.spec import ConvSpec, parse
from convbench.suites import SUITES

WINOGRAD = ["winograd-f2", "winograd-f4", "winograd-f6"]
GEMMS = "GEMMs alone"
"""im2col's products without its columns (:func:`gemms_alone`): a column of the im2col table."""
FFT = ["fft-torch", "fft-scipy"]


@dataclass
class Family:
    name: str
    specs: list[ConvSpec]
    backends: list[str]
    target: str
    rows: list[dict] = field(default_factory=list)


def _same(c: int, k: int, h: int, mb: int, r: int, name: str) -> ConvSpec:
    return parse(f'mb{mb}ic{c}ih{h}oc{k}oh{h}kh{r}ph{r // 2}n"{name}"')


def winograd_class(mb: int) -> list[ConvSpec]:
    """3×3 stride-1 "same" layers from 7×7 to 112×112 with ≥ 64 channels: every size of the grid
    with the channel counts that networks give it (channels × size from 3584, ResNet-50's
    512 @ 7, to 14336, VGG-16's 128 @ 112), and six seeded
    draws with unequal in and out channels."""
    sizes = (7, 10, 14, 20, 28, 40, 56, 80, 112)
    chans = (64, 96, 128, 192, 256, 384, 512)
    specs = [
        _same(c, c, h, mb, 3, f"w3_c{c}_{h}px")
        for h in sizes
        for c in chans
        if 3584 <= c * h <= 14336
    ]
    rng = random.Random(13)
    while len(specs) < 36:
        h = rng.choice(sizes)
        c, k = rng.choice(chans), rng.choice(chans)
        if c != k and 3584 <= max(c, k) * h <= 14336:
            specs.append(_same(c, k, h, mb, 3, f"w3_c{c}k{k}_{h}px"))
    return specs


def fft_large_class() -> list[ConvSpec]:
    """11×11 to 15×15 kernels on 128×128 to 256×256 images, channels 8 to 256, minibatch 1 to
    16: the grid of equal in and out channels; with unequal ones (where the FFTs of the larger
    side are paid for the sums of the smaller), every pair of 8, 16 and 32 on one 128² image
    with 11×11, the corner where the FFTs weigh most, and eight seeded draws of at most 60
    direct GFLOP (the FFT's lead grows with the work, and most larger draws take minutes)."""
    grid = ((128, 11), (192, 13), (256, 15))
    chans, mbs = (8, 16, 32, 64, 128, 256), (1, 4, 16)
    specs = [
        _same(c, c, h, mb, r, f"f{r}_c{c}_mb{mb}_{h}px")
        for h, r in grid
        for c in chans
        for mb in mbs
    ]
    specs += [
        _same(c, k, 128, 1, 11, f"f11_c{c}k{k}_mb1_128px")
        for c in (8, 16, 32)
        for k in (8, 16, 32)
        if c != k
    ]
    draws = len(specs) + 8
    rng = random.Random(11)
    while len(specs) < draws:
        (h, r), mb = rng.choice(grid), rng.choice(mbs)
        c, k = rng.sample(chans, 2)
        name = f"f{r}_c{c}k{k}_mb{mb}_{h}px"
        spec = _same(c, k, h, mb, r, name)
        if spec.flops <= 60e9 and all(s.name != name for s in specs):
            specs.append(spec)
    return specs


def fft_family_class() -> list[ConvSpec]:
    return [_same(32, 32, 64, 4, r, f"f{r}_c32_mb4_64px") for r in (7, 9, 11, 13, 15)]


def _families(mbs: list[int]) -> list[Family]:
    resnet = [w.spec for mb in mbs for w in SUITES["resnet50"].workloads(mb)]
    return [
        Family(
            "winograd",
            [s for mb in mbs for s in winograd_class(mb)],
            WINOGRAD,
            "best Winograd geomean >= 1.5x at mb 8 (>= 1.1x at mb 1), >= 1.0x at >= 128 ch",
        ),
        Family(
            "fft-large",
            fft_large_class(),
            FFT,
            "11x11+ on 128x128+: fft-torch >= 2x (geomean >= 3x), fft-scipy >= 1.5x",
        ),
        Family("fft-family", fft_family_class(), FFT, "7x7+ on (4, 32, 64x64): both >= 1.2x"),
        Family(
            "im2col",
            resnet,
            ["im2col"],
            ">= 0.75x on every ResNet-50 layer, GEMM at >= 85 % of the GEMM peak",
        ),
    ]


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def gemm_efficiency(params: dict, cfg: TimingConfig, peak: Callable[[], object]) -> float:
    """The rate of im2col's GEMM, [m × k]·[k × n] at the shape, by the library, as many at a
    time as the backend chose (``params["gemm"]``, ``params["gemm_library"]``, the batch of
    ``params["gemm_calls"]``, the same for every product of a form) and on as many threads
    side by side, one each, as it makes them (``params["gemms_at_once"]``), as a fraction of
    the peak GEMM's (``peak``: PEAK_GEMM_N³ by the fastest of ``convbench.env.gemm_products``),
    the two timed side by side in alternating rounds
    and compared round by round: a peak read once at the start of the run is read at
    another speed of the machine than the layer's GEMM (a run whose torch times rose 1.4×
    midway read 48–101 % where the run before read 65–99 %)."""
    m, k, n = params["gemm"]
    batch = params["gemm_calls"][0][4]
    at_once = params.get("gemms_at_once", 1)
    clock = Clock("cpu")
    samplers = {
        "peak": clock.sampler(peak),
        "shape": clock.sampler(_product(params, m, k, n, batch)),
    }
    rounds = measure_rounds(samplers, cfg, baseline="peak")
    ratio = rounds.speedup("shape")
    assert ratio is not None
    return ratio.value * (at_once * batch * m * k * n) / PEAK_GEMM_N**3


def _product(params: dict, m: int, k: int, n: int, batch: int) -> Callable[[], object]:
    """``batch`` [m × k]·[k × n] products in one call on operands made once, by oneDNN's
    matmul where im2col chose it (``params["gemm_library"]``; one at a time), else by
    ``torch.mm`` or, batched, ``torch.bmm`` (the BLAS calls behind ``torch.matmul``); where
    its threads each make products of their own (``params["gemms_at_once"]``), one such call
    on each thread at once, on operands of its own."""
    at_once = params.get("gemms_at_once", 1)
    calls = [_one_product(params, m, k, n, batch) for _ in range(at_once)]
    if at_once == 1:
        return calls[0]
    return lambda: on_pool(lambda p: calls[p](), at_once)


def _one_product(params: dict, m: int, k: int, n: int, batch: int) -> Callable[[], object]:
    if params.get("gemm_library") == "oneDNN matmul":
        a, b = torch.randn(m, k), torch.randn(n, k)
        linear = onednn_linear(b, None, m)
        return lambda: linear(a)
    a, b, out = torch.randn(batch, m, k), torch.randn(batch, k, n), torch.empty(batch, m, n)
    if batch == 1:
        return lambda: torch.mm(a[0], b[0], out=out[0])
    return lambda: torch.bmm(a, b, out=out)


def gemms_alone(params: dict) -> Callable[[], None]:
    """A call of im2col's products alone: each of ``params["gemm_calls"]`` ([m, k, n, count,
    batch]) as :func:`_product` makes it, ``batch`` at a time (and ``gemms_at_once`` side by
    side: a share left over is made as a whole round). Timed beside torch, torch's time over
    this is the speed-up im2col would have if its columns cost nothing: its ceiling with that
    GEMM (optimistic: the operands stay in cache, and no product accumulates)."""
    at_once = params.get("gemms_at_once", 1)
    calls = [
        (_product(params, m, k, n, batch), -(-count // (batch * at_once)))
        for m, k, n, count, batch in params["gemm_calls"]
    ]

    def run() -> None:
        for product, count in calls:
            for _ in range(count):
                product()

    return run


def run_case(spec: ConvSpec, names: list[str], cfg: TimingConfig, cold: bool = False) -> dict:
    """One problem's row: each backend's speed-up over torch, paired; with ``cold``, each call
    timed after the caches are evicted (``convbench run --cold-cache``)."""
    inputs = make_inputs(spec).to("cpu", torch.float32)
    clock = Clock("cpu")
    samplers, params = {}, {}
    for name in ["torch", *names]:
        if backends.get(name).supports(spec, "cpu", torch.float32):
            continue
        prepared = backends.get(name).prepare(spec, inputs.weight, inputs.bias)
        params[name] = prepared.params
        samplers[name] = regime_sampler(clock, lambda p=prepared: p(inputs.x), inputs.x, cold)
    if "im2col" in params:
        samplers[GEMMS] = regime_sampler(clock, gemms_alone(params["im2col"]), inputs.x, cold)
    with torch.no_grad():
        rounds = measure_rounds(samplers, regime_timing(cfg, cold), baseline="torch")
    row: dict = {
        "case": spec.name,
        "spec": spec.format(),
        "mb": spec.mb,
        "torch_ms": rounds.timings["torch"].median_s * 1e3,
        "speedup": {},
        "params": params,
    }
    for name in names:
        ratio = rounds.speedup(name)
        if ratio is not None:
            row["speedup"][name] = [ratio.value, ratio.lo, ratio.hi]
    if "im2col" in params:
        ceiling = rounds.speedup(GEMMS)
        assert ceiling is not None
        row["gemms_alone"] = [ceiling.value, ceiling.lo, ceiling.hi]
    return row


def _interval(ratio: list[float]) -> str:
    v, lo, hi = ratio
    return f"{v:5.2f}x [{lo:4.2f},{hi:4.2f}]"


def _cell(row: dict, name: str) -> str:
    return _interval(row["speedup"][name]) if name in row["speedup"] else f"{'-':>17s}"


def print_header(fam: Family) -> None:
    extra = [GEMMS, "GEMM/peak"] if fam.name == "im2col" else []
    print(f"\n== {fam.name}: {fam.target}")
    names = " ".join(f"{b:>17s}" for b in fam.backends + extra)
    print(f"{'case':28s} {'mb':>3s} {'torch':>10s} {names}", flush=True)


def print_row(fam: Family, row: dict) -> None:
    cells = [_cell(row, b) for b in fam.backends]
    if "gemms_alone" in row:
        cells.append(_interval(row["gemms_alone"]))
    if "gemm_of_peak" in row:
        cells.append(f"{row['gemm_of_peak'] * 100:16.0f}%")
    print(
        f"{row['case']:28s} {row['mb']:3d} {row['torch_ms']:8.2f}ms " + " ".join(cells), flush=True
    )


def ratios(rows: list[dict], name: str) -> list[float]:
    return [r["speedup"][name][0] for r in rows if name in r["speedup"]]


def best_ratios(rows: list[dict], names: list[str]) -> list[float]:
    return [max(r["speedup"][n][0] for n in names if n in r["speedup"]) for r in rows]


def verdicts(fam: Family) -> list[str]:
    """One line per target of the family: MET or MISSED, with the figure it rests on."""

    def line(ok: bool, text: str) -> str:
        return f"target {'MET' if ok else 'MISSED'}: {text}"

    out = []
    if fam.name == "winograd":
        for mb in sorted({r["mb"] for r in fam.rows}):
            rows = [r for r in fam.rows if r["mb"] == mb]
            best = best_ratios(rows, WINOGRAD)
            gm, need = _geomean(best), 1.5 if mb > 1 else 1.1
            out.append(line(gm >= need, f"mb {mb}: best-Winograd geomean {gm:.2f}x (>= {need})"))
            per = ", ".join(f"{n} {_geomean(ratios(rows, n)):.2f}x" for n in WINOGRAD)
            wins = {
                n: sum(max(r["speedup"], key=lambda b: r["speedup"][b][0]) == n for r in rows)
                for n in WINOGRAD
            }
            out.append(f"  mb {mb}: geomean per variant: {per}; layers won: {wins}")
            if mb > 1:
                big = [
                    b
                    for b, r in zip(best, rows, strict=True)
                    if min(parse(r["spec"]).ic, parse(r["spec"]).oc) >= 128
                ]
                out.append(line(min(big) >= 1.0, f"mb {mb}: slowest at >= 128 ch {min(big):.2f}x"))
    elif fam.name == "fft-large":
        t, s = ratios(fam.rows, "fft-torch"), ratios(fam.rows, "fft-scipy")
        out.append(line(min(t) >= 2.0, f"fft-torch slowest {min(t):.2f}x (>= 2)"))
        out.append(line(_geomean(t) >= 3.0, f"fft-torch geomean {_geomean(t):.2f}x (>= 3)"))
        out.append(line(min(s) >= 1.5, f"fft-scipy slowest {min(s):.2f}x (>= 1.5)"))
    elif fam.name == "fft-family":
        for n in FFT:
            out.append(
                line(
                    min(ratios(fam.rows, n)) >= 1.2,
                    f"{n} slowest {min(ratios(fam.rows, n)):.2f}x (>= 1.2)",
                )
            )
    else:
        r = ratios(fam.rows, "im2col")
        eff = [row["gemm_of_peak"] for row in fam.rows]
        out.append(
            line(
                min(r) >= 0.75,
                f"im2col slowest {min(r):.2f}x (>= 0.75), geomean {_geomean(r):.2f}x",
            )
        )
        out.append(line(min(eff) >= 0.85, f"GEMM at {min(eff) * 100:.0f} % of peak at worst"))
        # Out of reach: even the products alone, at their interval's top, miss the target.
        beyond = [f"{r['case']} mb {r['mb']}" for r in fam.rows if r["gemms_alone"][2] < 0.75]
        ceil = min(r["gemms_alone"][0] for r in fam.rows)
        out.append(
            f"  {GEMMS} (im2col's ceiling with its GEMM): slowest {ceil:.2f}x; "
            f"below 0.75x with 95 % confidence: {', '.join(beyond) or 'none'}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing budget per case")
    parser.add_argument("--family", default="", help="comma-separated families to run")
    parser.add_argument("--mb", default="8,1", help="minibatches of winograd and im2col")
    parser.add_argument("--match", default="", help="only cases whose name contains this")
    parser.add_argument(
        "--max-gflop",
        type=float,
        default=300.0,
        help="leave out problems above this many direct GFLOPs (default 300)",
    )
    parser.add_argument("--json", default="", help="write every row to this file")
    parser.add_argument(
        "--cold-cache",
        action="store_true",
        help="time each call after evicting the caches, as convbench run --cold-cache does",
    )
    args = parser.parse_args()
    torch.set_num_threads(cpu_count())
    cfg = TimingConfig.quick() if args.quick else TimingConfig()
    wanted = set(filter(None, args.family.split(",")))
    mbs = [int(m) for m in args.mb.split(",")]
    # The first convolutions of a process run slow (thread pools, oneDNN's JIT, clocks):
    # spend a second on a throwaway case so that the first row, and the GEMM peak printed
    # here, are measured like the rest.
    warm = SUITES["resnet50"].workloads(8)[0].spec
    run_case(warm, [], TimingConfig(budget_s=1.0))
    peak_library, peak = gemm_peak("cpu")
    peak_product = gemm_products("cpu")[peak_library]
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, GEMM peak {peak:.0f} "
        f"GFLOP/s ({peak_library}); speed-up = torch / backend, median of paired rounds "
        "[95 % interval]"
        + ("; cold caches (each call after an eviction)" if args.cold_cache else "")
    )
    report = {}
    for fam in _families(mbs):
        if wanted and fam.name not in wanted:
            continue
        specs = [s for s in fam.specs if args.match in s.name]
        left_out = [s for s in specs if s.flops > args.max_gflop * 1e9]
        print_header(fam)
        for spec in specs:
            if spec not in left_out:
                row = run_case(spec, fam.backends, cfg, args.cold_cache)
                if "im2col" in row["params"]:
                    row["gemm_of_peak"] = gemm_efficiency(
                        row["params"]["im2col"], cfg, peak_product
                    )
                fam.rows.append(row)
                print_row(fam, fam.rows[-1])
        if left_out:
            print(
                f"left out above {args.max_gflop:g} GFLOP: " + ", ".join(s.name for s in left_out)
            )
        if fam.rows:
            for text in verdicts(fam):
                print(text)
        report[fam.name] = fam.rows
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(
                {"gemm_peak_gflops": peak, "gemm_library": peak_library, "families": report},
                fh,
                indent=1,
            )


if __name__ == "__main__":
    main()
