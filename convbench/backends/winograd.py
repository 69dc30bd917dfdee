"""Winograd minimal filtering F(m×m, r×r): m×m outputs of an r×r correlation from an n×n input
tile (n = m + r − 1) with n² multiplications instead of m²r².

Transform matrices are generated, not typed in: for n interpolation points (n − 1 finite ones
and ∞), Toom-Cook gives the linear convolution s = V⁻¹[(V_r g) ⊙ (V_m h)], where V_k evaluates a
polynomial of k coefficients at the points. Correlation is its transpose,
y = V_mᵀ[(V_r g) ⊙ (V⁻ᵀ d)], so Aᵀ = V_mᵀ, G = V_r, Bᵀ = V⁻ᵀ — computed exactly with
``fractions.Fraction``, then balanced (each row of Bᵀ scaled to a largest entry of 1, G's row
scaled inversely). Points are small and reciprocal-symmetric (0, ±1, ±1/2, ±2, ...): Lavin &
Gray (2015) and Barabasz et al. (2020) show such points keep F(6, 3) usable in float32 where
integer points fail.

In 2-D, U = (G⊗G)·w is made in ``prepare`` and the n² transform-domain products are one
batched GEMM, [tiles×C]·[C×K] per (ξ, ν). The transforms are done one of two ways:

- ``fused`` (CPU): Numba kernels (``winograd_kernels``) read each tile where it lies in the
  padded channels-last input and write each output where it goes, applying Bᵀ and Aᵀ one
  dimension at a time and skipping their zeros;
- ``torch`` (any device): a copy gathers the overlapping tiles, one GEMM by Bᵀ⊗Bᵀ transforms
  every tile of every channel of a block, one by Aᵀ⊗Aᵀ transforms back, a copy scatters them.

Cost model, for P tiles of N images (P = N·⌈OH/m⌉·⌈OW/m⌉), z the nonzeros of a row of Bᵀ
(4.3 on average for F(4, 3)) and z' those of a row of Aᵀ:

    fused: multiply-adds = P·(2·n²·z·C + n²·C·K + (n·m + m²)·z'·K)
           bytes = 4·(2·N·C·Hp·Wp + 3·P·n²·max(C, K) + N·K·OH·OW)
    torch: multiply-adds = P·(n⁴·C + n²·C·K + m²·n²·K)
           bytes = 4·(2·N·C·Hp·Wp + 2·P·n²·C + 3·P·n²·max(C, K) + 2·N·K·OH·OW)

(padding to NHWC, gathering, the three transform-domain arrays written and read once unless a
block keeps them in the caches, scattering), against N·K·C·r²·OH·OW multiply-adds for a direct
convolution. At C = K = 64, F(4, 3)'s dense input transform (n² = 36 multiply-adds per
element) costs more than half as much as its products; the fused one (2·z ≈ 9) a quarter of
that, and it writes the tiles once instead of gathering them and transforming them apart. So
the fused way wins wherever the transforms weigh: on a 64-channel 56×56 layer at minibatch 8,
0.97× torch's convolution against 0.74× with torch's operators, and 1.72× against 1.40× at
128 channels on 28×28 (one run, 2 threads); torch's operators, with less per call, keep some
small images at minibatch 1. Off the CPU only the torch way exists. Blocking keeps a block's
three transform-domain arrays in the caches at the price of shorter GEMMs and of reading U
(4·n²·C·K bytes) once per block; ``prepare`` times both ways at one block of every tile and at
blocks of 4 MiB and 16 MiB (BLOCK_BYTES), and keeps the fastest. The tile m trades the saving
(m²r²/n²: 2.25, 4 and 5.06 for F(2), F(4), F(6) at r = 3) against tiles cut off at the image's
edge (⌈7/4⌉·4 = 8 rows computed for 7) and transforms that grow with n: F(2) wins on small
images at minibatch 1, F(4) on most layers, F(6) on large images with about 100 channels.

The n² products go to torch's bmm (the BLAS torch was built with: MKL in the PyPI wheels) or,
with one group in float32 on the CPU, to oneDNN's matmul, one frequency at a time on U packed
once, each result copied into the workspace (``onednn_linear``); ``prepare`` times both, and
``gemm_library`` records the choice. MKL runs its AVX2 kernels on AMD CPUs, where oneDNN uses
AVX-512 as torch's own convolution does: on a Zen 5, F(4) on a 256-channel 56×56 layer at
minibatch 8 took 66 ms with bmm and 45 ms with oneDNN (torch's convolution 83 ms), and over
``scripts/algorithm_targets.py``'s Winograd class the best variant's geometric mean rose from
1.06× to 1.26× and 1.31× torch at minibatch 8 (two runs), from 1.05× to 1.07× and 1.10× at
minibatch 1. bmm kept 71 of the 108 layer-variant pairs at minibatch 1 and 18 of 108 at
minibatch 8, all but one of those with 128 channels or fewer on a side: there 36 calls and
copies weigh more than the faster kernel saves (F(4) on 128 channels at 28×28, minibatch 8:
6.4 ms against 7.9). After the fused transforms, the n² products can also be one call: a
grouped 1×1 convolution by oneDNN over the tiles laid out tile by tile (``_blocked`` gives
its figures). Whole calls of F(4) on the same Zen 5 against torch in the same rounds (7
rounds; each engine at the better of one block and blocks of 4 MiB): on 64 channels at 56×56
(minibatch 8) 0.93× torch against bmm's 0.56× and oneDNN matmul's 0.74×; 96 channels 1.47×
against 1.00× and 0.99×; 64 channels at 112×112 2.16× against 1.52× and 1.36×; 128 at 28×28
1.86× against 1.11× and 1.29×; 256 at 28×28 2.23× against 1.27× and 1.88×; 512 at 7×7 1.83×
against 0.92× and 1.39×; at minibatch 1, 256 channels at 14×14 1.53× against 1.01× and
0.71×, 64 at 56×56 1.20× against 0.93× and 0.58×.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from fractions import Fraction
from functools import cache

import numpy as np
import torch

from convbench.backends.base import (
    Block,
    Prepared,
    device_reason,
    dtype_reason,
    fastest,
    has_onednn_grouped,
    has_onednn_matmul,
    onednn_grouped_products,
    onednn_linear,
    pad_into,
    stage,
    tile_blocks,
    tuning_input,
    unit_roundoff,
)
from convbench.spec import ConvSpec

__all__ = ["GEMM_LIBRARIES", "POINTS", "WinogradBackend", "transform_matrices"]

# Finite interpolation points in order of use; ∞ is always the last point.
POINTS = (
    Fraction(0), Fraction(1), Fraction(-1), Fraction(1, 2), Fraction(-2),
    Fraction(-1, 2), Fraction(2), Fraction(1, 4), Fraction(-4), Fraction(-1, 4), Fraction(4),
)  # fmt: skip
MAX_TILE = 8
# CPU tolerance of F(m), in units of the dtype's rounding, set as base.GEMM_UNITS says. The
# error grows with the tile n = m + r − 1, whose transforms hold larger entries, and at one tile
# with m (Barabasz et al. 2020). Worst seen: F(2) 23 units on the network suites' 3×3 and 5×5
# kernels (tiles 4 and 6) but 108 on the 7×7 kernels of fuzzed problems and 75 of the
# large_kernel suite (tile 8); F(4) 59 on 5×5 (tile 8), 73 fuzzed; F(6) 108 on 3×3 (tile 8).
# Ten times the worst on the measured network layers: about 200, 520 and 1030 units.
_UNITS = {2: 144, 4: 192, 6: 320}
# Off the CPU (CUDA), where the errors are not measured: float32 bounds, scaled for float64.
_UNMEASURED = {2: 1e-5, 4: 5e-5, 6: 1e-4}
GEMM_LIBRARIES = {
    "bmm": "torch.bmm",
    "onednn": "oneDNN matmul",
    "grouped": "oneDNN grouped 1x1 convolution",
}
"""What makes the n² transform-domain products (``prepare``'s engines), as the params'
``gemm_library`` names it; the algorithm's label names it too, unless it is torch.bmm."""

Matrix = list[list[Fraction]]


def _evaluation(points: tuple[Fraction, ...], k: int) -> Matrix:
    """Rows evaluate a polynomial of k coefficients at each finite point; the last row (∞)
    picks its leading coefficient."""
    rows = [[p**j for j in range(k)] for p in points]
    return [*rows, [Fraction(0)] * (k - 1) + [Fraction(1)]]


def _inverse(a: Matrix) -> Matrix:
    """Exact Gauss-Jordan inverse over the rationals."""
    n = len(a)
    m = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for col in range(n):
        pivot = next(r for r in range(col, n) if m[r][col] != 0)
        m[col], m[pivot] = m[pivot], m[col]
        inv = 1 / m[col][col]
        m[col] = [v * inv for v in m[col]]
        for r in range(n):
            if r != col and m[r][col] != 0:
                f = m[r][col]
                m[r] = [v - f * w for v, w in zip(m[r], m[col], strict=True)]
    return [row[n:] for row in m]


@cache
def transform_matrices(m: int, r: int) -> tuple[Matrix, Matrix, Matrix, tuple[Fraction, ...]]:
    """(Aᵀ (m×n), G (n×r), Bᵀ (n×n), the finite points) of F(m, r), exact."""
    n = m + r - 1
    if not 1 <= n - 1 <= len(POINTS):
        raise ValueError(f"F({m}, {r}) needs {n - 1} finite points; at most {len(POINTS)} known")
    points = POINTS[: n - 1]
    at = [list(col) for col in zip(*_evaluation(points, m), strict=True)]
    g = _evaluation(points, r)
    bt = [list(col) for col in zip(*_inverse(_evaluation(points, n)), strict=True)]
    for i, row in enumerate(bt):
        scale = max(abs(v) for v in row)
        bt[i] = [v / scale for v in row]
        g[i] = [v * scale for v in g[i]]
    return at, g, bt, points


def _array(a: Matrix, dtype: torch.dtype) -> np.ndarray:
    """An exact matrix rounded to ``dtype``, for the fused kernels."""
    return torch.tensor([[float(v) for v in row] for row in a], dtype=dtype).numpy()


def _kron(a: Matrix, b: Matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    ta = torch.tensor([[float(v) for v in row] for row in a], dtype=torch.float64)
    tb = torch.tensor([[float(v) for v in row] for row in b], dtype=torch.float64)
    return torch.kron(ta, tb).to(dtype=dtype, device=device)


BLOCK_BYTES = (4 << 20, 16 << 20)
"""Budgets, in bytes of one transform-domain array (tiles × n² × channels), of the blocks that
prepare tries besides one block of every tile. A block's three arrays then stay in the caches
between its steps instead of streaming every tile through memory three times; too small a
block makes short GEMMs and reads the transformed filters once per block."""


class WinogradBackend:
    """``winograd-f{m}``: F(m×m, r×s) for any kernel with m + max(r, s) − 1 ≤ 8."""

    dtypes = (torch.float32, torch.float64)

    def __init__(self, m: int) -> None:
        self.m = m
        self.name = f"winograd-f{m}"
        self.description = (
            f"Winograd minimal filtering F({m}x{m}, rxr), m + r - 1 <= {MAX_TILE}; "
            "filter transform in prepare, batched GEMM"
        )

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        if spec.sh != 1 or spec.sw != 1:
            return f"Winograd needs stride 1, got {spec.sh}x{spec.sw}"
        if spec.dh != 1 or spec.dw != 1:
            return f"Winograd needs dilation 1, got {spec.dh}x{spec.dw}"
        if self.m + max(spec.kh, spec.kw) - 1 > MAX_TILE:
            return (
                f"F({self.m}x{self.m}, {spec.kh}x{spec.kw}) needs a tile of "
                f"{self.m + max(spec.kh, spec.kw) - 1} > {MAX_TILE}: its transforms lose "
                "too much precision"
            )
        return dtype_reason(dtype, self.dtypes) or device_reason(device)

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        if device != "cpu":
            # float64 carries 29 more bits than float32: the same growth, scaled.
            return _UNMEASURED[self.m] * (1.0 if dtype == torch.float32 else 2.0**-29)
        return _UNITS[self.m] * unit_roundoff(dtype)

    def transforms(
        self, spec: ConvSpec, weight: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(Bᵀ⊗Bᵀ, Aᵀ⊗Aᵀ, U): the input and output transforms and the transformed filter,
        (n², G, C/g, K/g), made in float64 whatever the dtype (prepare-time precision is
        free)."""
        m, kh, kw = self.m, spec.kh, spec.kw
        nh, nw = m + kh - 1, m + kw - 1
        at_h, g_h, bt_h, _ = transform_matrices(m, kh)
        at_w, g_w, bt_w, _ = transform_matrices(m, kw)
        dtype, device = weight.dtype, weight.device
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        bb = _kron(bt_h, bt_w, dtype, device)  # (nh·nw, nh·nw)
        aa = _kron(at_h, at_w, dtype, device)  # (m·m, nh·nw)
        with stage("winograd/filter_transform"):
            gg = _kron(g_h, g_w, torch.float64, device)  # (nh·nw, kh·kw)
            u = gg @ weight.to(torch.float64).reshape(spec.oc * cg, kh * kw).T
            # (nh·nw, G, C/g, K/g): the right operand of the transform-domain GEMMs.
            u = u.reshape(nh * nw, g, kg, cg).transpose(2, 3).to(dtype).contiguous()
        return bb, aa, u

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        m, kh, kw = self.m, spec.kh, spec.kw
        nh, nw = m + kh - 1, m + kw - 1
        points = transform_matrices(m, kh)[3]
        bb, aa, u = self.transforms(spec, weight)
        dtype = weight.dtype
        oh, ow = spec.oh, spec.ow
        th, tw = math.ceil(oh / m), math.ceil(ow / m)
        n, c, k = spec.mb, spec.ic, spec.oc
        per_tile = nh * nw * max(c, k) * dtype.itemsize
        plans = {"all": tile_blocks(n, th, tw, n * th * tw)}
        for budget in BLOCK_BYTES:
            blocks = tile_blocks(n, th, tw, budget // per_tile)
            if len(blocks) not in {len(b) for b in plans.values()}:
                plans[f"{budget >> 20}MiB"] = blocks
        # On the CPU the fused transforms come first: untimed, they are the model's choice.
        ways = ("fused", "torch") if weight.device.type == "cpu" else ("torch",)
        # The products by torch's bmm (its BLAS) first, then by oneDNN's matmul where it
        # takes them (one group, float32 on the CPU), and by oneDNN's grouped convolution
        # after the fused transforms: which is faster depends on the CPU and the shape.
        engines = ("bmm", "onednn") if spec.g == 1 and has_onednn_matmul(u) else ("bmm",)
        engines += ("grouped",) if spec.g == 1 and has_onednn_grouped(u) else ()
        label, run, times = fastest(
            (
                (
                    f"{name}, {way}, {engine}",
                    lambda b=b, way=way, by=engine: self._blocked(
                        spec, b, bb, aa, u, bias, way, by
                    ),
                )
                for engine in engines
                for way in ways
                for name, b in plans.items()
                if engine != "grouped" or way == "fused"
            ),
            tuning_input(spec, weight),
        )
        plan, way, engine = label.split(", ")
        return Prepared(
            run,
            f"winograd F({m}x{m}, {kh}x{kw})"
            + (", fused transforms" if way == "fused" else ", torch transforms")
            + ("" if engine == "bmm" else f", {GEMM_LIBRARIES[engine]}"),
            {
                "tile": [nh, nw],
                "output_tile": m,
                "points": [str(p) for p in points] + ["inf"],
                "transforms": way,
                "gemm_library": GEMM_LIBRARIES[engine],
                "blocks": len(plans[plan]),
                "tiles_per_block": max(b.tiles for b in plans[plan]),
                "tuned_ms": times,
            },
        )

    def _blocked(
        self,
        spec: ConvSpec,
        blocks: list[Block],
        bb: torch.Tensor,
        aa: torch.Tensor,
        u: torch.Tensor,
        bias: torch.Tensor | None,
        transforms: str = "torch",
        gemm_by: str = "bmm",
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """The timed call, ``blocks`` of tiles at a time, its transforms done by torch's
        operators or by the ``"fused"`` CPU kernels (``winograd_kernels``), its products by
        torch's bmm, by oneDNN's matmul (``"onednn"``, one group) or, after the fused
        transforms, by oneDNN's grouped convolution (``"grouped"``, one group).

        ``"grouped"`` is one call for all n² products: the tiles' transformed channels, laid
        out tile by tile (the fused kernels' ``*_by_tile`` pair), are a channels-last image of P
        pixels and n²·C channels, and a 1×1 convolution of n² groups multiplies each group of
        C by its own C×K matrix (:func:`onednn_grouped_products`), in AVX-512 where the CPU
        has it, with no copy of each product into a workspace. The products alone on a Zen 5
        (2 threads, 15 alternating rounds, median ratios), 36 of them: bmm took 1.33× as long
        and 36 oneDNN matmuls 1.53× on 392 tiles of 64 → 64 channels, 1.50× and 1.15× on 1568,
        2.46× and 1.61× on 392 of 128 → 128, 2.30× and 1.61× on 98 of 256 → 256, 1.97× and
        1.04× on 392 of 256 → 256, 2.21× and 1.36× on 32 of 512 → 512."""
        m, kh, kw = self.m, spec.kh, spec.kw
        nh, nw = m + kh - 1, m + kw - 1
        dtype, device = u.dtype, u.device
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        oh, ow = spec.oh, spec.ow
        th, tw = math.ceil(oh / m), math.ceil(ow / m)
        n, c, k = spec.mb, spec.ic, spec.oc
        pb = max(b.tiles for b in blocks)
        fused = transforms == "fused"
        # Channels innermost (NHWC) throughout: gathering tiles and scattering outputs then
        # move whole channel vectors, and every GEMM runs on plain row-major operands.
        # Workspaces are made once: fresh multi-megabyte buffers would be paged in anew on
        # every call (the allocator returns large blocks to the OS), costing as much as the
        # arithmetic. The callable is therefore not re-entrant.
        ws = {"dtype": dtype, "device": device}
        xpad = torch.zeros(n, th * m + kh - 1, tw * m + kw - 1, c, **ws)  # NHWC, zero border
        v = torch.empty(nh * nw * pb * c, **ws)
        # The grouped products take the tiles laid out tile by tile and come back as a new
        # tensor: no workspace for them.
        tiles_first = gemm_by == "grouped"
        mm = torch.empty(0 if tiles_first else nh * nw * pb * k, **ws)
        ug = u.view(nh * nw, cg, kg) if g == 1 else u
        # oneDNN's matmul returns a new tensor, so each frequency's product is copied into
        # the workspace the output transform reads: copy included, 2.1x bmm's speed on a
        # Zen 5 at 1568 tiles and 256 channels, 1.5x at 100 tiles.
        linears = [onednn_linear(uf.t(), None, pb) for uf in ug] if gemm_by == "onednn" else None
        grouped = onednn_grouped_products(ug, pb) if tiles_first else None

        def gemm(vb: torch.Tensor, p: int) -> torch.Tensor:
            """The n² transform-domain products of a block's p tiles, (n², p, K), or with
            ``tiles_first`` (p, n², K) from ``vb`` (p, n², C)."""
            if grouped is not None:
                return grouped(vb)
            mb_ = mm[: nh * nw * p * k].view(nh * nw, p, k)
            if linears is not None:
                for vf, linear, mf in zip(vb, linears, mb_, strict=True):
                    mf.copy_(linear(vf))
            elif g == 1:
                torch.bmm(vb, ug, out=mb_)
            else:
                vg = vb.view(nh * nw, p, g, cg).transpose(1, 2)
                mb_.view(nh * nw, p, g, kg).copy_(torch.matmul(vg, ug).transpose(1, 2))
            return mb_

        if fused:
            block = self._fused_block(spec, xpad, v, gemm, bias, tiles_first)
        else:
            block = self._torch_block(spec, xpad, v, gemm, bb, aa, bias)

        def run(x: torch.Tensor) -> torch.Tensor:
            with stage("winograd/input_transform"):
                # The padded input, extended with zeros to whole tiles (extra outputs are cut
                # below).
                pad_into(spec, x, xpad.permute(0, 3, 1, 2))
            y = torch.empty(n, th * m, tw * m, k, **ws)
            for blk in blocks:
                block(y, blk)
            # An NCHW view of the NHWC result: torch's own channels-last layout.
            return y[:, :oh, :ow].permute(0, 3, 1, 2)

        return run

    def _torch_block(
        self,
        spec: ConvSpec,
        xpad: torch.Tensor,
        v: torch.Tensor,
        gemm: Callable[[torch.Tensor, int], torch.Tensor],
        bb: torch.Tensor,
        aa: torch.Tensor,
        bias: torch.Tensor | None,
    ) -> Callable[[torch.Tensor, Block], None]:
        """One block with torch's operators: a copy gathers the tiles, one GEMM by Bᵀ⊗Bᵀ
        transforms them, one by Aᵀ⊗Aᵀ transforms back, a copy scatters the outputs."""
        m, kh, kw = self.m, spec.kh, spec.kw
        nh, nw = m + kh - 1, m + kw - 1
        c, k, tw = spec.ic, spec.oc, math.ceil(spec.ow / m)
        pb = v.numel() // (nh * nw * c)
        d = torch.empty_like(v)
        yt = torch.empty(m * m * pb * k, dtype=v.dtype, device=v.device)
        # Aᵀ's column for the point 1 is all ones, so a bias added to the products at (1, 1)
        # comes out of the output transform added to every output: a pass over 1/n² of the
        # products instead of over the whole output. 1 is the second point, which a tile of
        # two (F(2, 1), Aᵀ = I) does not reach.
        at_one = nw + 1 if min(nh, nw) > 2 else None
        bias_nhwc = None if bias is None else bias.view(1, 1, 1, 1, 1, k)

        def block(y: torch.Tensor, blk: Block) -> None:
            """Transform, multiply and transform back the tiles of one block, whose working
            set was sized to stay in cache between the three steps."""
            bn, br = blk.images.stop - blk.images.start, blk.rows.stop - blk.rows.start
            p = blk.tiles
            top = blk.rows.start * m
            src = xpad[blk.images, top : top + br * m + kh - 1]
            with stage("winograd/input_transform"):
                db = d[: nh * nw * p * c].view(nh, nw, bn, br, tw, c)
                db.copy_(src.unfold(1, nh, m).unfold(2, nw, m).permute(4, 5, 0, 1, 2, 3))
                vb = v[: nh * nw * p * c].view(nh * nw, p, c)
                torch.mm(bb, db.view(nh * nw, p * c), out=vb.view(nh * nw, p * c))
            with stage("winograd/gemm"):
                mb_ = gemm(vb, p)
                if bias is not None and at_one is not None:
                    mb_[at_one].add_(bias)
            with stage("winograd/output_transform"):
                yb = yt[: m * m * p * k].view(m * m, p * k)
                torch.mm(aa, mb_.view(nh * nw, p * k), out=yb)
                dst = y[blk.images, top : top + br * m].view(bn, br, m, tw, m, k)
                tiles = yb.view(m, m, bn, br, tw, k).permute(2, 3, 0, 4, 1, 5)
                if bias_nhwc is None or at_one is not None:
                    dst.copy_(tiles)
                else:
                    torch.add(tiles, bias_nhwc, out=dst)

        return block

    def _fused_block(
        self,
        spec: ConvSpec,
        xpad: torch.Tensor,
        v: torch.Tensor,
        gemm: Callable[[torch.Tensor, int], torch.Tensor],
        bias: torch.Tensor | None,
        tiles_first: bool,
    ) -> Callable[[torch.Tensor, Block], None]:
        """One block with the fused CPU kernels, which read the tiles where they lie in the
        padded input and write the outputs where they go, applying the 1-D transforms; with
        ``tiles_first`` the transformed tiles lie tile by tile, (p, n², C), as ``gemm``
        takes them and returns its products."""
        # Imported here: Numba takes a second to import, which no other command should pay.
        from convbench.backends import winograd_kernels as kernels

        m, kh, kw = self.m, spec.kh, spec.kw
        nh, nw = m + kh - 1, m + kw - 1
        c, th, tw = spec.ic, math.ceil(spec.oh / m), math.ceil(spec.ow / m)
        at_h, _, bt_h, _ = transform_matrices(m, kh)
        at_w, _, bt_w, _ = transform_matrices(m, kw)
        dtype = v.dtype
        bt_h, bt_w, at_h, at_w = (_array(a, dtype) for a in (bt_h, bt_w, at_h, at_w))
        xpad_np = xpad.numpy()
        bias_np = (torch.zeros(0, dtype=dtype) if bias is None else bias.detach()).numpy()
        scratch_in = np.empty((kernels.POOL, nh, nw, c), dtype=bias_np.dtype)
        scratch_out = np.empty((kernels.POOL, nh, m, spec.oc), dtype=bias_np.dtype)

        forward, backward = (
            (kernels.input_transform_by_tile, kernels.output_transform_by_tile)
            if tiles_first
            else (kernels.input_transform, kernels.output_transform)
        )

        def block(y: torch.Tensor, blk: Block) -> None:
            kernels.use_threads(torch.get_num_threads())
            p0 = (blk.images.start * th + blk.rows.start) * tw
            p1 = p0 + blk.tiles
            rows = (blk.tiles, nh * nw) if tiles_first else (nh * nw, blk.tiles)
            vb = v[: nh * nw * blk.tiles * c].view(*rows, c)
            with stage("winograd/input_transform"):
                forward(xpad_np, bt_h, bt_w, m, th, tw, p0, p1, vb.numpy(), scratch_in)
            with stage("winograd/gemm"):
                mb_ = gemm(vb, blk.tiles)
            with stage("winograd/output_transform"):
                backward(
                    mb_.numpy(),
                    at_h,
                    at_w,
                    th,
                    tw,
                    p0,
                    p1,
                    bias_np,
                    y.numpy(),
                    scratch_out,
                )

        return block
