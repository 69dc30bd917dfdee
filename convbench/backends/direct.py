"""Direct convolution: the definition itself (``direct``) and unfold + GEMM (``im2col``).

Both see the plain "valid" problem that :func:`pad_input` makes (padding modes, asymmetric and
negative padding done once, up front) and handle groups as a batched GEMM over groups.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import ClassVar

import torch
from torch.profiler import record_function

from convbench.backends.base import (
    FLOAT_TOLERANCE,
    GEMM_UNITS,
    Prepared,
    device_reason,
    dtype_reason,
    fastest,
    pad_input,
    pad_into,
    tile_blocks,
    tuning_input,
    unit_roundoff,
)
from convbench.spec import ConvSpec

__all__ = ["DirectBackend", "Im2colBackend"]


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return y if bias is None else y.add_(bias.view(1, -1, 1, 1))


class _DirectFamily:
    """What direct algorithms share: every float dtype, every device, the GEMM tolerance."""

    # CPU tolerance in units of the dtype's rounding (see GEMM_UNITS for why).
    UNITS: ClassVar[Mapping[torch.dtype, int]] = GEMM_UNITS

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        return dtype_reason(dtype, tuple(FLOAT_TOLERANCE)) or device_reason(device)

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        if device != "cpu":
            return FLOAT_TOLERANCE[dtype]
        return self.UNITS[dtype] * unit_roundoff(dtype)


class DirectBackend(_DirectFamily):
    """y = Σ over kernel taps (r, s) of W[:, :, r, s] · x shifted by (r·dh, s·dw), strided.

    One GEMM per tap over a strided view of the input: the textbook sum, in tensor operations,
    written independently of torch's convolution so that it can check it.
    """

    name = "direct"
    description = "the definition: one GEMM per kernel tap over a shifted, strided input view"
    # The taps' GEMM results are added one by one in the dtype: in float16 and bfloat16 that is
    # kh·kw more roundings, 3.5 units on the 7×7 and 11×11 stems of ResNet-50 and AlexNet and 4.5
    # on 15×15 kernels; ten times the networks' worst is 34 units (GEMM_UNITS says how it is set).
    UNITS: ClassVar[Mapping[torch.dtype, int]] = {
        **GEMM_UNITS,
        torch.float16: 12,
        torch.bfloat16: 12,
    }

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        oh, ow, sh, sw = spec.oh, spec.ow, spec.sh, spec.sw
        # taps[r, s] is the (groups, K/g, C/g) matrix of kernel tap (r, s).
        taps = weight.reshape(g, kg, cg, spec.kh, spec.kw).permute(3, 4, 0, 1, 2).contiguous()

        def run(x: torch.Tensor) -> torch.Tensor:
            xp = pad_input(spec, x)
            n = xp.shape[0]
            y = None
            with record_function("direct/taps"):
                for r in range(spec.kh):
                    top = r * spec.dh
                    rows = slice(top, top + (oh - 1) * sh + 1, sh)
                    for s in range(spec.kw):
                        left = s * spec.dw
                        view = xp[:, :, rows, left : left + (ow - 1) * sw + 1 : sw]
                        term = torch.matmul(taps[r, s], view.reshape(n, g, cg, oh * ow))
                        y = term if y is None else y.add_(term)
            assert y is not None
            return _add_bias(y.view(n, spec.oc, oh, ow), bias)

        return Prepared(run, "direct", {"taps": spec.kh * spec.kw})


class Im2colBackend(_DirectFamily):
    """Unfold the input into columns (C/g·R·S entries per output pixel), then GEMM.

    Channels innermost (NHWC) throughout: the padded input is written once into a
    channels-last buffer kept from call to call, the unfolding copies whole channel vectors,
    and each GEMM, [pixels × C·R·S]·[C·R·S × K], yields the output in channels-last order,
    returned as an NCHW view (torch's own channels-last layout).

    Cost model: the unfolding writes R·S·C/g numbers per output pixel (R·S times the input)
    and the GEMM does 2·K·C·R·S/g flops per pixel, at a rate that falls for narrow products
    (K or C·R·S of a few dozen) and for short ones. The columns are made for a block of output
    pixels at a time (several images, or rows of one), sized so that a block's columns are
    still in cache when its GEMM reads them, yet long enough for the GEMM; prepare times blocks
    of about 2048, 8192 and 32768 pixels (:func:`fastest`). Fewer than 2048 never won here,
    nor did ``F.unfold``'s [C·R·S × pixels] with the transposed GEMM, which yields NCHW
    directly. A 1×1 problem needs no columns: they are the padded input itself (subsampled by
    the stride), multiplied as it lies.
    """

    name = "im2col"
    description = "unfold (im2col, channels-last) + GEMM, pixels per GEMM timed in prepare"
    # Pixels per GEMM the candidates aim for.
    TARGET_ROWS = (2048, 8192, 32768)

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        if spec.kh == spec.kw == 1:
            return self._pointwise(spec, weight, bias)
        candidates = {
            max(b.tiles for b in tile_blocks(spec.mb, spec.oh, spec.ow, rows)): rows
            for rows in self.TARGET_ROWS
        }
        label, run, times = fastest(
            (
                (str(pixels), lambda r=rows: self._nhwc(spec, weight, bias, r))
                for pixels, rows in candidates.items()
            ),
            tuning_input(spec, weight),
        )
        crs = spec.ic // spec.g * spec.kh * spec.kw
        params = {"columns": [int(label), crs * spec.g], "tuned_ms": times}
        return Prepared(run, "im2col", params)

    @staticmethod
    def _nhwc(
        spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None, rows: int
    ) -> Callable[[torch.Tensor], torch.Tensor]:
        """Columns for about ``rows`` output pixels at a time: several images, or rows of one."""
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        kh, kw, oh, ow = spec.kh, spec.kw, spec.oh, spec.ow
        crs = cg * kh * kw
        # (G, R·S·C/g, K/g): each group's weights in the columns' (r, s, c) order.
        wt = weight.reshape(g, kg, cg, kh, kw).permute(0, 3, 4, 2, 1).reshape(g, crs, kg)
        wt = wt.contiguous()
        hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
        ws = {"dtype": weight.dtype, "device": weight.device}
        xpad = torch.zeros(spec.mb, hp, wp, spec.ic, **ws)  # NHWC; a kept zero border
        blocks = tile_blocks(spec.mb, oh, ow, rows)
        cols = torch.empty(max(b.tiles for b in blocks), g, crs, **ws)
        sn, sh, sw, sc = xpad.stride()
        shape = (oh, ow, g, kh, kw, cg)
        strides = (spec.sh * sh, spec.sw * sw, cg * sc, spec.dh * sh, spec.dw * sw, sc)

        def gemm(a: torch.Tensor, out: torch.Tensor) -> None:
            """out[pixel, group, k] = Σ a[pixel, group, :] · wt[group, :, k]."""
            if g == 1:
                torch.mm(a.view(-1, crs), wt[0], out=out.view(-1, kg))
            else:
                out.copy_(torch.matmul(a.transpose(0, 1), wt).transpose(0, 1))

        def run(x: torch.Tensor) -> torch.Tensor:
            pad_into(spec, x, xpad.permute(0, 3, 1, 2))
            y = torch.empty(x.shape[0], oh, ow, spec.oc, **ws)
            for blk in blocks:
                bn = blk.images.stop - blk.images.start
                br = blk.rows.stop - blk.rows.start
                with record_function("im2col/unfold"):
                    start = blk.images.start * sn + blk.rows.start * spec.sh * sh
                    taps = xpad.as_strided(
                        (bn, br, *shape[1:]), (sn, *strides), xpad.storage_offset() + start
                    )
                    block = cols[: blk.tiles]
                    block.view(bn, br, *shape[1:]).copy_(taps)
                with record_function("im2col/gemm"):
                    gemm(block, y[blk.images, blk.rows].view(blk.tiles, g, kg))
            return _add_bias(y.permute(0, 3, 1, 2), bias)

        return run

    @staticmethod
    def _pointwise(spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        rows, p = weight.reshape(g, kg, cg), spec.oh * spec.ow
        strided = spec.sh > 1 or spec.sw > 1

        def run(x: torch.Tensor) -> torch.Tensor:
            xp = pad_input(spec, x)
            if strided:
                with record_function("im2col/unfold"):
                    xp = xp[:, :, :: spec.sh, :: spec.sw][:, :, : spec.oh, : spec.ow].contiguous()
            with record_function("im2col/gemm"):
                y = torch.matmul(rows, xp.reshape(xp.shape[0], g, cg, p))
            return _add_bias(y.view(-1, spec.oc, spec.oh, spec.ow), bias)

        return Prepared(
            run, "im2col pointwise", {"columns": [p, cg * g], "images_per_gemm": spec.mb}
        )
