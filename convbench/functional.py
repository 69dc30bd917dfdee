"""``convbench.conv2d``: ``torch.nn.functional.conv2d``, computed by a chosen backend."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from convbench import backends
from convbench.backends.base import UnsupportedConfig
from convbench.spec import PADDING_MODES, ConvSpec

__all__ = ["conv2d"]

IntPair = int | tuple[int, int]


def _pair(v: IntPair) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _explicit_padding(
    padding: str | IntPair, weight: torch.Tensor, dilation: tuple[int, int]
) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) as torch applies it; ``'same'`` puts the odd row last."""
    if padding == "valid":
        return (0, 0, 0, 0)
    if padding == "same":
        out = []
        for d, k in zip(dilation, weight.shape[-2:], strict=True):
            total = d * (k - 1)
            out += [total // 2, total - total // 2]
        return tuple(out)  # type: ignore[return-value]
    ph, pw = _pair(padding)  # type: ignore[arg-type]
    return (ph, ph, pw, pw)


def conv2d(
    input: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: IntPair = 1,
    padding: str | IntPair = 0,
    dilation: IntPair = 1,
    groups: int = 1,
    *,
    padding_mode: str = "zeros",
    backend: str = "torch",
) -> torch.Tensor:
    """What ``torch.nn.functional.conv2d`` returns (plus ``nn.Conv2d``'s ``padding_mode``), as
    computed by ``backend`` — same shape, dtype and device.

    Arguments are checked by torch itself, on meta tensors, so invalid ones raise the errors
    torch would raise. A backend that cannot compute the problem raises
    :class:`convbench.UnsupportedConfig` saying why. Each call prepares the backend anew
    (weight transforms included); to time the prepared call alone, use the harness.
    """
    if padding_mode not in PADDING_MODES:
        raise ValueError(f"padding_mode must be one of {PADDING_MODES}, got {padding_mode!r}")
    try:
        impl = backends.get(backend)
    except KeyError as exc:
        raise ValueError(exc.args[0]) from None
    batched = input.dim() == 4
    meta = input.to("meta")
    meta_w, meta_b = weight.to("meta"), None if bias is None else bias.to("meta")
    if padding_mode == "zeros":
        out = F.conv2d(meta, meta_w, meta_b, stride, padding, dilation, groups)  # type: ignore[arg-type]
    else:  # as nn.Conv2d does it: pad in the mode, then a "valid" convolution
        top, bottom, left, right = _explicit_padding(padding, weight, _pair(dilation))
        padded = F.pad(meta, (left, right, top, bottom), mode=padding_mode)
        out = F.conv2d(padded, meta_w, meta_b, stride, 0, dilation, groups)
    if not batched:
        input, out = input.unsqueeze(0), out.unsqueeze(0)
    (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
    top, _, left, _ = _explicit_padding(padding, weight, (dh, dw))
    n, c, ih, iw = input.shape
    spec = ConvSpec(
        mb=n, g=groups, ic=c, ih=ih, iw=iw, oc=weight.shape[0], oh=out.shape[2],
        ow=out.shape[3], kh=weight.shape[2], kw=weight.shape[3], sh=sh, sw=sw, ph=top,
        pw=left, dh=dh, dw=dw, bias=bias is not None, padding_mode=padding_mode,
    )  # fmt: skip
    reason = impl.supports(spec, input.device.type, input.dtype)
    if reason:
        raise UnsupportedConfig(f"{backend}: {reason}")
    y = impl.prepare(spec, weight, bias)(input)
    return y if batched else y.squeeze(0)
