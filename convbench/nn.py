"""``convbench.nn.Conv2d``, a drop-in ``torch.nn.Conv2d`` computed by a chosen backend, and
``convbench.convert``, which swaps every ``nn.Conv2d`` of a model for one.

The module has ``nn.Conv2d``'s arguments, parameters and ``state_dict``, so a trained model's
weights load into it unchanged. Its forward runs the backend's prepared call: the one-off work
(weight transforms, FFT plans, the backend's own tuning) is done once per input shape and weight
version, and again when the weights change in place (``load_state_dict``, ``copy_``) or are
replaced. ``backend="auto"`` takes, per input shape, what a tuning table chose for this problem,
device and dtype (torch where the table has no entry).

Inference only: with autograd on (outside ``torch.no_grad``/``torch.inference_mode``, on a
tensor that requires grad) it runs torch's own convolution, which autograd can differentiate,
and says so once. Where the backend declines a problem (Winograd on a strided layer, say), it
falls back to torch and says so once per reason.
"""

from __future__ import annotations

import copy
import dataclasses
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path

import torch

from convbench import backends
from convbench.backends.base import Prepared
from convbench.functional import Problem, problem
from convbench.spec import ConvSpec
from convbench.tuning import Table

__all__ = ["Conv2d", "Conversion", "LayerChoice", "convert"]

BASELINE = "torch"
SHAPES = 8  # prepared calls kept per module (one per input shape), least recently used dropped


@dataclass(frozen=True)
class LayerChoice:
    """What a layer computed its last input with, and why."""

    path: str
    spec: ConvSpec | None  # None: the layer has not run yet
    backend: str
    why: str


@dataclass(frozen=True)
class _Entry:
    """A prepared call (``None``: torch computes it), the input (shape, dtype, device) and the
    weights it was prepared for."""

    key: tuple
    weights: tuple
    problem: Problem
    call: Prepared | None
    backend: str
    why: str


@dataclass
class _State:
    prepared: OrderedDict[tuple, _Entry] = field(default_factory=OrderedDict)
    said: set[str] = field(default_factory=set)
    last: _Entry | None = None


def _table(table: Table | str | Path | None) -> Table | None:
    return table if table is None or isinstance(table, Table) else Table.load(table)


class Conv2d(torch.nn.Conv2d):
    """``torch.nn.Conv2d`` with ``backend=`` (a backend's name, or ``"auto"`` with ``table=``).
    See the module's docstring."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, ...],
        stride: int | tuple[int, ...] = 1,
        padding: str | int | tuple[int, ...] = 0,
        dilation: int | tuple[int, ...] = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        *,
        backend: str = BASELINE,
        table: Table | str | Path | None = None,
    ) -> None:
        super().__init__(
            in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias,
            padding_mode, device, dtype,
        )  # fmt: skip
        self.set_backend(backend, table)

    def set_backend(self, backend: str = BASELINE, table: Table | str | Path | None = None) -> None:
        """Compute with ``backend`` from now on (prepared calls are made anew)."""
        self.table = _table(table)
        if backend == "auto":
            if self.table is None:
                raise ValueError("backend='auto' needs a tuning table (table=...)")
        else:
            backends.get(backend)  # a KeyError that lists the known names
        self.backend = backend
        # Plain attributes of a plain object: what forward reads and writes on every call stays
        # clear of nn.Module's attribute machinery, which costs microseconds a call.
        self._state = _State()

    @property
    def last(self) -> LayerChoice:
        """What the last input was computed with, and why."""
        e = self._state.last
        if e is None:
            return LayerChoice("", None, self.backend, "not run yet")
        return LayerChoice("", e.problem.spec, e.backend, e.why)

    @classmethod
    def from_conv(
        cls, conv: torch.nn.Conv2d, backend: str = BASELINE, table: Table | str | Path | None = None
    ) -> Conv2d:
        """A ``Conv2d`` with ``conv``'s arguments that shares its parameters."""
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, conv.padding_mode, device="meta",
            backend=backend, table=table,
        )  # fmt: skip
        new.weight, new.bias = conv.weight, conv.bias
        return new.train(conv.training)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", backend={self.backend!r}"

    def _say(self, message: str) -> None:
        if message not in self._state.said:
            self._state.said.add(message)
            warnings.warn(message, stacklevel=3)

    def _choose(self, spec: ConvSpec, x: torch.Tensor) -> tuple[str, str]:
        """The backend for ``spec`` and why: the fixed one, or the table's choice."""
        if self.backend != "auto":
            return self.backend, "given"
        dtype = str(x.dtype).removeprefix("torch.")
        found = self.table.lookup(spec, x.device.type, dtype)  # type: ignore[union-attr]
        if found is None:
            return BASELINE, "not in the table"
        return found.backend, found.why

    def _call_for(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> _Entry | None:
        """The prepared call for this input's shape and the weights as they are now (``None``:
        an empty batch, nothing to compute). The last call's entry is checked first: a network
        calls each layer with one shape, and every microsecond here is paid on every call."""
        key = (x.shape, x.dtype, x.device)
        weights = (w.data_ptr(), w._version, w.shape) + (
            () if b is None else (b.data_ptr(), b._version)
        )
        state = self._state
        last = state.last
        if last is not None and last.key == key and last.weights == weights:
            return last
        prepared = state.prepared
        entry = prepared.get(key)
        if entry is not None and entry.weights == weights:
            prepared.move_to_end(key)
            return entry
        p = entry.problem if entry is not None else self._problem_of(x)
        if p is None:
            return None
        name, why = self._choose(p.spec, x)
        call = None
        if name != BASELINE:
            impl = backends.get(name)
            reason = impl.supports(p.spec, x.device.type, x.dtype)
            if reason:
                self._say(
                    f"convbench: {name} declines {p.spec.format()}: {reason}; torch computes it"
                )
                name, why = BASELINE, f"{impl.name} declines it: {reason}"
            else:
                call = impl.prepare(p.spec, w.detach(), _detached(b))
        prepared[key] = entry = _Entry(key, weights, p, call, name, why)
        prepared.move_to_end(key)
        while len(prepared) > SHAPES:
            prepared.popitem(last=False)
        return entry

    def _problem_of(self, x: torch.Tensor) -> Problem | None:
        return problem(
            x, self.weight, self.bias, self.stride, self.padding, self.dilation, self.groups,
            self.padding_mode,
        )  # fmt: skip

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        # The parameters straight from their dictionary: nn.Module's attribute lookup costs
        # 0.6 µs a read. A parametrized weight is not in it and is read the slow way.
        params = self._parameters
        w = params.get("weight")
        if w is None:
            w = self.weight
        b = params["bias"] if "bias" in params else self.bias
        if torch.is_grad_enabled() and (
            input.requires_grad or w.requires_grad or (b is not None and b.requires_grad)
        ):
            self._say(
                "convbench.nn.Conv2d computes inference only: with autograd on, torch's own "
                "convolution runs (use torch.no_grad() or torch.inference_mode())"
            )
            return self._conv_forward(input, w, b)
        entry = self._call_for(input, w, b)
        if entry is None:
            return self._conv_forward(input, w, b)
        self._state.last = entry
        if entry.call is None:
            return self._conv_forward(input, w, b)
        return entry.problem.output(entry.call(entry.problem.input(input)))


def _detached(t: torch.Tensor | None) -> torch.Tensor | None:
    return None if t is None else t.detach()


@dataclass
class Conversion:
    """A converted model and its convbench layers by path; ``choices`` says what each computed
    its last input with."""

    model: torch.nn.Module
    layers: dict[str, Conv2d]

    @property
    def choices(self) -> list[LayerChoice]:
        return [dataclasses.replace(m.last, path=path) for path, m in self.layers.items()]


def convert(
    model: torch.nn.Module,
    *,
    table: Table | str | Path | None = None,
    backend: str | None = None,
    inplace: bool = False,
    example: torch.Tensor | None = None,
) -> Conversion:
    """Swap every ``nn.Conv2d`` of ``model`` (a copy unless ``inplace``) for a
    :class:`Conv2d` computing with ``backend``, or with the table's choice per problem
    (``table`` alone: ``backend="auto"``). With ``example``, the model runs it once (no grad),
    which prepares every layer and fills in ``choices``."""
    if backend is None:
        backend = "auto" if table is not None else BASELINE
    if isinstance(model, torch.nn.Conv2d):
        raise ValueError("convert swaps the Conv2d layers inside a model; wrap a lone Conv2d")
    table = _table(table)
    target = model if inplace else copy.deepcopy(model)
    layers: dict[str, Conv2d] = {}
    for path, child in list(target.named_modules()):
        if isinstance(child, torch.nn.Conv2d):
            parent, _, attr = path.rpartition(".")
            layers[path] = Conv2d.from_conv(child, backend, table)
            setattr(target.get_submodule(parent), attr, layers[path])
    if example is not None:
        with torch.no_grad():
            target(example)
    return Conversion(target, layers)
