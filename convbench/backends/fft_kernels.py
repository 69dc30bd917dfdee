"""The FFT backends' per-frequency channel sums as one fused CPU loop, compiled by Numba:
Y[n, k, t, f] = Σ_c X[n, c, t, f] · W[k, c, f] over every image n, tile t and frequency f.

With a handful of channels the sums are no GEMM worth the name (8×8 channels at each of ten
thousand frequencies), and done with torch's operators (one ``addcmul`` a channel over all
frequencies at once) each of the C passes reads and writes the whole output spectrum. This
kernel reads each input and weight spectrum once and keeps the sums in a block of its own: the
frequencies go in runs of LANES, each (image, tile) run of the C channels is first split into
real and imaginary parts in a scratch of its own (or taken apart from the spectra of channel
pairs, :func:`_split_pairs`), and four output channels are summed at once, their weights laid
out run by run (:func:`weight_layout`) so that the loop reads them in order. Measured on 2
threads against the ``addcmul`` form with runs of 16 (LANES says what 64 gained), the two in 60
alternating rounds (median of the per-round ratios [95 % interval]): 0.26 against 0.40 ms, 1.53×
[1.34, 1.59], for 8×8 channels on one 140×140 tile; 0.67 against 1.47 ms, 2.17× [1.96, 2.38],
for 16×16; 2.0 against 6.7 ms, 3.25× [3.05, 3.48], for 32×32 at minibatch 4 on 72×72 tiles.
With one tile the sums read each number of the weight spectrum once a call: 20 MB for 16×16
channels at 31 GB/s; on another day 22, 30 and 28 GB/s for 8 → 16, 32 and 64 channels on one
140×140 tile. That is not the speed the weights stream at: read in the same jobs by a
vectorized sum, the 10.2 and 20.4 MB of one tile of 8 → 16 and 8 → 32 channels took 184 and
381 µs (55 GB/s, as torch's own sum of them), the kernel 372–412 and 684–692 µs, the kernel
without the stores of its whole spectra 266–280 and 492–497 µs, and with software prefetches
of its weights 2 to 32 KB ahead (LLVM's ``prefetch``) no less (three runs of 300 calls, 2
threads): the loop's own instructions take the rest, its stores over a quarter. With
several tiles, where a job reads its run of the weights (at most 260 KB here) from the core's
cache again for each tile (8 → 16 and 8 → 64 channels in five 36×140, nine 72×72 or ten
36×72 tiles), each complex multiply-add of a tile, frequency and
channel pair costs 0.19–0.37 ns (four real multiply-adds: 7–13 % of the 318 GFLOP/s the GEMM
peak read that day): the accumulators go through memory at every channel. A loop that kept
them in registers would make small tiles pay for few channels; written in Numba (blocks of 8
or 16 lanes over the channel loop) it ran 4× slower.

Where the weights' stream was timed above, the loop, not the stream, was the bound. On a
2-core AMD EPYC VM (L2 1 MB a core, 32 MB of L3), where the weight spectrum outgrows L2, the
loop's speed also moves with the L3 and the memory, which a process on a shared host does not
have to itself: in one process, 40 blocks of 100 calls on one 140×140 tile, each block's
median, took 41–52 µs for 2 → 4 channels (0.6 MB of weights), 194–342 µs for 8 → 16 (10.2
MB), flipping between the two ends from one block to the next, and 462–1178 µs for 8 → 32
(20.4 MB), while a 512³ GEMM timed between the blocks stayed within 1312–1666 µs (three runs),
out of step with them. The kernel of a few-channel layer thus runs up to 1.8× apart from one
fraction of a second to the next, and ``prepare`` may take the whole-image tile in one process
and five 36×140 tiles (whose weights are a quarter as large, read again for each tile) in the
next.

The pairs' whole spectra are written row by row of a run, the mirrored half backwards: written
frequency by frequency, with the row arithmetic and the test for the mirror in every store, the
stores took about a third of the kernel, the kernel ran 1.01–1.16× slower alone, and
fft-torch's whole call 1.01–1.09× slower (one image of 8 or 16 channels at 128², and
(4, 32, 64²) with a 7×7 kernel; the two loops compiled alike and paired in alternating rounds).

The accumulators are allocated in each job: the compiler then knows that they alias nothing
(in a scratch row shared with the loads, the same loop ran four times slower). Each job is a
group and a run of frequencies, so a thread reads its runs of the weights once for all images
and tiles: it splits the runs of several images and tiles first (up to RUNS_BYTES of them) and
then sums them block of outputs by block, so that a block's weights (C/g·OUTPUTS·LANES complex
numbers, 64 KB for 32 channels) come from the core's nearest cache for all of them, where one
image and tile at a time read the whole run of the weights (C/g·K/g·LANES) again for each.
Against one at a time, the kernel alone on a Zen 3 (2 threads, 15 alternating rounds, median
ratio): 1.08× and 1.18× (two runs) on four images of 32 → 32 channels in one 70×70 tile, 1.43×
unpaired; 1.12× on sixteen of 8 → 8 in nine 54×54 tiles and on four of 16 → 16 in four 72×72;
1.28× on one of 64 → 64 in four 72×72.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import njit, prange

from convbench.backends.numba_pool import JIT, POOL, use_threads

__all__ = ["LANES", "POOL", "channel_sums", "chunk", "unpair", "use_threads", "weight_layout"]

LANES = 64
"""Frequencies a run. The loop over a run's lanes is what the compiler vectorizes, and what each
run costs besides it (splitting the inputs into the scratch, the loops over output blocks and
channels) is paid once per run: the kernel alone ran 1.17–1.67× faster with runs of 64 than of
16 (one register of float32), and 1.06–1.34× faster than with 32 (8 → 16 channels on one
140×140 tile or four 70×72, 16 → 16 on four 70×72, 8 → 8 on nine 54×54, 32 → 32 on sixteen
72×72, 3 → 5 on two 12×12; 200 alternating rounds); runs of 128 gained little more and lost
on 32 → 32 channels (1.01× of 16's)."""
OUTPUTS = 4
"""Output channels summed at once: eight accumulators of LANES."""


RUNS_BYTES = 256 << 10
"""Bytes of the input runs (C/g channels of LANES frequencies, real and imaginary parts) split
for several images and tiles at once: half a Zen 3 core's L2. On four images of 32 → 32
channels with a 7×7 kernel at 64² (one run, 7 paired rounds), fft-torch's whole call ran 1.22×
torch with one run at a time, 1.25× with 64 KB and 1.31× with 256 KB (one 70×70 tile), 1.12×,
1.20× and 1.24× in three 28×70 tiles."""


def chunk(channels: int, itemsize: int, items: int) -> int:
    """How many (image, tile) runs :func:`channel_sums` splits at once, at most ``items``."""
    return max(1, min(items, RUNS_BYTES // (channels * 2 * LANES * itemsize)))


def weight_layout(wf: torch.Tensor, groups: int) -> np.ndarray:
    """The conjugated weight spectrum ``wf`` (K, C/g, frequencies...), complex, as the kernel
    reads it: (group, run of LANES frequencies, block of OUTPUTS output channels, input
    channel, output channel of the block, real or imaginary part, frequency of the run), real.
    The frequencies and output channels past the end are zero, so the lanes of a last, partial
    run sum to nothing that is written, whatever the scratch holds there, and an odd last
    output channel's partner in a pair sums to zero."""
    k, cg = wf.shape[:2]
    wf = wf.reshape(k, cg, -1)
    nf = wf.shape[2]
    kg = k // groups
    kp, nch = -(-kg // OUTPUTS) * OUTPUTS, -(-nf // LANES)
    out = wf.real.new_zeros(groups, kp, cg, nch * LANES, 2)
    out[:, :kg, :, :nf] = torch.view_as_real(wf).reshape(groups, kg, cg, nf, 2)
    runs = out.view(groups, kp // OUTPUTS, OUTPUTS, cg, nch, LANES, 2)
    return runs.permute(0, 4, 1, 3, 2, 6, 5).contiguous().numpy()


@njit(**(JIT | {"parallel": False}), inline="always")
def _split_one(xs: np.ndarray, c0: int, j: int, zr: float, zi: float, mr: float, mi: float) -> None:
    """Lane j of channels c0 and c0 + 1 from Z = (zr, zi) and its mirror (mr, mi)."""
    xs[c0, 0, j] = 0.5 * (zr + mr)
    xs[c0, 1, j] = 0.5 * (zi - mi)
    if c0 + 1 < xs.shape[0]:
        xs[c0 + 1, 0, j] = 0.5 * (zi + mi)
        xs[c0 + 1, 1, j] = 0.5 * (mr - zr)


@njit(**(JIT | {"parallel": False}))  # called by each job of channel_sums's parallel loop
def _split_pairs(
    x: np.ndarray, xs: np.ndarray, ni: int, ti: int, f0: int, m: int, rows: int, width: int
) -> None:
    """Into ``xs`` (C, 2, LANES): the half-spectrum frequencies f0 … f0 + m − 1 of every input
    channel of image ``ni``, tile ``ti``, from the whole spectra of channel pairs in ``x``,
    Z = X₂ₚ + i·X₂ₚ₊₁ (rows × width): X₂ₚ[u, v] = (Z[u, v] + conj Z[−u, −v]) / 2 and
    X₂ₚ₊₁[u, v] = (Z[u, v] − conj Z[−u, −v]) / 2i."""
    half = width // 2 + 1
    for pi in range(x.shape[1]):
        src, c0 = x[ni, pi, ti], 2 * pi
        j = 0
        while j < m:
            u, v0 = (f0 + j) // half, (f0 + j) % half
            length = min(m - j, half - v0)
            at, mirror = 2 * (u * width + v0), 2 * ((rows - u) % rows) * width
            if v0 == 0:  # column 0 mirrors to column 0, the others to width − v
                zr, zi, mr, mi = src[at], src[at + 1], src[mirror], src[mirror + 1]
                _split_one(xs, c0, j, zr, zi, mr, mi)
                at, j, v0, length = at + 2, j + 1, 1, length - 1
            back = mirror + 2 * (width - v0)
            for i in range(length):
                zr, zi = src[at + 2 * i], src[at + 2 * i + 1]
                mr, mi = src[back - 2 * i], src[back - 2 * i + 1]
                _split_one(xs, c0, j + i, zr, zi, mr, mi)
            j += length


@njit(**JIT)
def channel_sums(
    x: np.ndarray, w: np.ndarray, y: np.ndarray, scratch: np.ndarray, width: int
) -> None:
    """Y[n, g·K/g + k, t, f] = Σ_c x[n, g·C/g + c, t, f] · w[g, k, c, f] for complex spectra
    stored as real pairs: ``x`` (N, C, T, 2F), ``w`` as :func:`weight_layout` makes it;
    ``scratch`` holds a (C/g, 2, LANES) run of one image and tile per thread of Numba's pool.

    With ``width`` 0, ``y`` (N, K, T, 2F) receives the half spectra Y. Otherwise (one group
    only) the F frequencies are rows × (width/2 + 1) of real FFTs ``width`` wide; ``x`` (N,
    ⌈C/2⌉, T, 2·rows·width) holds for each pair of input channels the whole spectrum of
    x₂ₚ + i·x₂ₚ₊₁ (:func:`_split_pairs` takes the two apart: torch's complex FFT of the pairs
    ran 2.4–3.4× faster than its real FFT of the channels, on eight channels of 140×140, or
    four tiles of 70×72, and sixteen of nine 54×54), and ``y``
    (N, ⌈K/2⌉, T, 2·rows·width) receives for each pair of output channels the whole spectrum
    Z = Y₂ₚ + i·Y₂ₚ₊₁, its missing half from Hermitian symmetry (Z[−u, −v] = conj(Y₂ₚ − i·Y₂ₚ₊₁)
    [u, v]): one complex inverse FFT of Z gives channel 2p as its real part and 2p + 1 as its
    imaginary part, and a complex FFT runs 2 to 3 times faster than the real inverse FFT of its
    two channels (0.16 against 0.44 ms for sixteen channels of 140×140, 2 threads)."""
    n, t = x.shape[0], x.shape[2]
    g, nch, kblocks, cg = w.shape[0], w.shape[1], w.shape[2], w.shape[3]
    kg = y.shape[1] // g
    half = width // 2 + 1
    rows = x.shape[3] // (2 * width) if width else 0
    f = rows * half if width else x.shape[3] // 2
    items, chunk = n * t, scratch.shape[1]
    for job in prange(g * nch):
        gi, run = job // nch, job % nch
        f0 = run * LANES
        m = min(LANES, f - f0)
        runs = scratch[numba.get_thread_id()]
        acc = np.empty((OUTPUTS, 2, LANES), dtype=x.dtype)
        for first in range(0, items, chunk):
            count = min(chunk, items - first)
            for s in range(count):
                ni, ti = (first + s) // t, (first + s) % t
                xs = runs[s]
                if width:
                    _split_pairs(x, xs, ni, ti, f0, m, rows, width)
                else:
                    for ci in range(cg):
                        src = x[ni, gi * cg + ci, ti]
                        for j in range(m):
                            xs[ci, 0, j] = src[2 * (f0 + j)]
                            xs[ci, 1, j] = src[2 * (f0 + j) + 1]
            for kb in range(kblocks):
                wb = w[gi, run, kb]
                for s in range(count):
                    ni, ti = (first + s) // t, (first + s) % t
                    xs = runs[s]
                    a0r, a0i, a1r, a1i = acc[0, 0], acc[0, 1], acc[1, 0], acc[1, 1]
                    a2r, a2i, a3r, a3i = acc[2, 0], acc[2, 1], acc[3, 0], acc[3, 1]
                    for j in range(LANES):
                        a0r[j] = 0
                        a0i[j] = 0
                        a1r[j] = 0
                        a1i[j] = 0
                        a2r[j] = 0
                        a2i[j] = 0
                        a3r[j] = 0
                        a3i[j] = 0
                    for ci in range(cg):
                        xr, xi, wc = xs[ci, 0], xs[ci, 1], wb[ci]
                        w0r, w0i, w1r, w1i = wc[0, 0], wc[0, 1], wc[1, 0], wc[1, 1]
                        w2r, w2i, w3r, w3i = wc[2, 0], wc[2, 1], wc[3, 0], wc[3, 1]
                        for j in range(LANES):
                            p, q = xr[j], xi[j]
                            a0r[j] = a0r[j] + p * w0r[j] - q * w0i[j]
                            a0i[j] = a0i[j] + p * w0i[j] + q * w0r[j]
                            a1r[j] = a1r[j] + p * w1r[j] - q * w1i[j]
                            a1i[j] = a1i[j] + p * w1i[j] + q * w1r[j]
                            a2r[j] = a2r[j] + p * w2r[j] - q * w2i[j]
                            a2i[j] = a2i[j] + p * w2i[j] + q * w2r[j]
                            a3r[j] = a3r[j] + p * w3r[j] - q * w3i[j]
                            a3i[j] = a3i[j] + p * w3i[j] + q * w3r[j]
                    if width == 0:
                        for b in range(min(OUTPUTS, kg - kb * OUTPUTS)):
                            dst = y[ni, gi * kg + kb * OUTPUTS + b, ti]
                            for j in range(m):
                                dst[2 * (f0 + j)] = acc[b, 0, j]
                                dst[2 * (f0 + j) + 1] = acc[b, 1, j]
                        continue
                    for q in range(min(OUTPUTS // 2, y.shape[1] - kb * (OUTPUTS // 2))):
                        dst = y[ni, kb * (OUTPUTS // 2) + q, ti]
                        ar, ai, br, bi = (
                            acc[2 * q, 0],
                            acc[2 * q, 1],
                            acc[2 * q + 1, 0],
                            acc[2 * q + 1, 1],
                        )
                        # Row by row of the run: Z[u, v] forwards, the mirror at (−u, −v)
                        # backwards. Unsigned indices: Numba tests a signed index for
                        # wrapping around at every store, and with signed ones this loop
                        # ran 0.99–1.06× the per-frequency one instead of 1.01–1.16×.
                        j = 0
                        while j < m:
                            u, v0 = (f0 + j) // half, (f0 + j) % half
                            length = min(m - j, half - v0)
                            at, lanes = np.uint64(2 * (u * width + v0)), np.uint64(j)
                            for i in range(np.uint64(length)):
                                o, jj = at + np.uint64(2) * i, lanes + i
                                dst[o] = ar[jj] - bi[jj]
                                dst[o + np.uint64(1)] = ai[jj] + br[jj]
                            lo, hi = max(1, v0), min(v0 + length, width - half + 1)
                            if lo < hi:
                                at = np.uint64(2 * (((rows - u) % rows) * width + width - lo))
                                lanes = np.uint64(j + lo - v0)
                                for i in range(np.uint64(hi - lo)):
                                    o, jj = at - np.uint64(2) * i, lanes + i
                                    dst[o] = ar[jj] + bi[jj]
                                    dst[o + np.uint64(1)] = br[jj] - ai[jj]
                            j += length


@njit(**JIT)
def unpair(
    z: np.ndarray, y: np.ndarray, bias: np.ndarray, image: int, top: int, sh: int, sw: int
) -> None:
    """y[image + n, 2p + r, top + i·sh + a, j·sw + b] = z[n, p, i, j, a, b, r] + bias[2p + r]
    for a < sh, b < sw: the first sh×sw outputs of each tile (i, j) of the paired inverse
    transforms ``z`` (N, P, tile rows, tile columns, Th, Tw, 2), real part to channel 2p,
    imaginary part to 2p + 1, into the C-contiguous output ``y`` (N, 2P, H, W) at rows from
    ``top``. torch's strided copy of the same (stride-2 reads, the bias broadcast into them)
    took 158 µs where this loop takes 106 for sixteen channels of 120×120 in four 70×72 tiles,
    386 against 256 µs for 32 channels in nine 54×54 (2 threads, median of 300 calls each)."""
    bn, pairs, br, nw = z.shape[0], z.shape[1], z.shape[2], z.shape[3]
    for job in prange(bn * pairs * br):
        ni, rest = job // (pairs * br), job % (pairs * br)
        p, i = rest // br, rest % br
        b0, b1 = bias[2 * p], bias[2 * p + 1]
        for a in range(sh):
            out0 = y[image + ni, 2 * p, top + i * sh + a]
            out1 = y[image + ni, 2 * p + 1, top + i * sh + a]
            for j in range(nw):
                src = z[ni, p, i, j, a]
                at = j * sw
                for b in range(sw):
                    out0[at + b] = src[b, 0] + b0
                    out1[at + b] = src[b, 1] + b1
