"""``convbench.conv2d``: ``torch.nn.functional.conv2d``, computed by a chosen backend."""

from __future__ import annotations

import operator
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from convbench import backends
from convbench.backends.base import UnsupportedConfig
from convbench.spec import PADDING_MODES, ConvSpec

__all__ = ["Problem", "conv2d", "problem"]

# What F.conv2d takes for stride, padding and dilation: an integer (int, numpy integer, integer
# tensor of one element) or a sequence (tuple, list, torch.Size) of one or two of them.
IntArg = int | Sequence[int]


def _pair(v: IntArg) -> tuple[int, int]:
    """``v`` as (height, width), by torch's rule: a single value serves both dimensions.

    Only for values torch has accepted, so a sequence holds one or two integers.
    """
    values = [operator.index(e) for e in v] if isinstance(v, Sequence) else [operator.index(v)]
    return values[0], values[-1]


def _explicit_padding(
    padding: str | IntArg, kernel: Sequence[int], dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) as torch applies it; ``'same'`` puts the odd row last."""
    if isinstance(padding, str):  # torch accepted it: "same" or "valid"
        th, tw = (
            d * (k - 1) if padding == "same" else 0 for d, k in zip(dilation, kernel, strict=True)
        )
        return th // 2, th - th // 2, tw // 2, tw - tw // 2
    ph, pw = _pair(padding)
    return ph, ph, pw, pw


def _probe(input: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """An input that ``F.conv2d`` checks as it checks ``input``, at no cost: an empty batch of
    ``input``'s samples, on its device, in its dtype.

    Torch checks every argument against an empty batch (ranks, lengths and signs of stride,
    padding and dilation, groups, channels, bias, kernel against padded input) and then returns
    an empty output without computing. Meta tensors would not do: their conv2d skips most of
    these checks. A non-tensor, a wrong rank or an empty kernel torch rejects before computing
    anything (with an empty batch, an empty kernel would fail in an IndexError instead), so
    those go to it as they are.
    """
    if not isinstance(input, torch.Tensor) or input.dim() not in (3, 4):
        return input
    if isinstance(weight, torch.Tensor) and 0 in weight.shape[2:]:
        return input
    return (input if input.dim() == 4 else input.unsqueeze(0))[:0]


def _check_as_kernels_do(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    dilation: tuple[int, int],
) -> None:
    """The checks torch leaves to its convolution kernels, which an empty batch never reaches.

    Each raises the RuntimeError torch raises; for mixed dtypes or devices with the message of
    torch's device-independent check (the CPU kernel's reads "expected scalar type ...")."""
    if min(dilation) < 1:
        raise RuntimeError(f"dilation should be greater than zero, but got {list(dilation)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and (t.dtype, t.device) != (input.dtype, input.device):
            raise RuntimeError(
                f"Input type ({input.type()}) and {name} type ({t.type()}) should be the same"
            )


@dataclass(frozen=True)
class Problem:
    """One ``F.conv2d`` call as a backend computes it: its problem, and what becomes of the
    input on the way (a batch dimension added, padding applied up front)."""

    spec: ConvSpec
    batched: bool
    pad: tuple[int, int, int, int] | None = None  # (left, right, top, bottom), applied first
    mode: str = "constant"

    def input(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as the backend takes it."""
        if not self.batched:
            x = x.unsqueeze(0)
        return x if self.pad is None else F.pad(x, self.pad, mode=self.mode)

    def output(self, y: torch.Tensor) -> torch.Tensor:
        """The backend's output as torch's has it: unbatched for an unbatched input. Its memory
        layout stays the backend's (Winograd and im2col compute channels-last): copied back to
        contiguous, VGG-16's chain of Winograd layers at minibatch 8 went from 1.58x torch to
        0.89x, as every layer then transposed its output and the next its input."""
        return y if self.batched else y.squeeze(0)


def problem(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntArg = 1,
    padding: str | IntArg = 0,
    dilation: IntArg = 1,
    groups: int = 1,
    padding_mode: str = "zeros",
) -> Problem | None:
    """The problem ``F.conv2d(input, weight, bias, stride, padding, dilation, groups)`` (with
    ``nn.Conv2d``'s ``padding_mode``) poses, after torch itself has checked the arguments (see
    :func:`_probe`), so invalid ones raise the exception type torch raises. ``None`` for an
    empty batch, which has nothing to compute."""
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    probe = _probe(input, weight)
    out = F.conv2d(probe, weight, bias, stride, padding, dilation, groups)  # type: ignore[arg-type]
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    kh, kw = weight.shape[2:]
    top, bottom, left, right = _explicit_padding(padding, (kh, kw), (dh, dw))
    if padding_mode != "zeros":  # torch's limits on reflecting and wrapping around
        F.pad(probe, (left, right, top, bottom), mode=padding_mode)
    batched = input.dim() == 4
    if batched and len(input) == 0:
        return None
    _check_as_kernels_do(input, weight, bias, (dh, dw))
    n, c, ih, iw = input.shape if batched else (1, *input.shape)
    oh, ow = out.shape[-2:]
    pad = None
    mode = "constant" if padding_mode == "zeros" else padding_mode
    if top > (oh - 1) * sh + (kh - 1) * dh or left > (ow - 1) * sw + (kw - 1) * dw:
        # Every output reads the top (left) padding alone: a ConvSpec cannot describe that (it
        # would crop the whole input away), but padded first, it is a plain "valid" problem.
        pad = (left, right, top, bottom)
        ih, iw = ih + top + bottom, iw + left + right
        top, left, padding_mode = 0, 0, "zeros"
    spec = ConvSpec(
        mb=n, g=operator.index(groups), ic=c, ih=ih, iw=iw, oc=weight.shape[0], oh=oh, ow=ow,
        kh=kh, kw=kw, sh=sh, sw=sw, ph=top, pw=left,
        dh=dh, dw=dw, bias=bias is not None, padding_mode=padding_mode,
    )  # fmt: skip
    return Problem(spec, batched, pad, mode)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntArg = 1,
    padding: str | IntArg = 0,
    dilation: IntArg = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    backend: str = "torch",
) -> torch.Tensor:
    """What ``torch.nn.functional.conv2d`` returns (plus ``nn.Conv2d``'s ``padding_mode``), as
    computed by ``backend`` — same shape, dtype and device.

    Arguments take every form ``F.conv2d`` takes, and torch itself checks them first (see
    :func:`problem`), so invalid ones raise the exception type torch raises; only then are
    they read. A ``padding_mode`` other than ``"zeros"`` pads in that mode and then convolves
    without padding, as ``nn.Conv2d`` does. An empty batch gives torch's empty output. A
    backend that cannot compute the problem raises :class:`convbench.UnsupportedConfig` saying
    why. Each call prepares the backend anew (weight transforms included); to time the
    prepared call alone, use the harness.
    """
    try:
        impl = backends.get(backend)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    p = problem(input, weight, bias, stride, padding, dilation, groups, padding_mode)
    if p is None:
        return F.conv2d(input, weight, bias, stride, padding, dilation, groups)  # type: ignore[arg-type]
    reason = impl.supports(p.spec, input.device.type, input.dtype)
    if reason:
        raise UnsupportedConfig(f"{backend}: {reason}")
    return p.output(impl.prepare(p.spec, weight, bias)(p.input(input)))
