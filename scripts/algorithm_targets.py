"""Where each algorithm should win: median time of every backend as a ratio to torch's, on the
same case, in one run (minibatch 8 unless a family says otherwise, float32, all threads,
transforms done in ``prepare``). Prints one table per target family, with geometric means, and
says for each target whether it was met.

    python scripts/algorithm_targets.py [--quick] [--family winograd,fft,im2col]

A benchmark, not a test: timings on shared machines are noisy (±20 % run to run), so read the
ratios, which are taken back to back in one process.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch

from convbench import backends
from convbench.env import cpu_count
from convbench.inputs import make_inputs
from convbench.measure.timing import TimingConfig, measure
from convbench.spec import ConvSpec
from convbench.suites import SUITES


@dataclass(frozen=True)
class Family:
    name: str
    specs: list[ConvSpec]
    backends: list[str]
    target: str


def _families() -> list[Family]:
    winograd_layers = [
        w.spec
        for suite in ("vgg16", "resnet50")
        for w in SUITES[suite].workloads(8)
        if w.spec.kh == w.spec.kw == 3 and w.spec.sh == 1 and min(w.spec.ic, w.spec.oc) >= 128
    ]
    large = SUITES["large_kernel"].workloads()
    return [
        Family("winograd", winograd_layers, ["winograd-f2", "winograd-f4", "winograd-f6"],
               "best Winograd: geomean speed-up >= 1.2x, >= 1.8x on its best layer"),
        Family("fft-large", [w.spec.with_mb(8) for w in large if w.spec.kh >= 11
                             and w.spec.ih >= 128], ["fft-torch", "fft-scipy"],
               ">= 2x faster than torch for 11x11+ kernels on 128x128+ inputs"),
        Family("fft-family", [w.spec for w in large if w.spec.ih == 64],
               ["fft-torch", "fft-scipy"], "faster than torch from 7x7 up (mb 4, 32 ch, 64x64)"),
        Family("im2col", [w.spec for w in SUITES["resnet50"].workloads(8)], ["im2col"],
               "within 1.5x of torch on the ResNet-50 layers (ratio >= 0.67)"),
    ]  # fmt: skip


def _time(spec: ConvSpec, name: str, inputs, cfg: TimingConfig) -> float:
    fn = backends.get(name).prepare(spec, inputs.weight, inputs.bias)
    with torch.no_grad():
        return measure(lambda: fn(inputs.x), "cpu", cfg).median_s


def _geomean(xs: list[float]) -> float:
    return math.exp(sum(math.log(x) for x in xs) / len(xs))


def run_family(fam: Family, cfg: TimingConfig) -> dict[str, list[float]]:
    ratios: dict[str, list[float]] = {b: [] for b in fam.backends}
    print(f"\n== {fam.name}: {fam.target}")
    print(f"{'case':34s} {'torch':>9s} " + " ".join(f"{b:>12s}" for b in fam.backends))
    for spec in fam.specs:
        inputs = make_inputs(spec).to("cpu", torch.float32)
        t_torch = _time(spec, "torch", inputs, cfg)
        cells = []
        for b in fam.backends:
            reason = backends.get(b).supports(spec, "cpu", torch.float32)
            if reason:
                cells.append(f"{'-':>12s}")
                continue
            r = t_torch / _time(spec, b, inputs, cfg)
            ratios[b].append(r)
            cells.append(f"{r:11.2f}x")
        print(f"{spec.name or spec.format():34s} {t_torch * 1e3:7.2f}ms " + " ".join(cells))
    print(f"{'geomean':34s} {'':9s} " + " ".join(
        f"{_geomean(v):11.2f}x" if v else f"{'-':>12s}" for v in ratios.values()))  # fmt: skip
    return ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing budget per case")
    parser.add_argument("--family", default="", help="comma-separated families to run")
    args = parser.parse_args()
    torch.set_num_threads(cpu_count())
    cfg = TimingConfig.quick() if args.quick else TimingConfig()
    wanted = set(filter(None, args.family.split(",")))
    # The first convolutions of a process run slow (thread pools, oneDNN's JIT, clocks):
    # spend a second on a throwaway case so that the first row is measured like the rest.
    warm = SUITES["resnet50"].workloads(8)[0].spec
    _time(warm, "torch", make_inputs(warm).to("cpu", torch.float32), TimingConfig(budget_s=1.0))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; ratio = torch / backend")
    for fam in _families():
        if wanted and fam.name not in wanted:
            continue
        ratios = run_family(fam, cfg)
        if fam.name == "winograd":
            best = max(ratios, key=lambda b: _geomean(ratios[b]))
            ok = _geomean(ratios[best]) >= 1.2 and max(ratios[best]) >= 1.8
            print(
                f"target {'MET' if ok else 'MISSED'}: {best} geomean "
                f"{_geomean(ratios[best]):.2f}x, best layer {max(ratios[best]):.2f}x"
            )
        elif fam.name.startswith("fft"):
            need = 2.0 if fam.name == "fft-large" else 1.0
            for b, v in ratios.items():
                met = min(v) >= need if fam.name == "fft-large" else min(v) > need
                print(f"target {'MET' if met else 'MISSED'} by {b}: slowest ratio {min(v):.2f}x")
        else:
            worst = min(ratios["im2col"])
            print(
                f"target {'MET' if worst >= 1 / 1.5 else 'MISSED'}: worst im2col ratio {worst:.2f}x"
            )


if __name__ == "__main__":
    main()
