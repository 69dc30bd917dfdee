"""``torch``: ``torch.nn.functional.conv2d`` as shipped — oneDNN on the CPU, cuDNN on CUDA —
and ``torch-cudnn-autotune``, the same with cuDNN's autotuner on."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convbench.backends.base import (
    FLOAT_TOLERANCE,
    GEMM_UNITS,
    Prepared,
    conv_input,
    device_reason,
    dtype_reason,
    pad_input,
    unit_roundoff,
    zero_symmetric_padding,
)
from convbench.spec import ConvSpec


def select_algorithm(
    spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> str:
    """The convolution path torch will dispatch to (``Mkldnn``, ``Slow2d``, ``Cudnn``, ...)."""
    x, padding = conv_input(spec, x)
    try:
        chosen = torch._C._select_conv_backend(
            x, weight, bias, [spec.sh, spec.sw], list(padding), [spec.dh, spec.dw],
            False, [0, 0], spec.g,
        )  # fmt: skip
    except (AttributeError, RuntimeError, TypeError):
        return ""
    return str(chosen).rsplit(".", 1)[-1]


def tf32_in_use(device: str, dtype: torch.dtype) -> bool:
    """Whether cuDNN may round float32 convolution inputs to TF32 (10-bit mantissa)."""
    return device == "cuda" and dtype == torch.float32 and torch.backends.cudnn.allow_tf32


class TorchBackend:
    name = "torch"
    description = "torch.nn.functional.conv2d (oneDNN on CPU, cuDNN on CUDA)"

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        return dtype_reason(dtype, tuple(FLOAT_TOLERANCE)) or device_reason(device)

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        """On the CPU, GEMM_UNITS: oneDNN sums in GEMM-like blocks, and in float64 torch takes
        its own im2col + GEMM, the reference's path (an error of exactly 0). TF32 keeps 10
        mantissa bits: errors of the order of 2^-11 per product."""
        if tf32_in_use(device, dtype):
            return 5e-3
        if device != "cpu":
            return FLOAT_TOLERANCE[dtype]
        return GEMM_UNITS[dtype] * unit_roundoff(dtype)

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        stride, dilation, groups = (spec.sh, spec.sw), (spec.dh, spec.dw), spec.g
        sym = zero_symmetric_padding(spec)
        probe = torch.empty(spec.input_shape, dtype=weight.dtype, device=weight.device)
        algorithm = select_algorithm(spec, probe, weight, bias)
        tf32 = tf32_in_use(weight.device.type, weight.dtype)
        if sym is not None:

            def run(x: torch.Tensor) -> torch.Tensor:
                return F.conv2d(x, weight, bias, stride, sym, dilation, groups)
        else:

            def run(x: torch.Tensor) -> torch.Tensor:
                return F.conv2d(pad_input(spec, x), weight, bias, stride, 0, dilation, groups)

        return Prepared(run, algorithm, {"tf32": tf32} if weight.is_cuda else {})


class TorchCudnnAutotuneBackend(TorchBackend):
    name = "torch-cudnn-autotune"
    description = "conv2d with torch.backends.cudnn.benchmark on: cuDNN times its algorithms"

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        if device != "cuda":
            return "cuDNN autotuning needs a CUDA device"
        return super().supports(spec, device, dtype)

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        base = super().prepare(spec, weight, bias)

        def run(x: torch.Tensor) -> torch.Tensor:
            before = torch.backends.cudnn.benchmark
            torch.backends.cudnn.benchmark = True
            try:
                return base.fn(x)
            finally:
                torch.backends.cudnn.benchmark = before

        # The autotuner runs on the first call of a shape: make that part of prepare.
        run(torch.randn(spec.input_shape, dtype=weight.dtype, device=weight.device))
        return Prepared(run, base.algorithm, {**base.params, "cudnn_benchmark": True})
