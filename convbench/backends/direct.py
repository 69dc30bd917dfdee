"""Direct convolution: the definition itself (``direct``).

It sees the plain "valid" problem that :func:`pad_input` makes (padding modes, asymmetric and
negative padding done once, up front) and handles groups as a batched GEMM over groups. What it
shares with unfold + GEMM (:mod:`convbench.backends.im2col`) lives here: the dtypes, the
tolerance and the bias.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

import torch

from convbench.backends.base import (
    FLOAT_TOLERANCE,
    GEMM_UNITS,
    Prepared,
    device_reason,
    dtype_reason,
    pad_input,
    stage,
    unit_roundoff,
)
from convbench.spec import ConvSpec

__all__ = ["DirectBackend", "DirectFamily", "add_bias"]


def add_bias(y: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``y`` ((N, C, H, W), any layout, the caller's own) plus the bias in place: no new tensor."""
    return y if bias is None else y.add_(bias.view(1, -1, 1, 1))


class DirectFamily:
    """What direct algorithms share: every float dtype, every device, the GEMM tolerance."""

    # CPU tolerance in units of the dtype's rounding (see GEMM_UNITS for why).
    UNITS: ClassVar[Mapping[torch.dtype, int]] = GEMM_UNITS

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        return dtype_reason(dtype, tuple(FLOAT_TOLERANCE)) or device_reason(device)

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        if device != "cpu":
            return FLOAT_TOLERANCE[dtype]
        return self.UNITS[dtype] * unit_roundoff(dtype)


class DirectBackend(DirectFamily):
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
            with stage("direct/taps"):
                for r in range(spec.kh):
                    top = r * spec.dh
                    rows = slice(top, top + (oh - 1) * sh + 1, sh)
                    for s in range(spec.kw):
                        left = s * spec.dw
                        view = xp[:, :, rows, left : left + (ow - 1) * sw + 1 : sw]
                        term = torch.matmul(taps[r, s], view.reshape(n, g, cg, oh * ow))
                        y = term if y is None else y.add_(term)
            assert y is not None
            return add_bias(y.view(n, spec.oc, oh, ow), bias)

        return Prepared(run, "direct", {"taps": spec.kh * spec.kw})
