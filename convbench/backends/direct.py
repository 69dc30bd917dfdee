"""Direct convolution: the definition itself (``direct``) and unfold + GEMM (``im2col``).

Both see the plain "valid" problem that :func:`pad_input` makes (padding modes, asymmetric and
negative padding done once, up front) and handle groups as a batched GEMM over groups.
"""

from __future__ import annotations

import torch
from torch.profiler import record_function

from convbench.backends.base import (
    FLOAT_TOLERANCE,
    Prepared,
    device_reason,
    dtype_reason,
    pad_input,
    pad_into,
)
from convbench.spec import ConvSpec

__all__ = ["DirectBackend", "Im2colBackend"]


def _add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return y if bias is None else y.add_(bias.view(1, -1, 1, 1))


class _DirectFamily:
    """What direct algorithms share: every float dtype, every device, the plain tolerance."""

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        return dtype_reason(dtype, tuple(FLOAT_TOLERANCE)) or device_reason(device)

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        return FLOAT_TOLERANCE[dtype]


class DirectBackend(_DirectFamily):
    """y = Σ over kernel taps (r, s) of W[:, :, r, s] · x shifted by (r·dh, s·dw), strided.

    One GEMM per tap over a strided view of the input: the textbook sum, in tensor operations,
    written independently of torch's convolution so that it can check it.
    """

    name = "direct"
    description = "the definition: one GEMM per kernel tap over a shifted, strided input view"

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
    """Unfold the input into columns (C/g·R·S rows, one column per output pixel), then GEMM.

    The columns are one strided copy of the padded input (a view with the kernel taps as extra
    dimensions), made for a few images at a time into a buffer kept from call to call: enough
    columns for an efficient GEMM, few enough to stay in cache. A 1×1 stride-1 problem needs
    no columns: they are the input itself.
    """

    name = "im2col"
    description = "unfold (im2col) + GEMM over a few images at a time; groups batched"
    # Columns per GEMM to aim for: below ~1500 the GEMM is inefficient, far above it the
    # column buffer leaves the cache.
    TARGET_COLUMNS = 2048

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        g, kg, cg = spec.g, spec.oc // spec.g, spec.ic // spec.g
        crs, p = cg * spec.kh * spec.kw, spec.oh * spec.ow
        rows = weight.reshape(g, kg, crs)
        pointwise = spec.kh == spec.kw == spec.sh == spec.sw == 1
        chunk = max(1, min(spec.mb, self.TARGET_COLUMNS // p))
        cols = None if pointwise else weight.new_empty(g, crs, chunk * p)
        yt = None if pointwise or chunk == 1 else weight.new_empty(g, kg, chunk * p)
        # A single group is one plain GEMM, which MKL runs faster than a batch of one.
        gemm = (lambda a, b, out: torch.mm(a[0], b[0], out=out[0])) if g == 1 else torch.bmm
        hp, wp = spec.ih + spec.ph + spec.ph_r, spec.iw + spec.pw + spec.pw_r
        padded = (spec.ph, spec.ph_r, spec.pw, spec.pw_r) != (0, 0, 0, 0) or (
            spec.padding_mode != "zeros"
        )
        xpad = weight.new_zeros(spec.mb, spec.ic, hp, wp) if padded and not pointwise else None

        def run(x: torch.Tensor) -> torch.Tensor:
            if xpad is not None:
                pad_into(spec, x, xpad)
            xp = xpad if xpad is not None else pad_input(spec, x)
            n = xp.shape[0]
            if cols is None:  # 1x1, stride 1: one batched GEMM over the input as it lies
                with record_function("im2col/unfold"):
                    image_cols = xp.reshape(n, g, crs, p)
                with record_function("im2col/gemm"):
                    y = torch.matmul(rows, image_cols)
                return _add_bias(y.view(n, spec.oc, spec.oh, spec.ow), bias)
            y = x.new_empty(n, g, kg, p)
            sn, sc, sh, sw = xp.stride()
            for i in range(0, n, chunk):
                b = min(chunk, n - i)
                with record_function("im2col/unfold"):
                    taps = xp[i : i + b].as_strided(
                        (spec.ic, spec.kh, spec.kw, b, spec.oh, spec.ow),
                        (sc, spec.dh * sh, spec.dw * sw, sn, spec.sh * sh, spec.sw * sw),
                        xp.storage_offset() + i * sn,
                    )
                    block = cols[:, :, : b * p]
                    block.view(spec.ic, spec.kh, spec.kw, b, spec.oh, spec.ow).copy_(taps)
                with record_function("im2col/gemm"):
                    if yt is None:
                        gemm(rows, block, out=y[i])
                    else:
                        out = yt[:, :, : b * p]
                        gemm(rows, block, out=out)
                        y[i : i + b].copy_(out.view(g, kg, b, p).permute(2, 0, 1, 3))
            return _add_bias(y.view(n, spec.oc, spec.oh, spec.ow), bias)

        return Prepared(run, "im2col", {"columns": [crs * g, chunk * p], "images_per_gemm": chunk})
