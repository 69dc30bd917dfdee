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

In 2-D the transforms are Kronecker products: one GEMM transforms every tile of every channel
at once, U = (G⊗G)·w is made in ``prepare``, and the n² transform-domain products are one
batched GEMM, [K×C]·[C×tiles] per (ξ, ν).
"""

from __future__ import annotations

import math
from fractions import Fraction
from functools import cache

import torch
from torch.profiler import record_function

from convbench.backends.base import (
    Prepared,
    device_reason,
    dtype_reason,
    pad_into,
    unit_roundoff,
)
from convbench.spec import ConvSpec

__all__ = ["POINTS", "WinogradBackend", "transform_matrices"]

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


def _kron(a: Matrix, b: Matrix, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    ta = torch.tensor([[float(v) for v in row] for row in a], dtype=torch.float64)
    tb = torch.tensor([[float(v) for v in row] for row in b], dtype=torch.float64)
    return torch.kron(ta, tb).to(dtype=dtype, device=device)


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

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        m, kh, kw = self.m, spec.kh, spec.kw
        nh, nw = m + kh - 1, m + kw - 1
        at_h, g_h, bt_h, points = transform_matrices(m, kh)
        at_w, g_w, bt_w, _ = transform_matrices(m, kw)
        dtype, device = weight.dtype, weight.device
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        bb = _kron(bt_h, bt_w, dtype, device)  # (nh·nw, nh·nw)
        aa = _kron(at_h, at_w, dtype, device)  # (m·m, nh·nw)
        with record_function("winograd/filter_transform"):
            # In float64 whatever the dtype: prepare-time precision is free.
            gg = _kron(g_h, g_w, torch.float64, device)  # (nh·nw, kh·kw)
            u = gg @ weight.to(torch.float64).reshape(spec.oc * cg, kh * kw).T
            # (nh·nw, G, C/g, K/g): the right operand of the transform-domain GEMMs.
            u = u.reshape(nh * nw, g, kg, cg).transpose(2, 3).to(dtype).contiguous()
        oh, ow = spec.oh, spec.ow
        th, tw = math.ceil(oh / m), math.ceil(ow / m)
        n, c, p = spec.mb, spec.ic, spec.mb * th * tw
        # Channels innermost (NHWC) throughout: gathering tiles and scattering outputs then
        # move whole channel vectors, and every GEMM runs on plain row-major operands.
        # Workspaces are made once: fresh multi-megabyte buffers would be paged in anew on
        # every call (the allocator returns large blocks to the OS), costing as much as the
        # arithmetic. The callable is therefore not re-entrant.
        ws = {"dtype": dtype, "device": device}
        xpad = torch.zeros(n, th * m + kh - 1, tw * m + kw - 1, c, **ws)  # NHWC, zero border
        d = torch.empty(nh, nw, n, th, tw, c, **ws)
        v = torch.empty(nh * nw, p, c, **ws)
        mm = torch.empty(nh * nw, p, spec.oc, **ws)
        yt = torch.empty(m * m, p * spec.oc, **ws)
        grouped = g > 1

        def run(x: torch.Tensor) -> torch.Tensor:
            with record_function("winograd/input_transform"):
                # The padded input, extended with zeros to whole tiles (extra outputs are cut
                # below); its overlapping tiles gathered into a (nh·nw, tiles·C) matrix and
                # all transformed by one GEMM.
                pad_into(spec, x, xpad.permute(0, 3, 1, 2))
                d.copy_(xpad.unfold(1, nh, m).unfold(2, nw, m).permute(4, 5, 0, 1, 2, 3))
                torch.mm(bb, d.view(nh * nw, p * c), out=v.view(nh * nw, p * c))
            with record_function("winograd/gemm"):
                if grouped:
                    vg = v.view(nh * nw, p, g, cg).transpose(1, 2)
                    mm.view(nh * nw, p, g, kg).copy_(torch.matmul(vg, u).transpose(1, 2))
                else:
                    torch.bmm(v, u.view(nh * nw, cg, kg), out=mm)
            with record_function("winograd/output_transform"):
                torch.mm(aa, mm.view(nh * nw, p * spec.oc), out=yt)
                y = torch.empty(n, th * m, tw * m, spec.oc, **ws)
                y.view(n, th, m, tw, m, spec.oc).copy_(
                    yt.view(m, m, n, th, tw, spec.oc).permute(2, 3, 0, 4, 1, 5)
                )
                # An NCHW view of the NHWC result: torch's own channels-last layout.
                y = y[:, :oh, :ow].permute(0, 3, 1, 2)
            return y if bias is None else y.add_(bias.view(1, -1, 1, 1))

        return Prepared(
            run,
            f"winograd F({m}x{m}, {kh}x{kw})",
            {"tile": [nh, nw], "output_tile": m, "points": [str(p) for p in points] + ["inf"]},
        )
