"""One forward 2-D convolution problem, written as oneDNN benchdnn's problem descriptor.

The descriptor is the lingua franca of convolution benchmarking: a user pastes a line from a
benchdnn shape file and gets the same problem benchdnn would run. So parsing follows benchdnn's
own rules exactly (``tests/benchdnn/conv/conv_aux.cpp``): defaults ``g1 mb2 s1 d0``, dilation
counted from 0, square promotion of the ``h`` values to ``w``, and padding deduced from an
explicit output size with C's truncating division, which can make the bottom/right padding
differ from the top/left one, or be negative (a crop).

Inside convbench, dilation is stored the way torch counts it (1 = none) and the output size is
stored rather than the bottom/right padding, which is derived. Storing the output size makes
equal problems compare equal: a bottom padding row that no output reads changes nothing, and
benchdnn's descriptor cannot express it either.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from pathlib import Path

__all__ = ["BatchLine", "ConvSpec", "SpecError", "UnsupportedProblem", "parse", "read_batch_file"]


class SpecError(ValueError):
    """A descriptor that cannot be read, or a problem that no convolution can have."""


class UnsupportedProblem(SpecError):
    """A valid benchdnn problem that is not a 2-D convolution: a 3-D one of more than one plane."""


_KEYS = "g mb ic id ih iw oc od oh ow kd kh kw sd sh sw pd ph pw dd dh dw".split()
_TOKEN = re.compile(r"(" + "|".join(sorted(_KEYS, key=len, reverse=True)) + r")(-?\d+)")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
_BIAS_DIRS = {"FWD_B": True, "FWD_D": False, "FWD_I": False}


def _c_div(a: int, b: int) -> int:
    """Integer division truncating toward zero, as C does (benchdnn's arithmetic)."""
    q = abs(a) // abs(b)
    return q if (a >= 0) == (b > 0) else -q


@dataclass(frozen=True)
class ConvSpec:
    """A forward convolution problem with the semantics of ``torch.nn.functional.conv2d``.

    ``dh``/``dw`` are torch-style dilations (1 = dense kernel). ``ph``/``pw`` are the top/left
    padding; the bottom/right padding (``ph_r``/``pw_r``) follows from the output size and may
    differ from them, or be negative. ``bias`` says whether the problem adds a bias (benchdnn's
    ``--dir=FWD_B``, its default, versus ``FWD_D``).
    """

    ic: int
    ih: int
    iw: int
    oc: int
    oh: int
    ow: int
    kh: int
    kw: int
    mb: int = 2
    g: int = 1
    sh: int = 1
    sw: int = 1
    ph: int = 0
    pw: int = 0
    dh: int = 1
    dw: int = 1
    bias: bool = True
    padding_mode: str = "zeros"
    name: str = ""

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "bias":
                if not isinstance(value, bool):
                    raise SpecError(f"bias must be True or False, got {value!r}")
            elif f.name == "padding_mode":
                if value not in PADDING_MODES:
                    raise SpecError(
                        f"padding_mode must be one of {', '.join(PADDING_MODES)}, got {value!r}"
                    )
            elif f.name == "name":
                if not isinstance(value, str) or re.search(r"[\s\"'\\#]", value):
                    raise SpecError(
                        f"name must be a string without spaces, quotes, backslashes or '#': "
                        f"{value!r}"
                    )
            elif not isinstance(value, int) or isinstance(value, bool):
                raise SpecError(f"{f.name} must be an integer, got {value!r}")
        for key in ("mb", "g", "ic", "oc", "ih", "iw", "kh", "kw", "sh", "sw", "dh", "dw"):
            if getattr(self, key) < 1:
                raise SpecError(f"{key} must be at least 1, got {getattr(self, key)}")
        if self.ic % self.g:
            raise SpecError(f"ic {self.ic} is not divisible by groups g{self.g}")
        if self.oc % self.g:
            raise SpecError(f"oc {self.oc} is not divisible by groups g{self.g}")
        for axis in "hw":
            o, i = getattr(self, "o" + axis), getattr(self, "i" + axis)
            top, bottom = getattr(self, "p" + axis), getattr(self, f"p{axis}_r")
            if o < 1:
                raise SpecError(f"o{axis} must be at least 1, got {o}")
            if top <= -i or bottom <= -i:
                raise SpecError(
                    f"padding p{axis}={top}, p{axis}_r={bottom} crops away the whole input "
                    f"(i{axis}={i})"
                )
            # The limits torch's F.pad sets: a reflection cannot reach past the far edge.
            limit = {"reflect": i - 1, "circular": i}.get(self.padding_mode)
            if limit is not None and max(top, bottom) > limit:
                raise SpecError(
                    f"{self.padding_mode} padding p{axis}={max(top, bottom)} must be at most "
                    f"{limit} for i{axis}={i}"
                )

    # --- derived geometry -------------------------------------------------------------------

    @property
    def ph_r(self) -> int:
        """Bottom padding: the rows the last output row reads beyond the input (may be < 0)."""
        return (self.oh - 1) * self.sh - self.ih + (self.kh - 1) * self.dh + 1 - self.ph

    @property
    def pw_r(self) -> int:
        """Right padding, as :attr:`ph_r` for the width."""
        return (self.ow - 1) * self.sw - self.iw + (self.kw - 1) * self.dw + 1 - self.pw

    @property
    def symmetric_padding(self) -> tuple[int, int] | None:
        """``(ph, pw)`` when torch's symmetric padding gives this very problem, else ``None``.

        Torch pads both sides equally and drops rows no output reads, so the problem is
        expressible that way when the top padding is non-negative and symmetric padding yields
        the same output size.
        """
        if self.ph < 0 or self.pw < 0:
            return None
        for axis in "hw":
            i, k, s, p, d = (getattr(self, c + axis) for c in "ikspd")
            if (i + 2 * p - (k - 1) * d - 1) // s + 1 != getattr(self, "o" + axis):
                return None
        return (self.ph, self.pw)

    @property
    def input_shape(self) -> tuple[int, int, int, int]:
        return (self.mb, self.ic, self.ih, self.iw)

    @property
    def weight_shape(self) -> tuple[int, int, int, int]:
        return (self.oc, self.ic // self.g, self.kh, self.kw)

    @property
    def output_shape(self) -> tuple[int, int, int, int]:
        return (self.mb, self.oc, self.oh, self.ow)

    @property
    def flops(self) -> int:
        """Direct-equivalent FLOPs, 2·N·K·(C/g)·R·S·OH·OW, whatever the algorithm really does."""
        return 2 * self.mb * self.oc * (self.ic // self.g) * self.kh * self.kw * self.oh * self.ow

    def bytes(self, itemsize: int = 4) -> dict[str, int]:
        """Bytes of each tensor of the problem for an element of ``itemsize`` bytes."""
        n = {
            "input": self.mb * self.ic * self.ih * self.iw,
            "weight": self.oc * (self.ic // self.g) * self.kh * self.kw,
            "bias": self.oc if self.bias else 0,
            "output": self.mb * self.oc * self.oh * self.ow,
        }
        return {k: v * itemsize for k, v in n.items()}

    @property
    def repeat(self) -> int:
        """How often the layer occurs in its network: the ``*N`` ending benchdnn names carry."""
        m = re.search(r"\*(\d+)$", self.name)
        return int(m.group(1)) if m else 1

    def with_mb(self, mb: int) -> ConvSpec:
        return replace(self, mb=mb)

    # --- the descriptor -------------------------------------------------------------------------

    def format(self) -> str:
        """The canonical benchdnn descriptor; ``parse(spec.format()) == spec``."""
        s = (
            f"g{self.g}mb{self.mb}_ic{self.ic}ih{self.ih}iw{self.iw}"
            f"_oc{self.oc}oh{self.oh}ow{self.ow}_kh{self.kh}kw{self.kw}"
            f"_sh{self.sh}sw{self.sw}_ph{self.ph}pw{self.pw}_dh{self.dh - 1}dw{self.dw - 1}"
        )
        if self.name:
            s += f'_n"{self.name}"'
        if self.padding_mode != "zeros":
            s = f"--padding-mode={self.padding_mode} " + s
        return s if self.bias else "--dir=FWD_D " + s

    def __str__(self) -> str:
        return self.format()


def _trivial_depth(values: dict[str, int]) -> bool:
    """Whether a 3-D descriptor's depth is one plane in and out: ``id1kd1``, no depth padding,
    ``od`` absent or 1. Its stride and dilation then touch nothing, and the problem is the 2-D
    one of its other fields (benchdnn's generated ``dilated_2d_*`` files write 2-D problems so)."""
    return (
        values.get("id") == 1
        and values.get("kd") == 1
        and values.get("od", 1) == 1
        and values.get("pd", 0) == 0
    )


def _parse_descriptor(
    desc: str, *, bias: bool = True, mb: int | None = None, padding_mode: str = "zeros"
) -> ConvSpec:
    """Read one descriptor (no options) the way benchdnn's ``str2desc`` does. A 1-D problem
    is read as a 2-D one of height 1, a 3-D one of a single plane as its 2-D problem: the same
    arithmetic, so a shape file's every line that convbench can run is run."""
    values: dict[str, int] = {}
    name = ""
    pos = 0
    while pos < len(desc):
        if desc[pos] == "_":
            pos += 1
            continue
        m = _TOKEN.match(desc, pos)
        if m:
            key, value = m.group(1), int(m.group(2))
            if key in values:
                raise SpecError(f"{key} is given twice in {desc!r}")
            # benchdnn takes no negative value; convbench accepts a negative top/left padding
            # (a crop) so that every ConvSpec, deduced crops included, has a descriptor.
            if value < 0 and key not in ("ph", "pw"):
                raise SpecError(f"{key} must not be negative, got {value} in {desc!r}")
            values[key] = value
            pos = m.end()
            continue
        if desc[pos] == "n":
            name = desc[pos + 1 :]
            if len(name) >= 2 and name[0] == name[-1] and name[0] in "\"'":
                name = name[1:-1]
            break
        raise SpecError(f"cannot read {desc[pos:]!r} in descriptor {desc!r}")

    # benchdnn's test for "this dimension is given": a non-zero size, kernel, output or
    # dilation, a stride other than 1, or a padding of at least 1.
    has = {
        a: any(values.get(k + a, 0) for k in "iokd")
        or values.get("s" + a, 1) != 1
        or values.get("p" + a, 0) >= 1
        for a in "dhw"
    }
    if has["d"] and not _trivial_depth(values):
        raise UnsupportedProblem(f"3-D convolution is not supported: {desc!r}")
    if not has["h"] and not has["w"]:
        raise SpecError(f"no spatial size given: {desc!r}")
    if "ic" not in values or values["ic"] == 0:
        raise SpecError(f"ic must be given and at least 1: {desc!r}")
    if "oc" not in values or values["oc"] == 0:
        raise SpecError(f"oc must be given and at least 1: {desc!r}")

    geo: dict[str, int] = {}
    if not has["h"]:  # 1-D: a row of width iw
        values.update(ih=1, kh=1)
    for axis in "hw" if has["w"] else "h":
        i, k = values.get("i" + axis, 0), values.get("k" + axis, 0)
        s, d = values.get("s" + axis, 1), values.get("d" + axis, 0)
        if s == 0:
            raise SpecError(f"s{axis} must be at least 1: {desc!r}")
        if not i or not k:
            raise SpecError(f"i{axis} and k{axis} must be given and at least 1: {desc!r}")
        eff = (k - 1) * (d + 1) + 1
        o, p = values.get("o" + axis, 0), values.get("p" + axis)
        if not o:
            p = p or 0
            o = _c_div(i - eff + 2 * p, s) + 1
            if o <= 0:
                raise SpecError(
                    f"o{axis} would be {o}: the kernel does not fit the input: {desc!r}"
                )
        elif p is None:
            p = _c_div((o - 1) * s - i + eff, 2)
        geo.update(
            {
                "i" + axis: i,
                "k" + axis: k,
                "s" + axis: s,
                "d" + axis: d + 1,
                "o" + axis: o,
                "p" + axis: p,
            }
        )
    if not has["w"]:
        geo.update({c + "w": geo[c + "h"] for c in "ikosdp"})

    return ConvSpec(
        mb=values.get("mb", 2) if mb is None else mb,
        g=values.get("g", 1),
        ic=values["ic"],
        oc=values["oc"],
        bias=bias,
        padding_mode=padding_mode,
        name=name,
        **geo,
    )


def _apply_option(option: str, state: dict[str, object]) -> None:
    """Apply a benchdnn option convbench understands; the rest (layouts, attributes,
    data types) do not change the mathematical problem and are ignored."""
    key, _, value = option.partition("=")
    if key == "--reset":
        state.clear()
    elif key == "--dir":
        if value.upper() not in _BIAS_DIRS:
            raise SpecError(f"only forward convolution is supported, got --dir={value}")
        state["bias"] = _BIAS_DIRS[value.upper()]
    elif key == "--mb":
        try:
            mb = int(value)
        except ValueError:
            raise SpecError(f"--mb takes an integer, got {value!r}") from None
        if mb < 0:
            raise SpecError(f"--mb must not be negative, got {mb}")
        state["mb"] = mb or None
    elif key == "--padding-mode":
        if value not in PADDING_MODES:
            raise SpecError(
                f"--padding-mode takes one of {', '.join(PADDING_MODES)}, got {value!r}"
            )
        state["padding_mode"] = value


def _split(text: str) -> list[str]:
    try:
        return shlex.split(text, comments=True)
    except ValueError as exc:
        raise SpecError(f"cannot split {text.strip()!r}: {exc}") from None


def _from_tokens(tokens: list[str], state: dict[str, object]) -> list[ConvSpec]:
    """Descriptors and options in argument order: an option applies to what follows it."""
    specs = []
    for token in tokens:
        if token.startswith("--"):
            _apply_option(token, state)
        else:
            specs.append(_parse_descriptor(token, **state))  # type: ignore[arg-type]
    return specs


def parse(text: str) -> ConvSpec:
    """Parse one descriptor, optionally preceded by benchdnn options (``--dir=FWD_D ...``)."""
    specs = _from_tokens(_split(text), {})
    if len(specs) != 1:
        raise SpecError(f"expected one descriptor, found {len(specs)} in {text.strip()!r}")
    return specs[0]


@dataclass(frozen=True)
class BatchLine:
    """One line of a batch file: the spec it holds, or the reason it holds none."""

    path: str
    lineno: int
    text: str
    spec: ConvSpec | None
    error: str | None
    unsupported: bool = False


def iter_batch_file(path: str | Path) -> Iterator[BatchLine]:
    """Every descriptor line of a benchdnn batch file, parsed or with its error.

    Comments and blank lines are skipped; options persist across lines until ``--reset``, as
    in benchdnn. A bad line yields its error rather than stopping the file, so a caller can
    report every problem at once or skip 3-D lines knowingly.
    """
    state: dict[str, object] = {}
    p = Path(path)
    try:
        text = p.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError(f"cannot read batch file {str(path)!r}: {exc.__class__.__name__}") from None
    for lineno, line in enumerate(text.splitlines(), 1):
        try:
            for spec in _from_tokens(_split(line), state):
                yield BatchLine(str(p), lineno, line.strip(), spec, None)
        except SpecError as exc:
            yield BatchLine(
                str(p), lineno, line.strip(), None, str(exc), isinstance(exc, UnsupportedProblem)
            )


def read_batch_file(path: str | Path, *, skip_unsupported: bool = False) -> list[ConvSpec]:
    """The specs of a batch file. A bad line raises :class:`SpecError` naming file and line,
    unless ``skip_unsupported`` is set and the line is a 3-D problem of more than one plane."""
    specs = []
    for line in iter_batch_file(path):
        if line.spec is not None:
            specs.append(line.spec)
        elif not (skip_unsupported and line.unsupported):
            raise SpecError(f"{line.path}:{line.lineno}: {line.error}")
    if not specs:
        raise SpecError(f"batch file {str(path)!r} holds no 2-D convolution problem")
    return specs
