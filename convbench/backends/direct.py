"""Direct convolution: the definition itself (``direct``) and unfold + GEMM (``im2col``).

Both see the plain "valid" problem that :func:`pad_input` makes (padding modes, asymmetric and
negative padding done once, up front) and handle groups as a batched GEMM over groups.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch
from torch.profiler import record_function

from convbench.backends.base import (
    FLOAT_TOLERANCE,
    GEMM_UNITS,
    Prepared,
    device_reason,
    dtype_reason,
    pad_input,
    pad_into,
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
    """Unfold the input into columns (one row per output pixel, C/g·R·S entries), then GEMM.

    Channels innermost (NHWC) throughout: the padded input is written once into a
    channels-last buffer, so the unfolding copies whole channel vectors and each GEMM,
    [pixels × C·R·S]·[C·R·S × K], yields the output in channels-last order, returned as an
    NCHW view (torch's own channels-last layout). Columns are made for a few images at a time
    into a buffer kept from call to call: enough rows for an efficient GEMM, few enough to
    stay in cache. A 1×1 stride-1 problem needs no columns: they are the input itself, and it
    is multiplied as it lies (NCHW), which spares the two layout changes.
    """

    name = "im2col"
    description = "unfold (im2col, channels-last) + GEMM over a few images at a time"
    # Pixels per GEMM to aim for: far fewer make an inefficient GEMM, far more leave the cache.
    TARGET_ROWS = 2048

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        kh, kw, oh, ow = spec.kh, spec.kw, spec.oh, spec.ow
        crs, p = cg * kh * kw, oh * ow
        # (G, R·S·C/g, K/g): each group's weights in the columns' (r, s, c) order.
        wt = weight.reshape(g, kg, cg, kh, kw).permute(0, 3, 4, 2, 1).reshape(g, crs, kg)
        wt = wt.contiguous()
        hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
        pointwise = kh == kw == spec.sh == spec.sw == 1
        if pointwise:
            return self._pointwise(spec, weight, bias)
        chunk = max(1, min(spec.mb, self.TARGET_ROWS // p))
        ws = {"dtype": weight.dtype, "device": weight.device}
        xpad = torch.zeros(spec.mb, hp, wp, spec.ic, **ws)  # NHWC; a kept zero border
        cols = torch.empty(chunk * p, g, crs, **ws)

        def gemm(a: torch.Tensor, out: torch.Tensor) -> None:
            """out[pixel, group, k] = Σ a[pixel, group, :] · wt[group, :, k]."""
            if g == 1:
                torch.mm(a.view(-1, crs), wt[0], out=out.view(-1, kg))
            else:
                out.copy_(torch.matmul(a.transpose(0, 1), wt).transpose(0, 1))

        def run(x: torch.Tensor) -> torch.Tensor:
            n = x.shape[0]
            pad_into(spec, x, xpad.permute(0, 3, 1, 2))
            y = torch.empty(n, oh, ow, spec.oc, **ws)
            sn, sh, sw, sc = xpad.stride()
            for i in range(0, n, chunk):
                b = min(chunk, n - i)
                with record_function("im2col/unfold"):
                    taps = xpad.as_strided(
                        (b, oh, ow, g, kh, kw, cg),
                        (sn, spec.sh * sh, spec.sw * sw, cg * sc, spec.dh * sh, spec.dw * sw, sc),
                        xpad.storage_offset() + i * sn,
                    )
                    block = cols[: b * p]
                    block.view(b, oh, ow, g, kh, kw, cg).copy_(taps)
                with record_function("im2col/gemm"):
                    gemm(block, y[i : i + b].view(b * p, g, kg))
            return _add_bias(y.permute(0, 3, 1, 2), bias)

        return Prepared(run, "im2col", {"columns": [chunk * p, crs * g], "images_per_gemm": chunk})

    @staticmethod
    def _pointwise(spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        rows, p = weight.reshape(g, kg, cg), spec.oh * spec.ow

        def run(x: torch.Tensor) -> torch.Tensor:
            xp = pad_input(spec, x)
            with record_function("im2col/gemm"):
                y = torch.matmul(rows, xp.reshape(xp.shape[0], g, cg, p))
            return _add_bias(y.view(-1, spec.oc, spec.oh, spec.ow), bias)

        return Prepared(run, "im2col", {"columns": [p, cg * g], "images_per_gemm": spec.mb})
