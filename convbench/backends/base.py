"""The backend contract: what every convolution algorithm offers the harness.

A backend knows nothing of timing. ``prepare`` does the one-off work (weight transforms, plans,
autotuning) and returns the callable that is timed, the way oneDNN and cuDNN separate primitive
creation from execution.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from convbench.spec import ConvSpec

__all__ = ["Backend", "Prepared", "UnsupportedConfig", "conv_input", "device_reason"]


class UnsupportedConfig(ValueError):
    """A combination a backend cannot compute; its message says why."""


@dataclass
class Prepared:
    """The timed callable and what the backend can say about how it computes."""

    fn: Callable[[torch.Tensor], torch.Tensor]
    algorithm: str = ""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


@runtime_checkable
class Backend(Protocol):
    name: str
    description: str

    def supports(self, spec: ConvSpec, device: str, dtype: torch.dtype) -> str | None:
        """``None`` if the backend can compute the case, else the reason it cannot."""

    def prepare(self, spec: ConvSpec, weight: torch.Tensor, bias: torch.Tensor | None) -> Prepared:
        """One-off work for ``spec``; returns the callable mapping input to output."""

    def tolerance(self, dtype: torch.dtype, device: str) -> float:
        """The largest relative L2 error against the float64 reference that is still correct."""


def device_reason(device: str) -> str | None:
    """Why ``device`` cannot run torch code here, or ``None`` if it can."""
    if device == "cpu":
        return None
    if device == "cuda":
        return None if torch.cuda.is_available() else "CUDA is not available on this machine"
    return f"unknown device {device!r}"


def conv_input(spec: ConvSpec, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
    """The input and the symmetric padding to hand ``F.conv2d`` for ``spec``.

    When torch's symmetric padding expresses the problem, the input is returned untouched; else
    it is padded (or cropped, for negative padding) explicitly with ``F.pad`` and the
    convolution sees a plain "valid" problem.
    """
    sym = spec.symmetric_padding
    if sym is not None:
        return x, sym
    return F.pad(x, (spec.pw, spec.pw_r, spec.ph, spec.ph_r)), (0, 0)
