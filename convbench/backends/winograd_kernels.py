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
[p0, p1), so a caller can block the work as the torch path does. Each job (a run of tiles)
allocates its scratch tile and a row of sums, and each row of ``v`` or pixel of ``y`` is summed
there and written once: the compiler then knows that they alias nothing it reads (in scratch
passed in by the caller, and summed in place in ``v`` and ``y``, the same loops read and
wrote memory at every term). The results are bit for bit the same. On a Zen 5 (2 threads, 15
alternating rounds of 20 calls, medians), blocks of tiles as ``prepare`` makes them: F(4) on
64 channels at 56², 400 tiles, input 0.375 → 0.299 ms, output 0.242 → 0.183; 128 channels at
28², 392 tiles, 0.749 → 0.513 and 0.513 → 0.317; F(6) on 64 channels, 800 tiles, 1.91 → 1.30
and 1.83 → 0.93; F(2) on 256 channels at 14², 0.381 → 0.229 and 0.185 → 0.175; F(4) on 384
channels at 14², 128 tiles, 0.516 → 0.467 and 0.349 → 0.314.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from convbench.backends.numba_pool import JIT, use_threads

__all__ = ["input_transform", "output_transform", "use_threads"]


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
    tiles_first: bool,
) -> None:
    """v[a·nw + b, p − p0, :] = Σ_ij Bᵀ_h[a, i]·Bᵀ_w[b, j]·xp[image, row + i, col + j, :] for
    the tiles p in [p0, p1) of the zero-padded channels-last input ``xp``; with
    ``tiles_first``, into v[p − p0, a·nw + b, :] (each tile's n² rows side by side)."""
    nh, nw, c = bt_h.shape[0], bt_w.shape[0], xp.shape[3]
    runs = min(p1 - p0, 64)
    for run in prange(runs):
        t = np.empty((nh, nw, c), dtype=xp.dtype)
        acc = np.empty(c, dtype=xp.dtype)
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
                    for k in range(c):
                        acc[k] = 0
                    for j in range(nw):
                        f = bt_w[b, j]
                        if f != 0:
                            for k in range(c):
                                acc[k] += f * t[a, j, k]
                    dst = v[p - p0, a * nw + b] if tiles_first else v[a * nw + b, p - p0]
                    for k in range(c):
                        dst[k] = acc[k]


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
    tiles_first: bool,
) -> None:
    """y[image, row + a, col + b, :] = Σ_ij Aᵀ_h[a, i]·Aᵀ_w[b, j]·mm[i·nw + j, p − p0, :]
    (+ ``bias``, where it has an entry per channel) for the tiles p in [p0, p1) of the
    channels-last output ``y``, whole tiles (th·m × tw·m); with ``tiles_first``, from
    mm[p − p0, i·nw + j, :]."""
    m, nh, nw, k_ = at_h.shape[0], at_h.shape[1], at_w.shape[1], y.shape[3]
    with_bias = bias.shape[0] == k_
    runs = min(p1 - p0, 64)
    for run in prange(runs):
        s = np.empty((nh, m, k_), dtype=y.dtype)
        acc = np.empty(k_, dtype=y.dtype)
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
                            src = mm[p - p0, i * nw + j] if tiles_first else mm[i * nw + j, p - p0]
                            for k in range(k_):
                                s[i, b, k] += f * src[k]
            for a in range(m):
                for b in range(m):
                    for k in range(k_):
                        acc[k] = bias[k] if with_bias else 0
                    for i in range(nh):
                        f = at_h[a, i]
                        if f != 0:
                            for k in range(k_):
                                acc[k] += f * s[i, b, k]
                    dst = y[img, y0 + a, x0 + b]
                    for k in range(k_):
                        dst[k] = acc[k]
