"""``torch``: ``torch.nn.functional.conv2d`` as shipped — oneDNN on the CPU, cuDNN on CUDA."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convbench.backends.base import Prepared, conv_input, device_reason
from convbench.spec import ConvSpec

_TOLERANCE = {
    torch.float64: 1e-12,
    torch.float32: 1e-5,
    torch.float16: 5e-3,
    torch.bfloat16: 3e-2,
}


def select_algorithm(
    spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> str:
    """The convolution path torch will dispatch to (``Mkldnn``, ``Slow2d``, ``Cudnn``, ...)."""
    x, padding = conv_input(spec, x)
    try:
        chosen = torch._C._select_conv_backend(
            x,
            weight,
            bias,
            [spec.sh, spec.sw],
            list(padding),
            [spec.dh, spec.dw],
            False,
            [0, 0],
            spec.g,
        )
    except (AttributeError, RuntimeError, TypeError):
        return ""
    return str(chosen).rsplit(".", 1)[-1]


class TorchBackend:
    name = "torch"
    description = "torch.nn.functional.conv2d (oneDNN on CPU, cuDNN on CUDA)"

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        if dtype not in _TOLERANCE:
            return f"dtype {dtype} is not a floating-point type torch convolves"
        return device_reason(device)

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        tol = _TOLERANCE[dtype]
        if device == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32:
            # TF32 keeps 10 mantissa bits: errors of the order of 2^-11 per product.
            tol = 5e-3
        return tol

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        stride, dilation, groups = (spec.sh, spec.sw), (spec.dh, spec.dw), spec.g
        sym = spec.symmetric_padding
        probe = torch.empty(spec.input_shape, dtype=weight.dtype, device=weight.device)
        algorithm = select_algorithm(spec, probe, weight, bias)
        if sym is not None:

            def run(x: torch.Tensor) -> torch.Tensor:
                return F.conv2d(x, weight, bias, stride, sym, dilation, groups)
        else:

            def run(x: torch.Tensor) -> torch.Tensor:
                xp, _ = conv_input(spec, x)
                return F.conv2d(xp, weight, bias, stride, 0, dilation, groups)

        return Prepared(run, algorithm)
