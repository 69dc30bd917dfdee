"""Errors of a result against the float64 reference of the same problem."""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["Accuracy", "compare"]


@dataclass(frozen=True)
class Accuracy:
    rel_l2_error: float
    max_abs_error: float


def compare(result: torch.Tensor, reference: torch.Tensor) -> Accuracy:
    """Relative L2 and max-abs error of ``result`` against ``reference``, in float64.

    The relative L2 error is ``||y - ref|| / ||ref||``; a reference of norm zero (which a seeded
    random input never gives) makes it the absolute norm instead, rather than a division by zero.
    Non-finite results give ``inf``.
    """
    if tuple(result.shape) != tuple(reference.shape):
        raise ValueError(
            f"result shape {tuple(result.shape)} differs from the reference "
            f"{tuple(reference.shape)}"
        )
    y = result.detach().to("cpu", torch.float64)
    ref = reference.to("cpu", torch.float64)
    if not torch.isfinite(y).all():
        return Accuracy(float("inf"), float("inf"))
    diff = y - ref
    norm = torch.linalg.vector_norm(ref).item()
    err = torch.linalg.vector_norm(diff).item()
    max_abs = diff.abs().max().item() if diff.numel() else 0.0
    return Accuracy(err / norm if norm > 0 else err, max_abs)
