"""The FFT backends' per-problem choices against their earlier, fixed forms, every version paired
with torch in the same rounds.

- ``--compare threads``: fft-scipy as it is (its FFTs in parts on torch's threads, or on one
  thread where ``prepare`` times that faster) against the same always in parts, and against
  its earlier form, the FFTs on pocketfft's own threads (or on one). pocketfft's threads share
  the cores with torch's OpenMP threads, which spin-wait after each of torch's operators; a
  part costs a Python call on a thread of torch's pool, more than a small transform gains.
- ``--compare sizes``: the backend with tiles of every even size of the factors 2, 3, 5 and 7
  (``FAST_SIZES``) against tiles of 2^a·3^b (b ≤ 2) only, the sizes it took before.

    python scripts/fft_ab.py --compare threads|sizes [--backend fft-torch,fft-scipy]
                             [--threads N] [--budget SECONDS]

Prints, for FFT-class problems of 8 to 64 channels, each version's speed-up over torch and what
its ``prepare`` chose.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from typing import Any

import scipy.fft
import torch

from convbench import backends
from convbench.backends import fft
from convbench.backends.base import Prepared
from convbench.measure.timing import Clock, TimingConfig, measure_rounds
from convbench.report.summary import ratio_text
from convbench.spec import ConvSpec, parse

# (minibatch, channels, image, kernel): the few-channel corner where the FFTs dominate, and
# some of the many-channel problems where the GEMMs do.
PROBLEMS = [
    (1, 8, 128, 11),
    (4, 8, 128, 11),
    (1, 16, 128, 11),
    (4, 16, 128, 11),
    (1, 8, 192, 11),
    (4, 16, 192, 13),
    (1, 16, 256, 15),
    (16, 16, 128, 13),
    (1, 32, 192, 13),
    (4, 32, 64, 7),
    (4, 32, 64, 11),
    (1, 64, 128, 11),
]
OLD_SIZES = sorted(2**a * 3**b for a in range(2, 14) for b in range(3))

Versions = Callable[[ConvSpec, torch.Tensor], dict[str, Prepared]]


class _TorchThreads(fft.FFTScipyBackend):
    """fft-scipy without the choice: its FFTs always in as many parts as torch has threads."""

    own_threads = False


class _OwnThreads(fft.FFTScipyBackend):
    """fft-scipy as it was: each batch of FFTs one call on pocketfft's own ``workers``."""

    def transforms(
        self, spec: ConvSpec, size: tuple[int, int], weight: torch.Tensor, workers: int
    ) -> fft.Transforms:
        wf, *_ = super().transforms(spec, size, weight, workers)

        def call(transform: Callable[..., Any], **options: Any) -> fft.Transform:
            return lambda a: torch.from_numpy(transform(a.numpy(), workers=workers, **options))

        return (
            wf,
            call(scipy.fft.rfft2),
            call(scipy.fft.irfft2, s=size, overwrite_x=True),
            call(scipy.fft.fft2),
            call(scipy.fft.ifft2, overwrite_x=True),
        )


def _threads(spec: ConvSpec, w: torch.Tensor) -> dict[str, Prepared]:
    return {
        "fft-scipy, pocketfft's threads": _OwnThreads().prepare(spec, w, None),
        "fft-scipy, torch's threads": _TorchThreads().prepare(spec, w, None),
        "fft-scipy, chosen": fft.FFTScipyBackend().prepare(spec, w, None),
    }


def _sizes(names: list[str]) -> Versions:
    def versions(spec: ConvSpec, w: torch.Tensor) -> dict[str, Prepared]:
        out = {}
        for name in names:
            for tag, sizes in (("2^a·3^b", OLD_SIZES), ("2,3,5,7", fft.FAST_SIZES)):
                now, fft.FAST_SIZES = fft.FAST_SIZES, sizes
                try:
                    out[f"{name} {tag}"] = backends.get(name).prepare(spec, w, None)
                finally:
                    fft.FAST_SIZES = now
        return out

    return versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--compare", choices=("threads", "sizes"), required=True)
    parser.add_argument("--backend", default="fft-torch,fft-scipy", help="with --compare sizes")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--budget", type=float, default=1.5, help="seconds per version and case")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    versions = _threads if args.compare == "threads" else _sizes(args.backend.split(","))
    timing = TimingConfig(
        budget_s=args.budget, warmup_s=0.1, min_samples=5, turn_samples=1, turn_warmup_s=0.0
    )
    clock = Clock("cpu")
    for mb, c, size, k in PROBLEMS:
        desc = f"mb{mb}ic{c}ih{size}oc{c}oh{size}kh{k}ph{k // 2}"
        spec = parse(desc)
        gen = torch.Generator().manual_seed(0)
        x = torch.randn(mb, c, size, size, generator=gen)
        w = torch.randn(c, c, k, k, generator=gen)
        calls = {"torch": backends.get("torch").prepare(spec, w, None)} | versions(spec, w)
        with torch.no_grad():
            rounds = measure_rounds(
                {name: clock.sampler(lambda f=f, x=x: f(x)) for name, f in calls.items()},
                timing,
                baseline="torch",
                rng=random.Random(0),
            )
        print(f"{desc}: torch {rounds.timings['torch'].median_s * 1e3:.2f} ms", flush=True)
        for name, call in calls.items():
            if name != "torch":
                ratio = ratio_text(rounds.speedup(name))  # type: ignore[arg-type]
                print(f"  {name:28s} {ratio:24s} {call.algorithm}", flush=True)


if __name__ == "__main__":
    main()
