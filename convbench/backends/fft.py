"""FFT convolution: correlation as a product of spectra, with ``torch.fft`` or ``scipy.fft``,
over tiles of the image sized to the kernel (overlap-save).

For the plain "valid" problem (after :func:`pad_input`) of an input Hp×Wp and a dilated kernel
Eh×Ew, the circular correlation of a T×T tile with the kernel agrees with the linear one at its
first S = T − E + 1 outputs in each direction (no index wraps there). So the image is cut into
tiles T×T that start every S pixels; each tile's spectrum is multiplied by the kernel's and
transformed back, and its first S×S outputs are kept. One tile as large as the image is the
textbook method; small tiles bound the weight spectrum (K·C·T·(T/2+1) complex numbers) and turn
the per-frequency channel sums into GEMMs of many rows, Y[f][tile, k] = Σ_c X[f][tile, c] ·
conj(W[f][k, c]): [N·tiles × C]·[C × K] for each of the T·(T/2+1) frequencies (NNPACK's tiled
FFT does the same with 8×8 and 16×16 tiles).

The tile is chosen per problem: a cost model in seconds ranks every fast FFT size (even, of the
factors 2, 3, 5 and 7: FAST_SIZES) from the smallest that holds the kernel up to the whole padded
image (:func:`plan`), and ``prepare`` times the two it ranks first whose tile areas differ by 2×
or more, and the whole image, and keeps the fastest (the model misjudges the copies, whose cost
depends on the caches):

    t = (C + K)·N·tiles · (T²·log2(T²) / FFT_RATE + FFT_OVERHEAD)  forward and inverse FFTs
      + 8·N·tiles·T·(T/2 + 1)·C·K/g / gemm_rate(rows, C/g, K/g)  per-frequency channel sums
      + 2·(C + K)·N·tiles·T·(T/2 + 1)·8 bytes / BANDWIDTH       reordering the spectra
      + K·C/g·T·(T/2 + 1)·8 bytes / BANDWIDTH                    reading the weight spectrum

where gemm_rate falls off for short products (few rows or few channels: the fixed cost of a
small GEMM), as GEMM_OVERHEAD says. With few channels the sums are also tried as C/g
multiply-accumulates over all frequencies and tiles at once (no per-product cost, no reordering
of the spectra), on the CPU in one fused loop that reads each spectrum once (``fft_kernels``;
without groups its channels go in pairs, one complex FFT for two, in and out):
the form that wins for a single image of 8 or 16 channels, where it reads the weight spectrum
once a call and the per-frequency GEMMs would have one row. A small image with a
large kernel keeps one tile (the overlap S/T would waste most of the work); many channels favour
tiles just large enough that the weight spectrum stays in cache; few channels, whose FFTs
dominate, favour mid-sized tiles.

Not among the candidates: FFTs along the rows only, the correlation down the columns then one
complex GEMM per frequency, [K × C·R]·[C·R × N·OH] over the row spectra unfolded R times (R
times the multiply-adds of one whole-image tile, but in large GEMMs, with 1-D FFTs and a
weight spectrum R/T of its size). Built and timed by ``prepare`` beside the tilings (its
``tuned_ms``, one ``prepare`` a problem), it lost on every problem tried, 2 threads, against the
best of them: on one 128² image with 11×11, fft-torch 1.46 against 0.99 ms
(8 → 16 channels), 2.41 against 1.71 (8 → 32), 3.17 against 1.40 (16 → 16), 0.98 against 0.70
(8 → 8); on (4, 32, 64²) with 7×7 4.70 against 2.83, with 9×9 5.72 against 3.03; fft-scipy,
whose FFTs it shortens, 1.89 against 1.85 (8 → 16), 1.46 against 1.39 (8 → 8), 4.35 against
3.16 (8 → 32), 6.12 against 4.98 ms (7×7).

The tiles go through in blocks of about BLOCK_BYTES of spectra (or twice the weight spectrum,
which every block reads), so that the passes over a block's spectra stay in cache. Strides
subsample the stride-1 result, so FFT pays full price for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft
import torch

from convbench.backends.base import (
    FLOAT_TOLERANCE,
    Block,
    Prepared,
    device_reason,
    dtype_reason,
    fastest,
    pad_into,
    padded_part,
    stage,
    tile_blocks,
    tuning_input,
    unit_roundoff,
)
from convbench.spec import ConvSpec

__all__ = ["FFTScipyBackend", "FFTTorchBackend", "Tiling", "plan", "whole"]

_UNITS = 56
"""CPU tolerance in units of the dtype's rounding, set as GEMM_UNITS says. The FFT's error grows
with the logarithm of its size, the per-frequency sum's with the channels: 13 units at most on
the network suites (transforms of 8×8 to 240×240, channel sums of up to 2048) and 37 on a fuzzed
problem of a few dozen outputs; ten times the worst on the measured network layers is 83."""

FFT_RATE = 1e10
"""T²·log2 T² per second of one real T×T FFT (forward or inverse), one thread: torch.fft does
about this for T = 64 to 288 (0.2 ns per point and log2 for the pair), a little less below."""
FFT_OVERHEAD = 5e-7
"""Seconds each transform of one tile costs beyond that: small tiles run at half the rate."""
GEMM_RATE = 60e9
"""Complex-GEMM flops (8 per multiply-accumulate) per second, one thread, on large products."""
GEMM_OVERHEAD = 2e-7
"""Seconds each per-frequency product costs beyond its arithmetic: thousands of small GEMMs run
at a fraction of the rate."""
BANDWIDTH = 8e9
"""Bytes per second of a reordering copy, one thread."""


def _dilated_extent(spec: ConvSpec) -> tuple[int, int]:
    return (spec.kh - 1) * spec.dh + 1, (spec.kw - 1) * spec.dw + 1


def _dilated(spec: ConvSpec, weight: torch.Tensor) -> torch.Tensor:
    """The kernel with dilation made explicit: (dh−1) zero rows between taps, likewise columns."""
    if spec.dh == spec.dw == 1:
        return weight
    out = weight.new_zeros(*weight.shape[:2], *_dilated_extent(spec))
    out[:, :, :: spec.dh, :: spec.dw] = weight
    return out


@dataclass(frozen=True)
class Tiling:
    """Tiles of T×T (``size``) every S pixels (``step``), ``tiles`` of them in each direction,
    over a zero-extended input of ``extent``."""

    size: tuple[int, int]
    step: tuple[int, int]
    tiles: tuple[int, int]
    extent: tuple[int, int]

    @property
    def frequencies(self) -> int:
        return self.size[0] * (self.size[1] // 2 + 1)


def _tiling(spec: ConvSpec, th: int, tw: int) -> Tiling:
    eh, ew = _dilated_extent(spec)
    hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
    sh, sw = th - eh + 1, tw - ew + 1
    nh, nw = math.ceil((hp - eh + 1) / sh), math.ceil((wp - ew + 1) / sw)
    return Tiling((th, tw), (sh, sw), (nh, nw), ((nh - 1) * sh + th, (nw - 1) * sw + tw))


FAST_SIZES = sorted(
    n
    for n in (
        2**a * 3**b * 5**c * 7**d
        for a in range(1, 14)
        for b in range(9)
        for c in range(6)
        for d in range(5)
    )
    if n <= 1 << 13
)
"""Even sizes of the factors 2, 3, 5 and 7, where torch.fft (MKL) runs at 0.06–0.09 ns per point
and log2 forward from 96 up (0.11–0.16 inverse): 216 = 2³·3³ as fast as 192, 200 and 240 within
25 % of it. Odd sizes run at half that rate (135, 175, 189, 225: 0.11–0.13), so they are left
out; so is every size with a larger prime (204 = 2²·3·17: 0.15). Before the 5s, 7s and 3³ were
timed so, only 2^a·3^b (b ≤ 2) was taken, and a 192² image padded to 202 got a 256² tile, 40 %
more points than the 216² one."""


def _sizes(extent: int, padded: int) -> list[int]:
    """The FAST_SIZES from the smallest whose step is at least half the kernel's extent up to
    the first that holds the whole padded input."""
    fast = FAST_SIZES
    low = extent + max(1, extent // 2)
    top = next(t for t in fast if t >= max(padded, low))
    return [t for t in fast if low <= t <= top]


def cost(spec: ConvSpec, tiling: Tiling, threads: int = 1) -> float:
    """The model's seconds for one call with ``tiling`` (see the module's docstring)."""
    n, c, k, g = spec.mb, spec.ic, spec.oc, spec.g
    th, tw = tiling.size
    tiles = n * tiling.tiles[0] * tiling.tiles[1]
    nf = tiling.frequencies
    fft = (c + k) * tiles * (th * tw * math.log2(th * tw) / FFT_RATE + FFT_OVERHEAD)
    products = nf * g
    gemm = 8 * tiles * nf * c * k / g / GEMM_RATE + products * GEMM_OVERHEAD
    copies = 2 * (c + k) * tiles * nf * 8 / BANDWIDTH + k * (c // g) * nf * 8 / BANDWIDTH
    return (fft + gemm + copies) / threads


DISTINCT_AREA = 2.0
"""How much larger (or smaller) a candidate's tile must be than every cheaper candidate's. The
model's cost is within a few per cent across neighbouring sizes (42×54, 42×42, 54×42, 54×54 on a
16-channel 128² layer), so its next-best tilings tell timing nothing new, while a strip of twice
the area can win by 20 %: the model cannot rank those, timing can."""


def plan(spec: ConvSpec, count: int = 2) -> list[Tiling]:
    """The ``count`` tilings of least modelled cost for ``spec`` whose tile areas differ by
    DISTINCT_AREA or more, and the single tile over the whole image (the textbook method) if it
    is not among them: the candidates prepare times."""
    eh, ew = _dilated_extent(spec)
    hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
    hs, ws = _sizes(eh, hp), _sizes(ew, wp)
    candidates = [
        _tiling(spec, th, tw)
        for th in hs
        for tw in ws
        if abs(math.log2(th / tw)) <= 1 or th == hs[-1] or tw == ws[-1]
    ]
    ranked: list[Tiling] = []
    for t in sorted(candidates, key=lambda t: cost(spec, t)):
        area = t.size[0] * t.size[1]
        if all(
            max(area / a, a / area) >= DISTINCT_AREA
            for a in (r.size[0] * r.size[1] for r in ranked)
        ):
            ranked.append(t)
            if len(ranked) == count:
                break
    return ranked if whole(spec) in ranked else [*ranked, whole(spec)]


def whole(spec: ConvSpec) -> Tiling:
    """One tile over the whole padded image: the textbook method, and of all tilings the one
    with the largest FFT (its rounding error grows with the logarithm of the size)."""
    eh, ew = _dilated_extent(spec)
    hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
    return _tiling(spec, _sizes(eh, hp)[-1], _sizes(ew, wp)[-1])


MAC_CHANNELS = 1024
"""Problems of at most this many channel pairs per group ((C/g)·(K/g)) also try the channel sums
as multiply-accumulates (see ``_pipeline``); above it a GEMM per frequency always wins."""
BLOCK_BYTES = 8 << 20
"""Bytes of the spectra (input and output, before and after reordering) of one block of tiles:
the spectra of a whole large problem run to hundreds of megabytes, and each of the passes over
them would stream through memory; blocks of this size stay in the caches between steps."""


Transform = Callable[[torch.Tensor], torch.Tensor]
Transforms = tuple[torch.Tensor, Transform, Transform, Transform, Transform]


def _pipeline(
    spec: ConvSpec,
    tiling: Tiling,
    wf: torch.Tensor,
    bias: torch.Tensor | None,
    forward: Transform,
    inverse: Transform,
    forward_pairs: Transform,
    inverse_pairs: Transform,
    block_bytes: int | None = None,
    mac: bool = False,
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The timed call, given the conjugated weight spectrum ``wf`` and the transforms (as
    ``_FFTBase.transforms`` makes them). Tiles go through in blocks (whole tile rows of an
    image, or whole images) of about ``block_bytes`` of spectra (by default BLOCK_BYTES, or
    twice the weight spectrum where that is larger).

    The channel sums are a GEMM per frequency over the spectra reordered frequency-major, or,
    with ``mac``, multiply-accumulates over every frequency and tile at once in the spectra's
    own layout: no reordering and no per-product cost, which wins where a GEMM would have a
    handful of rows and channels. On the CPU those are one fused Numba loop
    (``fft_kernels``); elsewhere C/g ``addcmul`` passes of torch's. Without groups the loop
    writes each pair of output channels as one whole complex spectrum, so the inverse is a
    complex FFT of half as many channels (``inverse_pairs``), its real and imaginary parts the
    two outputs (an odd last channel is paired with a zero one, computed and dropped); and
    likewise the input channels go in pairs, as the real and imaginary parts of one complex
    FFT (``forward_pairs``), which the loop takes apart by the same symmetry."""
    n, c, k = spec.mb, spec.ic, spec.oc
    g, kg, cg = spec.g, k // spec.g, c // spec.g
    (th, tw), (sh, sw), (nh, nw) = tiling.size, tiling.step, tiling.tiles
    nf, half = tiling.frequencies, tw // 2 + 1
    if block_bytes is None:
        # Each block reads the whole weight spectrum: a block's spectra at least twice its
        # size keep that read from outweighing the traffic blocking saves.
        block_bytes = max(BLOCK_BYTES, 2 * wf.numel() * wf.element_size())
    blocks = tile_blocks(n, nh, nw, block_bytes // (2 * (c + k) * nf * wf.element_size()))
    most = max(b.tiles for b in blocks)
    fused = mac and wf.device.type == "cpu"
    paired = fused and g == 1
    pairs = (k + 1) // 2
    if fused:
        # Imported here: Numba takes a second to import, which no other command should pay.
        from convbench.backends import fft_kernels as kernels

        wt = kernels.weight_layout(wf, g)
        chunk = kernels.chunk(cg, wt.dtype.itemsize, most)
        scratch = np.empty((kernels.POOL, chunk, cg, 2, kernels.LANES), dtype=wt.dtype)
    elif mac:
        # (1, G, K/g, C/g, 1, 1, F): channel c's weights, broadcast over images and tiles.
        wt = wf.reshape(1, g, kg, cg, 1, 1, nf).contiguous()
    else:
        # (frequency·group, C/g, K/g): the right operands of one GEMM per frequency.
        wt = wf.reshape(g, kg, cg, nf).permute(3, 0, 2, 1).reshape(nf * g, cg, kg).contiguous()
    # Workspaces kept from call to call for the padded input, whose zero border is the FFT's
    # zero padding, and for the channel sums. Not re-entrant.
    real = {"dtype": wf.real.dtype, "device": wf.device}
    cplx = {"dtype": wf.dtype, "device": wf.device}
    if paired:
        # Channel 2p + r of the padded input is part r of complex channel p (an odd last
        # channel's partner stays zero).
        xpad = torch.zeros(n, (c + 1) // 2, *tiling.extent, 2, **real)
        tiled = torch.view_as_complex(xpad)
    else:
        xpad = tiled = torch.zeros(n, c, *tiling.extent, **real)
    xt = torch.empty(0 if mac else most * c * nf, **cplx)
    yt = torch.empty(0 if paired else most * k * nf, **cplx)
    zt = torch.empty(most * pairs * th * tw if paired else 0, **cplx)
    rows_out = slice(0, (spec.oh - 1) * spec.sh + 1, spec.sh)
    cols_out = slice(0, (spec.ow - 1) * spec.sw + 1, spec.sw)
    bias6 = None if bias is None else bias.view(1, -1, 1, 1, 1, 1)
    if paired:
        # Channel 2p + r's bias; zero for the dropped odd channel, and for no bias at all.
        bias_pairs = torch.zeros(2 * pairs, **real)
        if bias is not None:
            bias_pairs[:k] = bias
        bias_pairs = bias_pairs.numpy()

    def block(y: torch.Tensor, blk: Block) -> None:
        bn, br, r = blk.images.stop - blk.images.start, blk.rows.stop - blk.rows.start, blk.tiles
        top = blk.rows.start * sh
        with stage("fft/forward"):
            src = tiled[blk.images, :, top : top + (br - 1) * sh + th]
            tiles = src.unfold(2, th, sh).unfold(3, tw, sw)  # (bn, C or C/2, br, nw, th, tw)
            # (bn, C, br, nw, th, half), or paired (bn, C/2, br, nw, th, tw)
            spectra = forward_pairs(tiles) if paired else forward(tiles)
        with stage("fft/pointwise"):
            if fused:
                kernels.use_threads(torch.get_num_threads())
                per = th * tw if paired else nf  # frequencies a channel and tile
                sums = zt[: r * pairs * per] if paired else yt[: r * k * per]
                kernels.channel_sums(
                    torch.view_as_real(spectra).reshape(bn, -1, br * nw, 2 * per).numpy(),
                    wt,
                    torch.view_as_real(sums).view(bn, -1, br * nw, 2 * per).numpy(),
                    scratch,
                    tw if paired else 0,
                )
                fb = sums.view(bn, -1, br, nw, th, tw if paired else half)
            elif mac:
                xs = spectra.view(bn, g, 1, cg, br, nw, nf)
                fb = yt[: r * k * nf].view(bn, g, kg, br, nw, nf)
                torch.mul(xs[:, :, :, 0], wt[:, :, :, 0], out=fb)
                for i in range(1, cg):
                    fb.addcmul_(xs[:, :, :, i], wt[:, :, :, i])
            else:
                xb = xt[: r * c * nf].view(nf, g, bn, br, nw, cg)
                xb.copy_(spectra.view(bn, g, cg, br, nw, nf).permute(5, 1, 0, 3, 4, 2))
                yb = yt[: r * k * nf].view(nf * g, r, kg)
                torch.bmm(xb.view(nf * g, r, cg), wt, out=yb)
                # Reordered back by strides: torch's and SciPy's inverse real FFTs copy their
                # input anyway (they work in it).
                fb = yb.view(nf, g, bn, br, nw, kg).permute(2, 1, 5, 3, 4, 0)
        # Each tile's first S×S outputs in place, the bias added on the way.
        with stage("fft/inverse"):
            if paired:
                res = torch.view_as_real(inverse_pairs(fb))  # (bn, P, br, nw, th, tw, 2)
                kernels.unpair(res.numpy(), y.numpy(), bias_pairs, blk.images.start, top, sh, sw)
                return
            # A view unless groups must be merged.
            res = inverse(fb.reshape(bn, k, br, nw, th, half))
            out = res[..., :sh, :sw].transpose(3, 4)
            dst = y[blk.images, :, top : top + br * sh].view(bn, k, br, sh, nw, sw)
            if bias6 is None:
                dst.copy_(out)
            else:
                torch.add(out, bias6, out=dst)

    def run(x: torch.Tensor) -> torch.Tensor:
        y = torch.empty(n, 2 * pairs if paired else k, nh * sh, nw * sw, **real)
        with stage("fft/forward"):
            if paired:
                # In one pass (two strided copies into the parts took 88 against 36 µs for
                # eight channels of 140×140).
                src, top, left = padded_part(spec, x)
                at = tiled[:, :, top : top + src.shape[2], left : left + src.shape[3]]
                torch.complex(src[:, 0 : c - 1 : 2], src[:, 1::2], out=at[:, : c // 2])
                if c % 2:
                    torch.view_as_real(at[:, -1])[..., 0].copy_(src[:, -1])
            else:
                pad_into(spec, x, xpad)
        for blk in blocks:
            block(y, blk)
        return y[:, :k, rows_out, cols_out]

    return run


class _FFTBase:
    dtypes = (torch.float32, torch.float64)

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        return dtype_reason(dtype, self.dtypes) or device_reason(device)

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        if device != "cpu":
            return FLOAT_TOLERANCE[dtype]
        return _UNITS * unit_roundoff(dtype)

    own_threads = False
    """Whether the backend spreads the FFT library's calls over ``workers`` threads itself
    (they do not run inside torch's operators): ``prepare`` then also times one."""

    def transforms(
        self, spec: ConvSpec, size: tuple[int, int], weight: torch.Tensor, workers: int
    ) -> Transforms:
        """The conjugated weight spectrum on a ``size`` grid (K, C/g, Th, Tw/2+1) and the four
        transforms ``forward(tiles)`` (real to half spectra), ``inverse(spectra)`` (back to
        real), ``forward_pairs(tiles)`` and ``inverse_pairs(spectra)`` (complex to whole
        complex spectra and back, over the last two dimensions), each returning a new tensor
        (writing into a workspace, ``out=``, made torch.fft copy its result: 0.29 against 0.23
        ms for sixteen 140×140 tiles), on ``workers`` threads where the backend spreads the
        library's calls itself (``own_threads``)."""
        raise NotImplementedError

    def build(
        self,
        spec: ConvSpec,
        tiling: Tiling,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        block_bytes: int | None = None,
        mac: bool = False,
        workers: int | None = None,
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The timed call for one tiling, its weight spectrum made here (the FFTs on
        ``workers`` threads, by default torch's count)."""
        threads = workers or torch.get_num_threads()
        wf, *fns = self.transforms(spec, tiling.size, weight, threads)
        return _pipeline(spec, tiling, wf, bias, *fns, block_bytes, mac)

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        tilings = {"x".join(map(str, t.size)): t for t in plan(spec)}
        ways = [(name, False) for name in tilings]
        if (spec.ic // spec.g) * (spec.oc // spec.g) <= MAC_CHANNELS:
            ways += [(name, True) for name in tilings]
        label, run, times = fastest(
            (
                (
                    f"{name} mac" if mac else name,
                    lambda t=tilings[name], m=mac: self.build(spec, t, weight, bias, mac=m),
                )
                for name, mac in ways
            ),
            tuning_input(spec, weight),
        )
        way = label
        tiling, mac = tilings[way.split()[0]], way.endswith("mac")
        workers = torch.get_num_threads()
        if self.own_threads and workers > 1:
            # Spreading the FFTs costs a Python call per part and transform, more than small
            # transforms gain by it. Timed for the chosen way only, against itself, in the
            # same conditions.
            one = f"{way}, 1 worker"
            label, run, again = fastest(
                [
                    (way, lambda first=run: first),
                    (one, lambda: self.build(spec, tiling, weight, bias, mac=mac, workers=1)),
                ],
                tuning_input(spec, weight),
            )
            times |= {one: again[one]} if one in again else {}
            workers = 1 if label == one else workers
        hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
        params = {
            "fft_size": list(tiling.size),
            "tile_step": list(tiling.step),
            "tiles": list(tiling.tiles),
            "padded_input": [hp, wp],
            "channel_sums": "multiply-accumulate" if mac else "GEMM per frequency",
            "tuned_ms": times,
            "model_ms": {  # the GEMM form's
                name: round(cost(spec, t, torch.get_num_threads()) * 1e3, 3)
                for name, t in tilings.items()
            },
        }
        if self.own_threads:
            params["fft_workers"] = workers
        one_thread = ", FFTs on 1 thread" if self.own_threads and workers == 1 else ""
        return Prepared(run, f"fft {way} tiles{one_thread}", params)


class FFTTorchBackend(_FFTBase):
    name = "fft-torch"
    description = "FFT convolution with torch.fft over tiles chosen per problem (overlap-save)"

    def transforms(
        self, spec: ConvSpec, size: tuple[int, int], weight: torch.Tensor, workers: int
    ) -> Transforms:
        del workers  # torch.fft runs on torch's threads
        th, tw = size
        with stage("fft/filter_spectrum"):
            wf = torch.fft.rfft2(_dilated(spec, weight), s=(th, tw)).conj().resolve_conj()

        def forward(tiles: torch.Tensor) -> torch.Tensor:
            return torch.fft.rfft2(tiles)

        def inverse(spectra: torch.Tensor) -> torch.Tensor:
            return torch.fft.irfft2(spectra, s=(th, tw))

        def forward_pairs(tiles: torch.Tensor) -> torch.Tensor:
            return torch.fft.fft2(tiles)

        def inverse_pairs(spectra: torch.Tensor) -> torch.Tensor:
            return torch.fft.ifft2(spectra)

        return wf, forward, inverse, forward_pairs, inverse_pairs


class FFTScipyBackend(_FFTBase):
    """The FFTs are SciPy's (pocketfft); the per-frequency GEMMs and the reordering go through
    torch, as in ``fft-torch``, so the two backends differ in their FFT library alone (NumPy's
    ``matmul`` loops over thousands of small matrices one by one, at a third of the speed).

    pocketfft can run threads of its own (``workers``), but torch's OpenMP threads spin-wait
    after each of torch's operators and Numba's loops, so the two shared the cores on every
    switch between them: on mb4ic16ih128oc16oh128kh11ph5 (144×144 tiles, 2 threads) the
    backend took 24.1 ms, and 16.0 ms with ``OMP_WAIT_POLICY=PASSIVE`` (no spinning), which
    a library must not set for the whole process (fft-torch went from 7.8 to 10.2 ms with
    it). So each batch of transforms is cut into as many parts as torch has threads, and each
    part runs on one thread of pocketfft, on a thread of that same pool (:func:`_in_parts`):
    the threads that would spin do the work. Against pocketfft's own threads (``convbench ab``
    of the two versions, 2 threads, 22 to 158 paired rounds a problem, whole calls as
    ``prepare`` chose them): 7.6 % [5.7, 9.9] faster on one 128² image of 8 → 16 channels with
    11×11, 12 % on 16 → 16, 31 % on 64 → 64, 26 % on sixteen images of 16 → 16, 20 % on (4,
    32, 64²) with 7×7, 19 % on one 256² image of 8 channels with 15×15; unchanged on 256 → 256
    channels (the GEMMs weigh most). In one process, both versions with torch in the same
    rounds, each as its ``prepare`` chose (``python scripts/fft_ab.py --compare threads``):
    over torch 1.00–1.14× before and 1.25–1.57× now on one and four 128² images of 8 and 16
    channels with 11×11, 0.75× and 0.95× on (4, 32, 64²) with 7×7, 2.34× and 3.18× on one 128²
    image of 64 channels. ``prepare`` still times the chosen way with all FFTs on one thread,
    which wins where the transforms are too small to pay for a Python call per part."""

    name = "fft-scipy"
    description = "FFT convolution with scipy.fft on the CPU over tiles chosen per problem"

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        if device != "cpu":
            return "scipy.fft runs on the CPU only"
        return super().supports(spec, device, dtype)

    own_threads = True

    def transforms(
        self, spec: ConvSpec, size: tuple[int, int], weight: torch.Tensor, workers: int
    ) -> Transforms:
        th, tw = size
        with stage("fft/filter_spectrum"):
            w = _dilated(spec, weight).numpy()
            wf = torch.from_numpy(scipy.fft.rfft2(w, s=(th, tw), workers=workers).conj())
        cplx, real = wf.numpy().dtype, wf.real.numpy().dtype
        half = (th, tw // 2 + 1)
        # The spectra are rebuilt every call: pocketfft may work in them.
        into_real = {"s": size, "overwrite_x": True}
        in_place = {"overwrite_x": True}

        def forward(tiles: torch.Tensor) -> torch.Tensor:
            return _in_parts(scipy.fft.rfft2, {}, tiles.numpy(), half, cplx, workers)

        def inverse(spectra: torch.Tensor) -> torch.Tensor:
            return _in_parts(scipy.fft.irfft2, into_real, spectra.numpy(), size, real, workers)

        def forward_pairs(tiles: torch.Tensor) -> torch.Tensor:
            return _in_parts(scipy.fft.fft2, {}, tiles.numpy(), size, cplx, workers)

        def inverse_pairs(spectra: torch.Tensor) -> torch.Tensor:
            return _in_parts(scipy.fft.ifft2, in_place, spectra.numpy(), size, cplx, workers)

        return wf, forward, inverse, forward_pairs, inverse_pairs


def _in_parts(
    fft: Callable[..., np.ndarray],
    options: dict[str, object],
    a: np.ndarray,
    tail: tuple[int, int],
    dtype: np.dtype,
    parts: int,
) -> torch.Tensor:
    """``fft(a, **options)`` over the last two axes of ``a``, whose result's last two axes are
    ``tail``, on one of pocketfft's threads: in one call where ``parts`` is 1, else cut into
    ``parts`` slices of the longest other axis, each on a thread of torch's OpenMP pool
    (:func:`~convbench.backends.numba_pool.on_pool`) and written into one new array there."""
    if parts > 1 and a.ndim > 2:
        axis = max(range(a.ndim - 2), key=a.shape.__getitem__)
        n = a.shape[axis]
        parts = min(parts, n)
    else:  # a call on one thread (the instruction gate's) pays for nothing more
        parts = 1
    if parts == 1:
        return torch.from_numpy(fft(a, workers=1, **options))
    # Imported here: Numba takes a second to import, which no other command should pay.
    from convbench.backends.numba_pool import on_pool

    out = np.empty(a.shape[:-2] + tail, dtype)

    def part(p: int) -> None:
        at = (slice(None),) * axis + (slice(p * n // parts, (p + 1) * n // parts),)
        out[at] = fft(a[at], workers=1, **options)

    on_pool(part, parts)
    return torch.from_numpy(out)
