"""What a layer costs in a network, where another library ran just before it, against what it
costs alone, as the harness times it (warm, within its own turn).

In a network every layer follows another operator. On this machine a GEMM through MKL right
after one of oneDNN's convolutions runs several times slower than the same GEMM alone, while
oneDNN's own convolution after another is not slowed. So per-layer speed-ups of backends that
compute with torch.matmul (im2col, the Winograd and FFT products) overstate what they save in a
network of oneDNN layers; ``convbench model`` measures the network whole for that reason.

    python scripts/library_switch.py [--threads N] [--calls N]

Prints the median of ``--calls`` timed calls of each operator alone and right after a depthwise
3x3 convolution (MobileNetV2's ``features.3``: 1x1 24->144 on 56x56, minibatch 1).
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from convbench import backends
from convbench.spec import parse


def _median_us(fn: Callable[[], object], before: Callable[[], object] | None, calls: int) -> float:
    times = []
    for _ in range(calls):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    gen = torch.Generator().manual_seed(0)
    spec = parse("--dir=FWD_D mb1ic24ih56oc144kh1ph0")
    w, x = torch.randn(144, 24, 1, 1, generator=gen), torch.randn(1, 24, 56, 56, generator=gen)
    dw_w, xd = torch.randn(144, 1, 3, 3, generator=gen), torch.randn(1, 144, 56, 56, generator=gen)
    im2col = backends.get("im2col").prepare(spec, w, None)
    ops = {
        "torch F.conv2d (oneDNN)": lambda: F.conv2d(x, w),
        "im2col backend": lambda: im2col(x),
        "torch.matmul (MKL)": lambda: torch.matmul(w.view(144, 24), x.view(24, -1)),
    }
    depthwise = lambda: F.conv2d(xd, dw_w, padding=1, groups=144)  # noqa: E731
    print(f"{args.threads} threads, median of {args.calls} calls (µs)")
    print(f"{'operator':<26} {'alone':>8} {'after a oneDNN depthwise conv':>30}")
    with torch.no_grad():
        for name, op in ops.items():
            _median_us(op, depthwise, args.calls)  # warm: oneDNN takes hundreds of calls
            alone = _median_us(op, None, args.calls)
            after = _median_us(op, depthwise, args.calls)
            print(f"{name:<26} {alone:>8.0f} {after:>30.0f}")


if __name__ == "__main__":
    main()
