"""Named suites of real convolution layers, grids, seeded fuzzing and benchdnn batch files.

Layers are written as benchdnn descriptors without a minibatch, so every suite reads the way a
benchdnn shape file does; each suite states the minibatch it is run at (``--mb`` overrides it).
A trailing ``*N`` in a name is how often the layer occurs in its network.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from convbench.spec import ConvSpec, SpecError, parse, read_batch_file

__all__ = ["SUITES", "Suite", "Workload", "collect", "fuzz", "get_suite", "grid"]


@dataclass(frozen=True)
class Workload:
    """A problem and how its inputs are filled (``randn``: seeded N(0, 1); ``seed``: the
    worked example's exact integers)."""

    spec: ConvSpec
    fill: str = "randn"


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    lines: tuple[str, ...]
    mb: int | None = 1
    fill: str = "randn"

    def workloads(self, mb: int | None = None) -> list[Workload]:
        specs = [parse(line) for line in self.lines]
        batch = mb if mb is not None else self.mb
        if batch is not None:
            specs = [s.with_mb(batch) for s in specs]
        return [Workload(s, self.fill) for s in specs]


def _lines(prefix: str, text: str) -> tuple[str, ...]:
    """Descriptor lines with ``n"prefix:..."`` names, from a compact table."""
    out = []
    for row in text.strip().splitlines():
        desc, name = row.split()
        out.append(f'{desc}n"{prefix}:{name}"')
    return tuple(out)


_RESNET50 = _lines(
    "resnet50",
    """
ic3ih224oc64oh112kh7sh2ph3 conv1
ic64ih56oc256oh56kh1ph0 res2a_branch1*4
ic64ih56oc64oh56kh1ph0 res2a_branch2a
ic64ih56oc64oh56kh3ph1 res2a_branch2b*3
ic256ih56oc64oh56kh1ph0 res2b_branch2a*2
ic256ih56oc512oh28kh1sh2ph0 res3a_branch1
ic256ih56oc128oh56kh1ph0 res3a_branch2a
ic128ih56oc128oh28kh3sh2ph1 res3a_branch2b
ic128ih28oc512oh28kh1ph0 res3a_branch2c*4
ic512ih28oc128oh28kh1ph0 res3b_branch2a*3
ic128ih28oc128oh28kh3ph1 res3b_branch2b*3
ic512ih28oc1024oh14kh1sh2ph0 res4a_branch1
ic512ih28oc256oh28kh1ph0 res4a_branch2a
ic256ih28oc256oh14kh3sh2ph1 res4a_branch2b
ic256ih14oc1024oh14kh1ph0 res4a_branch2c*6
ic1024ih14oc256oh14kh1ph0 res4b_branch2a*5
ic256ih14oc256oh14kh3ph1 res4b_branch2b*5
ic1024ih14oc2048oh7kh1sh2ph0 res5a_branch1
ic1024ih14oc512oh14kh1ph0 res5a_branch2a
ic512ih14oc512oh7kh3sh2ph1 res5a_branch2b
ic512ih7oc2048oh7kh1ph0 res5a_branch2c*3
ic2048ih7oc512oh7kh1ph0 res5b_branch2a*2
ic512ih7oc512oh7kh3ph1 res5b_branch2b*2
""",
)

_VGG16 = _lines(
    "vgg16",
    """
ic3ih224oc64oh224kh3ph1 conv1_1
ic64ih224oc64oh224kh3ph1 conv1_2
ic64ih112oc128oh112kh3ph1 conv2_1
ic128ih112oc128oh112kh3ph1 conv2_2
ic128ih56oc256oh56kh3ph1 conv3_1
ic256ih56oc256oh56kh3ph1 conv3_2*2
ic256ih28oc512oh28kh3ph1 conv4_1
ic512ih28oc512oh28kh3ph1 conv4_2*2
ic512ih14oc512oh14kh3ph1 conv5_1*3
""",
)

# The original, two-tower AlexNet: grouped convolutions where the towers meet.
_ALEXNET = _lines(
    "alexnet",
    """
ic3ih227oc96oh55kh11sh4ph0 conv1
g2ic96ih27oc256oh27kh5ph2 conv2
ic256ih13oc384oh13kh3ph1 conv3
g2ic384ih13oc384oh13kh3ph1 conv4
g2ic384ih13oc256oh13kh3ph1 conv5
""",
)

# MobileNetV2 (width 1.0, 224x224): the stem, each block's expansion (1x1), depthwise (3x3,
# g = channels) and projection (1x1) layers, and the last 1x1; repeats counted.
_MOBILENET_V2 = _lines(
    "mobilenet_v2",
    """
ic3ih224oc32oh112kh3sh2ph1 conv1
g32ic32ih112oc32oh112kh3ph1 b1_dw
ic32ih112oc16oh112kh1ph0 b1_project
ic16ih112oc96oh112kh1ph0 b2_expand
g96ic96ih112oc96oh56kh3sh2ph1 b2_dw
ic96ih56oc24oh56kh1ph0 b2_project
ic24ih56oc144oh56kh1ph0 b3_expand*2
g144ic144ih56oc144oh56kh3ph1 b3_dw
ic144ih56oc24oh56kh1ph0 b3_project
g144ic144ih56oc144oh28kh3sh2ph1 b4_dw
ic144ih28oc32oh28kh1ph0 b4_project
ic32ih28oc192oh28kh1ph0 b5_expand*3
g192ic192ih28oc192oh28kh3ph1 b5_dw*2
ic192ih28oc32oh28kh1ph0 b5_project*2
g192ic192ih28oc192oh14kh3sh2ph1 b7_dw
ic192ih14oc64oh14kh1ph0 b7_project
ic64ih14oc384oh14kh1ph0 b8_expand*4
g384ic384ih14oc384oh14kh3ph1 b8_dw*4
ic384ih14oc64oh14kh1ph0 b8_project*3
ic384ih14oc96oh14kh1ph0 b11_project
ic96ih14oc576oh14kh1ph0 b12_expand*3
g576ic576ih14oc576oh14kh3ph1 b12_dw*2
ic576ih14oc96oh14kh1ph0 b12_project*2
g576ic576ih14oc576oh7kh3sh2ph1 b14_dw
ic576ih7oc160oh7kh1ph0 b14_project
ic160ih7oc960oh7kh1ph0 b15_expand*3
g960ic960ih7oc960oh7kh3ph1 b15_dw*3
ic960ih7oc160oh7kh1ph0 b15_project*2
ic960ih7oc320oh7kh1ph0 b17_project
ic320ih7oc1280oh7kh1ph0 conv_last
""",
)

# Kernels from 7x7 to 15x15 with "same" padding: where FFT convolution should shine.
_LARGE_KERNEL = tuple(
    [f'mb4ic32ih64oc32oh64kh{k}ph{k // 2}n"large_kernel:c32_64px_k{k}"' for k in (7, 9, 11, 13, 15)]
    + [f'mb1ic32ih128oc32oh128kh{k}ph{k // 2}n"large_kernel:c32_128px_k{k}"' for k in (11, 13, 15)]
)

# A subset of Baidu DeepBench's convolution problems (speech and vision, inference server).
_DEEPBENCH = (
    'mb1_ic1ih161iw700_oc32_kh5kw20_sh2sw2_ph0pw0n"deepbench:speech_1"',
    'mb1_ic32ih79iw341_oc32_kh5kw10_sh2sw2_ph0pw0n"deepbench:speech_2"',
    'mb1_ic1ih48iw480_oc16_kh3kw3_sh1sw1_ph1pw1n"deepbench:ocr_1"',
    'mb1_ic16ih24iw240_oc32_kh3kw3_sh1sw1_ph1pw1n"deepbench:ocr_2"',
    'mb1_ic64ih54iw54_oc64_kh3kw3_sh1sw1_ph1pw1n"deepbench:face_1"',
    'mb1_ic128ih27iw27_oc128_kh3kw3_sh1sw1_ph1pw1n"deepbench:face_2"',
    'mb1_ic256ih7iw7_oc512_kh3kw3_sh1sw1_ph1pw1n"deepbench:face_3"',
    'mb1_ic3ih224iw224_oc64_kh7kw7_sh2sw2_ph3pw3n"deepbench:resnet_conv1"',
    'mb1_ic512ih7iw7_oc512_kh3kw3_sh1sw1_ph1pw1n"deepbench:resnet_last"',
)

# A handful of small, varied cases for CI: seconds for every backend.
_SMOKE = (
    'mb2ic8ih16oc16oh16kh3ph1n"smoke:3x3"',
    'mb2ic16ih14oc32oh14kh1ph0n"smoke:1x1"',
    'mb2ic8ih15oc8oh8kh3sh2ph1n"smoke:3x3_s2"',
    'mb2g8ic8ih16oc8oh16kh3ph1n"smoke:depthwise"',
    'mb1g2ic8ih12iw10oc4oh10ow10kh3kw5ph2pw2dh1dw0n"smoke:asym_dilated"',
    'mb1ic4ih20oc4oh20kh7ph3n"smoke:7x7"',
    '--dir=FWD_D mb1ic3ih9iw13oc5oh7ow11kh3kw3ph0pw0n"smoke:nobias_rect"',
)

# One layer of each kind that decides a choice of algorithm, at a batch of 4: what the asv and
# pytest-benchmark suites time for every backend besides the smoke cases.
_REPRESENTATIVE = tuple(
    line
    for line in _RESNET50 + _VGG16 + _MOBILENET_V2 + _LARGE_KERNEL
    if line.split('n"')[1].rstrip('"')
    in {
        "resnet50:res4b_branch2b*5",
        "resnet50:res4a_branch2c*6",
        "resnet50:res3a_branch2b",
        "vgg16:conv5_1*3",
        "mobilenet_v2:b8_dw*4",
        "large_kernel:c32_64px_k11",
    }
)

_SEED = ('--dir=FWD_D mb1ic1ih5oc1oh5kh3ph1n"seed:worked_example"',)

SUITES: dict[str, Suite] = {
    s.name: s
    for s in (
        Suite("smoke", "a handful of small, varied cases for CI (seconds)", _SMOKE, mb=None),
        Suite(
            "seed",
            "the worked example: 5x5 input 1..25, kernel rows [1, 0, -1], padding 1",
            _SEED,
            mb=None,
            fill="seed",
        ),
        Suite("resnet50", "the unique conv layers of ResNet-50 v1.5", _RESNET50),
        Suite("vgg16", "the unique conv layers of VGG-16", _VGG16),
        Suite("alexnet", "the conv layers of the original two-tower AlexNet", _ALEXNET),
        Suite(
            "mobilenet_v2",
            "the unique conv layers of MobileNetV2, depthwise included",
            _MOBILENET_V2,
        ),
        Suite(
            "large_kernel",
            "7x7 to 15x15 kernels, 'same' padding, where FFT should win",
            _LARGE_KERNEL,
            mb=None,
        ),
        Suite("deepbench", "a subset of Baidu DeepBench's inference problems", _DEEPBENCH, mb=None),
        Suite(
            "representative",
            "one layer of each kind: 3x3, 1x1, strided, VGG, depthwise, 11x11 (mb 4)",
            _REPRESENTATIVE,
            mb=4,
        ),
    )
}

DEFAULT_SUITE = "resnet50"


def get_suite(name: str) -> Suite:
    try:
        return SUITES[name]
    except KeyError:
        raise SpecError(f"unknown suite {name!r} (known: {', '.join(SUITES)})") from None


_GRID_ITEM = re.compile(r"^([a-z]+)=(\d+(?:,\d+)*)$")


def grid(text: str) -> list[ConvSpec]:
    """The cartesian product of descriptor fields, e.g. ``"ic=16,32 oc=32 ih=28,56 kh=1,3"``.

    Every combination is read as a benchdnn descriptor, so benchdnn's defaults and deductions
    apply; a combination that is not a valid problem is an error naming it.
    """
    axes: list[tuple[str, list[str]]] = []
    for item in text.replace(";", " ").split():
        m = _GRID_ITEM.match(item)
        if not m:
            raise SpecError(f"grid items look like 'kh=1,3,5', got {item!r}")
        axes.append((m.group(1), m.group(2).split(",")))
    if not axes:
        raise SpecError("empty grid")
    specs = []
    for combo in itertools.product(*(values for _, values in axes)):
        desc = "".join(f"{key}{value}" for (key, _), value in zip(axes, combo, strict=True))
        specs.append(parse(desc))
    return specs


def fuzz(n: int, seed: int = 0, max_flops: float = 2e8) -> list[ConvSpec]:
    """``n`` random valid problems, reproducible from ``seed``.

    Like torch's benchmark fuzzer: each field is drawn from a distribution that favours the
    values real networks use (3x3 kernels, powers of two, stride 1), constraints are enforced by
    construction or by redrawing, and the cost is bounded so a fuzzed sweep stays quick. Padding
    is sometimes asymmetric and sometimes negative, as benchdnn descriptors can imply.
    """
    if n < 0:
        raise SpecError(f"--fuzz takes a count of at least 0, got {n}")
    rng = random.Random(seed)
    specs: list[ConvSpec] = []
    draws = 0
    while len(specs) < n:
        draws += 1
        if draws > 1000 * (len(specs) + 1):
            raise SpecError(f"cannot draw valid problems of at most {max_flops:g} FLOPs")
        g = rng.choice([1, 1, 1, 2, 4, "dw"])
        base = rng.choice([1, 2, 3, 4, 8, 16])
        if g == "dw":
            g = ic = oc = rng.choice([4, 8, 16, 32])
        else:
            ic, oc = base * g, rng.choice([1, 2, 4, 8, 16]) * g
        kh, kw = rng.choice([1, 3, 3, 5, 7]), rng.choice([1, 3, 3, 5, 7])
        if rng.random() < 0.3:
            kw = kh
        sh, sw = rng.choice([1, 1, 2, 3]), rng.choice([1, 1, 2, 3])
        dh, dw = rng.choice([1, 1, 1, 2, 3]), rng.choice([1, 1, 1, 2, 3])
        ih, iw = rng.randint(1, 48), rng.randint(1, 48)
        ph, pw = rng.randint(0, kh // 2 + 1), rng.randint(0, kw // 2 + 1)
        extra_h, extra_w = rng.choice([0, 0, 0, 1, -1]), rng.choice([0, 0, 0, 1, -1])
        mb = rng.choice([1, 2, 3])
        oh = (ih + ph + (ph + extra_h) - (kh - 1) * dh - 1) // sh + 1
        ow = (iw + pw + (pw + extra_w) - (kw - 1) * dw - 1) // sw + 1
        try:
            spec = ConvSpec(
                mb=mb,
                g=g,
                ic=ic,
                ih=ih,
                iw=iw,
                oc=oc,
                oh=oh,
                ow=ow,
                kh=kh,
                kw=kw,
                sh=sh,
                sw=sw,
                ph=ph,
                pw=pw,
                dh=dh,
                dw=dw,
                bias=rng.random() < 0.7,
                name=f"fuzz:{seed}:{len(specs)}",
            )
        except SpecError:
            continue
        if spec.flops <= max_flops:
            specs.append(spec)
    return specs


def collect(
    *,
    suites: Iterable[str] = (),
    specs: Iterable[str] = (),
    batch_files: Iterable[str | Path] = (),
    grids: Iterable[str] = (),
    fuzz_count: int = 0,
    fuzz_seed: int = 0,
    mb: int | None = None,
) -> list[Workload]:
    """Every workload the sources name, in order, duplicates removed; ``mb`` overrides all."""
    out: list[Workload] = []
    for name in suites:
        out += get_suite(name).workloads(mb)
    plain = [parse(s) for s in specs]
    for path in batch_files:
        plain += read_batch_file(path, skip_unsupported=True)
    for text in grids:
        plain += grid(text)
    plain += fuzz(fuzz_count, fuzz_seed)
    if mb is not None:
        plain = [s.with_mb(mb) for s in plain]
    out += [Workload(s) for s in plain]
    seen: set[Workload] = set()
    unique = []
    for w in out:
        if w not in seen:
            seen.add(w)
            unique.append(w)
    return unique
