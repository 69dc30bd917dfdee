"""fft-scipy with its FFT threads chosen per problem, against fft-scipy always on torch's threads,
both paired with torch in the same rounds.

pocketfft runs threads of its own, and torch's OpenMP threads spin-wait after each of torch's
operators, so the two share the cores whenever the backend switches between them. ``prepare``
therefore also times the chosen way with the FFTs on one thread. This prints, for FFT-class
problems of 8 to 128 channels, both versions' speed-ups over torch and what ``prepare`` chose.

    python scripts/fft_scipy_threads.py [--threads N] [--budget SECONDS]
"""

from __future__ import annotations

import argparse
import random

import torch

from convbench import backends
from convbench.backends.fft import FFTScipyBackend
from convbench.measure.timing import Clock, TimingConfig, measure_rounds
from convbench.report.summary import ratio_text
from convbench.spec import parse

# (minibatch, channels, image, kernel): the few-channel corner where the FFTs dominate, and
# some of the many-channel problems where the GEMMs do.
PROBLEMS = [
    (1, 8, 128, 11),
    (4, 8, 128, 11),
    (1, 16, 128, 11),
    (4, 16, 128, 11),
    (16, 16, 128, 13),
    (1, 32, 192, 13),
    (4, 32, 128, 15),
    (1, 64, 128, 11),
    (1, 128, 128, 13),
    (4, 32, 64, 7),
    (4, 32, 64, 11),
]


class TorchThreads(FFTScipyBackend):
    """fft-scipy as it was: pocketfft always on torch's thread count."""

    own_threads = False


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per backend and case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    timing = TimingConfig(
        budget_s=args.budget, warmup_s=0.1, min_samples=5, turn_samples=1, turn_warmup_s=0.0
    )
    clock = Clock("cpu")
    print(f"{'problem':34s} {'torch':>10s}  {'torch threads':24s} {'chosen':24s} fft-scipy chose")
    for mb, c, size, k in PROBLEMS:
        desc = f"mb{mb}ic{c}ih{size}oc{c}oh{size}kh{k}ph{k // 2}"
        spec = parse(desc)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(mb, c, size, size, generator=gen)
        w = torch.randn(c, c, k, k, generator=gen)
        chosen = FFTScipyBackend().prepare(spec, w, None)
        calls = {
            "torch": backends.get("torch").prepare(spec, w, None),
            "torch threads": TorchThreads().prepare(spec, w, None),
            "chosen": chosen,
        }
        with torch.no_grad():
            rounds = measure_rounds(
                {name: clock.sampler(lambda f=f, x=x: f(x)) for name, f in calls.items()},
                timing,
                baseline="torch",
                rng=random.Random(0),
            )
        torch_ms = rounds.timings["torch"].median_s * 1e3
        ratios = [ratio_text(rounds.speedup(n)) for n in ("torch threads", "chosen")]  # type: ignore[arg-type]
        print(f"{desc:34s} {torch_ms:8.2f}ms  {ratios[0]:24s} {ratios[1]:24s} "
              f"{chosen.algorithm}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
