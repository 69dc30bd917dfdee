"""Seeded inputs for a problem, drawn once in float64 on the CPU.

Every backend, dtype and device of a case sees the same numbers (cast from these), and the
float64 reference is computed from them too — so errors measure the algorithm and the dtype,
never a difference in inputs. Never zeros: a zero input hides every indexing bug.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from convbench.spec import ConvSpec

__all__ = ["FILLS", "Inputs", "make_inputs"]


@dataclass(frozen=True)
class Inputs:
    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor | None

    def to(self, device: str, dtype: torch.dtype) -> Inputs:
        def cast(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device=device, dtype=dtype).contiguous()

        return Inputs(cast(self.x), cast(self.weight), cast(self.bias))  # type: ignore[arg-type]


def _randn(spec: ConvSpec, seed: int) -> Inputs:
    gen = torch.Generator().manual_seed(seed)

    def draw(shape: tuple[int, ...]) -> torch.Tensor:
        return torch.randn(shape, generator=gen, dtype=torch.float64)

    return Inputs(
        draw(spec.input_shape), draw(spec.weight_shape), draw((spec.oc,)) if spec.bias else None
    )


def _seed_example(spec: ConvSpec, seed: int) -> Inputs:
    """The worked example: input holding 1..H·W row by row, every kernel row ``[1, 0, -1]``."""
    del seed
    x = torch.arange(1, spec.mb * spec.ic * spec.ih * spec.iw + 1, dtype=torch.float64)
    w = torch.zeros(spec.weight_shape, dtype=torch.float64)
    w[..., 0], w[..., -1] = 1.0, -1.0
    bias = torch.zeros(spec.oc, dtype=torch.float64) if spec.bias else None
    return Inputs(x.reshape(spec.input_shape), w, bias)


FILLS = {"randn": _randn, "seed": _seed_example}


def make_inputs(spec: ConvSpec, fill: str = "randn", seed: int = 0) -> Inputs:
    try:
        return FILLS[fill](spec, seed)
    except KeyError:
        raise ValueError(f"unknown fill {fill!r} (known: {', '.join(FILLS)})") from None
