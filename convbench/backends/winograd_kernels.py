"""Winograd's input and output transforms as fused CPU loops, compiled by Numba.

Done with torch operators, once the input is padded into channels-last, the input transform
takes two passes over memory: a copy gathering the overlapping n×n tiles, and one GEMM by
Bᵀ⊗Bᵀ (n⁴ multiply-adds a tile and channel, most of them by zeros); the output transform
takes a GEMM by Aᵀ⊗Aᵀ and a copy scattering the tiles. These kernels read each tile where it
lies in the padded input and apply the transforms one dimension at a time, skipping zeros:
for F(4, 3), 2·6·6·(nonzeros of a row of Bᵀ) ≈ 310 multiply-adds per tile and channel
instead of 1296, written once. The channels are the innermost, contiguous loop, which the
compiler vectorises. On the 64-channel 56×56 layer at minibatch 8 (F(4, 3), 2 threads) the
input transform took 1.2 ms against 2.4 ms with torch's operators, the output transform 0.8
against 0.9 ms, and the whole convolution 7.7 against 10.0 ms.

Tiles are numbered p = (image·th + tile row)·tw + tile column; a call covers the tiles
[p0, p1), so a caller can block the work as the torch path does. Each thread takes a run of
tiles and a scratch tile of its own, which the caller allocates once (``scratch``): a kernel
that allocates nothing does the same work at every call, instruction for instruction, as
counting instructions needs.
"""

from __future__ import annotations

from collections.abc import Callable

import numba
import numpy as np
from numba import njit, prange

from convbench.backends.numba_pool import JIT, POOL, use_threads

__all__ = [
    "POOL",
    "input_transform",
    "input_transform_by_tile",
    "output_transform",
    "output_transform_by_tile",
    "use_threads",
]


def _kernels(tiles_first: bool) -> tuple[Callable[..., None], Callable[..., None]]:
    """The input and output transforms for one layout of the transformed tiles ``v`` and of
    the products ``mm``: (n², tiles, channels), or with ``tiles_first`` (tiles, n², channels),
    as the grouped products take and return them. The layout is a constant of each compiled
    pair, so the index arithmetic folds away: a flag tested in the loops counted 3-9 % more
    instructions on the smoke cases (callgrind), and the tile-major layout read through
    strided views made F(4) on 64 channels at 56² 0.63× torch where the same products gave
    1.48× with a kernel of its own."""

    @njit(**JIT)
    def input_transform(
        xp: np.ndarray,
        bt_h: np.ndarray,
        bt_w: np.ndarray,
        m: int,
        th: int,
        tw: int,
        p0: int,
        p1: int,
        v: np.ndarray,
        scratch: np.ndarray,
    ) -> None:
        """v[a·nw + b, p − p0, :] = Σ_ij Bᵀ_h[a, i]·Bᵀ_w[b, j]·xp[image, row + i, col + j, :] for
        the tiles p in [p0, p1) of the zero-padded channels-last input ``xp``; ``scratch`` holds a
        (nh, nw, C) tile per thread of Numba's pool."""
        nh, nw, c = bt_h.shape[0], bt_w.shape[0], xp.shape[3]
        runs = min(p1 - p0, 64)
        for run in prange(runs):
            t = scratch[numba.get_thread_id()]
            for p in range(p0 + (p1 - p0) * run // runs, p0 + (p1 - p0) * (run + 1) // runs):
                img, q = p // (th * tw), p % (th * tw)
                y0, x0 = (q // tw) * m, (q % tw) * m
                for a in range(nh):
                    for j in range(nw):
                        for k in range(c):
                            t[a, j, k] = 0
                    for i in range(nh):
                        f = bt_h[a, i]
                        if f != 0:
                            for j in range(nw):
                                for k in range(c):
                                    t[a, j, k] += f * xp[img, y0 + i, x0 + j, k]
                for a in range(nh):
                    for b in range(nw):
                        row = a * nw + b
                        i0, i1 = (p - p0, row) if tiles_first else (row, p - p0)
                        for k in range(c):
                            v[i0, i1, k] = 0
                        for j in range(nw):
                            f = bt_w[b, j]
                            if f != 0:
                                for k in range(c):
                                    v[i0, i1, k] += f * t[a, j, k]

    @njit(**JIT)
    def output_transform(
        mm: np.ndarray,
        at_h: np.ndarray,
        at_w: np.ndarray,
        th: int,
        tw: int,
        p0: int,
        p1: int,
        bias: np.ndarray,
        y: np.ndarray,
        scratch: np.ndarray,
    ) -> None:
        """y[image, row + a, col + b, :] = Σ_ij Aᵀ_h[a, i]·Aᵀ_w[b, j]·mm[i·nw + j, p − p0, :]
        (+ ``bias``, where it has an entry per channel) for the tiles p in [p0, p1) of the
        channels-last output ``y``, whole tiles (th·m × tw·m); ``scratch`` holds an (nh, m, K) tile
        per thread of Numba's pool."""
        m, nh, nw, k_ = at_h.shape[0], at_h.shape[1], at_w.shape[1], y.shape[3]
        with_bias = bias.shape[0] == k_
        runs = min(p1 - p0, 64)
        for run in prange(runs):
            s = scratch[numba.get_thread_id()]
            for p in range(p0 + (p1 - p0) * run // runs, p0 + (p1 - p0) * (run + 1) // runs):
                img, q = p // (th * tw), p % (th * tw)
                y0, x0 = (q // tw) * m, (q % tw) * m
                for i in range(nh):
                    for b in range(m):
                        for k in range(k_):
                            s[i, b, k] = 0
                        for j in range(nw):
                            f = at_w[b, j]
                            if f != 0:
                                row = i * nw + j
                                i0, i1 = (p - p0, row) if tiles_first else (row, p - p0)
                                for k in range(k_):
                                    s[i, b, k] += f * mm[i0, i1, k]
                for a in range(m):
                    for b in range(m):
                        for k in range(k_):
                            y[img, y0 + a, x0 + b, k] = bias[k] if with_bias else 0
                        for i in range(nh):
                            f = at_h[a, i]
                            if f != 0:
                                for k in range(k_):
                                    y[img, y0 + a, x0 + b, k] += f * s[i, b, k]

    return input_transform, output_transform


input_transform, output_transform = _kernels(tiles_first=False)
input_transform_by_tile, output_transform_by_tile = _kernels(tiles_first=True)
