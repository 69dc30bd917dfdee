"""Named suites, grids, seeded fuzzing and ``collect``: valid problems, the right ones, and the
known totals of the networks they come from."""

from __future__ import annotations

import itertools
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from convbench.inputs import FILLS, make_inputs
from convbench.spec import ConvSpec, SpecError, parse, read_batch_file
from convbench.suites import DEFAULT_SUITE, SUITES, Suite, Workload, collect, fuzz, get_suite, grid

DATA = Path(__file__).resolve().parent / "data" / "benchdnn"


def torch_output_shape(spec: ConvSpec) -> tuple[int, ...]:
    x = F.pad(
        torch.empty(spec.input_shape, device="meta"), (spec.pw, spec.pw_r, spec.ph, spec.ph_r)
    )
    w = torch.empty(spec.weight_shape, device="meta")
    return tuple(F.conv2d(x, w, None, (spec.sh, spec.sw), 0, (spec.dh, spec.dw), spec.g).shape)


def weighted_flops(suite: str, mb: int | None = None) -> int:
    return sum(w.spec.flops * w.spec.repeat for w in get_suite(suite).workloads(mb))


# --- the named suites ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SUITES))
def test_suite_builds_valid_unique_workloads(name: str) -> None:
    suite = SUITES[name]
    assert suite.name == name and suite.description
    assert get_suite(name) is suite
    workloads = suite.workloads()
    assert len(workloads) == len(suite.lines) >= 1
    specs = [w.spec for w in workloads]
    assert len(set(specs)) == len(specs)
    names = [s.name for s in specs]
    assert len(set(names)) == len(names)
    if name != "representative":  # its layers keep the names of the suites they come from
        assert all(n.startswith(f"{name}:") for n in names)
    for w in workloads:
        assert isinstance(w, Workload) and w.fill == suite.fill and w.fill in FILLS
        s = w.spec
        if suite.mb is not None:
            assert s.mb == suite.mb
        assert torch_output_shape(s) == s.output_shape
        assert parse(s.format()) == s
        assert s.repeat >= 1


def test_representative_layers_are_the_networks_own() -> None:
    picked = get_suite("representative").workloads()
    assert len(picked) >= 5
    for w in picked:
        origin = get_suite(w.spec.name.split(":")[0]).workloads(mb=w.spec.mb)
        assert w.spec in [o.spec for o in origin], w.spec.name


def test_default_suite_and_unknown_suite() -> None:
    assert DEFAULT_SUITE in SUITES
    with pytest.raises(SpecError, match=r"unknown suite 'nope'.*resnet50"):
        get_suite("nope")


@pytest.mark.parametrize("name", sorted(SUITES))
def test_mb_override_changes_every_mb(name: str) -> None:
    base = SUITES[name].workloads()
    eight = SUITES[name].workloads(mb=8)
    assert [w.spec.mb for w in eight] == [8] * len(base)
    assert [replace(w.spec, mb=b.spec.mb) for w, b in zip(eight, base, strict=True)] == [
        b.spec for b in base
    ]


def test_resnet50_total() -> None:
    # ResNet-50 v1.5 is about 4.1 GMAC (8.2 GFLOP) per 224x224 image, almost all in the convs
    total = weighted_flops("resnet50")
    assert 7.5e9 <= total <= 8.5e9
    assert weighted_flops("resnet50", mb=4) == 4 * total


def test_resnet50_is_the_benchdnn_v1_5_file() -> None:
    """The suite's layers are exactly those of benchdnn's shapes_resnet_50_v1_5."""
    ours = [
        replace(w.spec, name=w.spec.name.split(":", 1)[1])
        for w in get_suite("resnet50").workloads(mb=2)
    ]
    theirs = [
        replace(s, name=s.name.split(":", 1)[1])
        for s in read_batch_file(DATA / "shapes_resnet_50_v1_5")
    ]
    assert ours == theirs


def test_vgg16_total() -> None:
    # VGG-16's convolutions are about 15.4 GMAC (30.7 GFLOP) per 224x224 image
    assert 29e9 <= weighted_flops("vgg16") <= 32e9


def test_mobilenet_v2_total_and_depthwise_layers() -> None:
    # MobileNetV2 (1.0, 224) is about 300 MMAC
    assert 0.55e9 <= weighted_flops("mobilenet_v2") <= 0.65e9
    specs = [w.spec for w in get_suite("mobilenet_v2").workloads()]
    depthwise = [s for s in specs if s.g == s.ic == s.oc > 1]
    assert len(depthwise) >= 10
    assert all((s.kh, s.kw) == (3, 3) for s in depthwise)
    assert {s.sh for s in depthwise} == {1, 2}


def test_alexnet_total_and_groups() -> None:
    # the conv layers of the two-tower AlexNet: about 666 MMAC
    assert 1.25e9 <= weighted_flops("alexnet") <= 1.4e9
    assert sum(w.spec.g == 2 for w in get_suite("alexnet").workloads()) == 3


def test_large_kernel_suite() -> None:
    specs = [w.spec for w in get_suite("large_kernel").workloads()]
    assert {s.kh for s in specs} == {7, 9, 11, 13, 15}
    for s in specs:
        assert s.kw == s.kh and 7 <= s.kh <= 15
        assert (s.oh, s.ow) == (s.ih, s.iw)  # "same" padding
        assert s.symmetric_padding == (s.kh // 2, s.kw // 2)


def test_deepbench_speech_layers_chain() -> None:
    by_name = {w.spec.name: w.spec for w in get_suite("deepbench").workloads()}
    first, second = by_name["deepbench:speech_1"], by_name["deepbench:speech_2"]
    assert (first.oh, first.ow) == ((161 - 5) // 2 + 1, (700 - 20) // 2 + 1) == (79, 341)
    assert (first.oc, first.oh, first.ow) == (second.ic, second.ih, second.iw)


def test_smoke_suite_covers_the_awkward_cases() -> None:
    specs = [w.spec for w in get_suite("smoke").workloads()]
    assert any(s.g == s.ic == s.oc > 1 for s in specs)
    assert any(s.dh > 1 or s.dw > 1 for s in specs)
    assert any(s.ih != s.iw for s in specs)
    assert any(not s.bias for s in specs)
    assert any(s.sh > 1 for s in specs)


# --- the seed suite: a worked example checked three ways ----------------------------------------

SEED_OUTPUT = [
    [-9, -4, -4, -4, 13],
    [-21, -6, -6, -6, 27],
    [-36, -6, -6, -6, 42],
    [-51, -6, -6, -6, 57],
    [-39, -4, -4, -4, 43],
]


def cross_correlation(x: list[list[float]], w: list[list[float]], pad: int) -> list[list[float]]:
    """out[i][j] = sum over r, t of w[r][t] * x[i + r - pad][j + t - pad], zero outside x."""
    h, wd, k = len(x), len(x[0]), len(w)
    out = []
    for i in range(h + 2 * pad - k + 1):
        row = []
        for j in range(wd + 2 * pad - k + 1):
            acc = 0.0
            for r in range(k):
                for t in range(k):
                    a, b = i + r - pad, j + t - pad
                    if 0 <= a < h and 0 <= b < wd:
                        acc += w[r][t] * x[a][b]
            row.append(acc)
        out.append(row)
    return out


def test_seed_suite_worked_example() -> None:
    (work,) = get_suite("seed").workloads()
    s = work.spec
    assert work.fill == "seed"
    assert (s.mb, s.ic, s.ih, s.iw, s.oc, s.kh, s.kw) == (1, 1, 5, 5, 1, 3, 3)
    assert (s.ph, s.pw, s.ph_r, s.pw_r, s.oh, s.ow) == (1, 1, 1, 1, 5, 5)
    assert (s.sh, s.sw, s.dh, s.dw, s.g) == (1, 1, 1, 1, 1)
    assert s.bias is False

    inputs = make_inputs(s, work.fill)
    assert inputs.bias is None
    x = [[5.0 * i + j + 1 for j in range(5)] for i in range(5)]
    w = [[1.0, 0.0, -1.0]] * 3
    assert inputs.x.tolist() == [[x]]
    assert inputs.weight.tolist() == [[w]]

    by_hand = cross_correlation(x, w, 1)
    assert by_hand == SEED_OUTPUT
    y = F.conv2d(inputs.x, inputs.weight, inputs.bias, 1, s.symmetric_padding)
    assert y.shape == s.output_shape
    assert y[0, 0].tolist() == SEED_OUTPUT
    padded = F.pad(inputs.x, (s.pw, s.pw_r, s.ph, s.ph_r))
    assert F.conv2d(padded, inputs.weight)[0, 0].tolist() == SEED_OUTPUT


def test_make_inputs_rejects_unknown_fill() -> None:
    with pytest.raises(ValueError, match="unknown fill 'zeros'"):
        make_inputs(get_suite("seed").workloads()[0].spec, "zeros")


# --- grid ---------------------------------------------------------------------------------------


def test_grid_is_the_cartesian_product_in_order() -> None:
    specs = grid("ic=16,32 oc=32 ih=28,56 kh=1,3")
    assert len(specs) == 2 * 1 * 2 * 2
    assert [(s.ic, s.oc, s.ih, s.kh) for s in specs] == list(
        itertools.product([16, 32], [32], [28, 56], [1, 3])
    )
    # benchdnn's defaults and deductions apply to each combination
    for s in specs:
        assert s.iw == s.ih and s.kw == s.kh and s.mb == 2 and s.ph == 0
        assert s.oh == s.ih - s.kh + 1
        assert s == parse(f"ic{s.ic}oc{s.oc}ih{s.ih}kh{s.kh}")


def test_grid_separators() -> None:
    assert grid("ic=4;oc=8;ih=9;kh=3,5") == grid("ic=4 oc=8 ih=9 kh=3,5")
    assert grid("  ic=4  oc=8 ih=9  kh=3  ") == [parse("ic4oc8ih9kh3")]


@pytest.mark.parametrize("text", ["kh=1,,3", "kh", "kh=", "KH=1", "kh=-1", "kh=1 3", "kh=1.5"])
def test_bad_grid_item(text: str) -> None:
    with pytest.raises(SpecError, match="grid items look like"):
        grid(text)


def test_empty_grid() -> None:
    with pytest.raises(SpecError, match="empty grid"):
        grid("  ; ")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("ic=1 oc=1 ih=2 kh=1,3", r"oh would be 0.*'ic1oc1ih2kh3'"),
        ("g=2 ic=3 oc=4 ih=5 kh=3", "ic 3 is not divisible by groups g2"),
        ("ic=1 oc=1 ih=5 kh=3 foo=1", "cannot read 'foo1'"),
        ("ic=0 oc=1 ih=5 kh=3", "ic must be given and at least 1"),
        ("ic=1 oc=1 id=5 ih=5 kd=3 kh=3", "3-D convolution is not supported"),
    ],
)
def test_invalid_grid_combination(text: str, problem: str) -> None:
    with pytest.raises(SpecError, match=problem):
        grid(text)


# --- fuzz ---------------------------------------------------------------------------------------


def test_fuzz_is_reproducible() -> None:
    assert fuzz(40, seed=3) == fuzz(40, seed=3)
    assert fuzz(40, seed=3) != fuzz(40, seed=4)
    assert fuzz(40, seed=3)[:10] == fuzz(10, seed=3)  # a longer run extends a shorter one
    assert fuzz(0) == []


def test_fuzz_specs_are_valid_bounded_and_varied() -> None:
    specs = fuzz(300, seed=0)
    assert len(specs) == 300
    assert len({s.name for s in specs}) == 300
    for i, s in enumerate(specs):
        assert s.name == f"fuzz:0:{i}"
        assert s.flops <= 2e8
        assert torch_output_shape(s) == s.output_shape
        assert parse(s.format()) == s
    assert any(s.g > 1 for s in specs)
    assert any(s.g == s.ic == s.oc > 1 for s in specs)
    assert any(s.sh > 1 or s.sw > 1 for s in specs)
    assert any(s.dh > 1 or s.dw > 1 for s in specs)
    assert any(s.ph != s.ph_r or s.pw != s.pw_r for s in specs)
    # asymmetric even at stride 1, where only an independently drawn bottom padding can do it
    assert any(s.sh == 1 and s.ph != s.ph_r for s in specs)
    assert any(s.ph_r < 0 or s.pw_r < 0 for s in specs)
    assert any(s.kh != s.kw for s in specs)
    assert any(not s.bias for s in specs) and any(s.bias for s in specs)


def test_fuzz_respects_max_flops() -> None:
    specs = fuzz(100, seed=5, max_flops=1e5)
    assert len(specs) == 100 and all(s.flops <= 1e5 for s in specs)


def test_fuzz_negative_count() -> None:
    with pytest.raises(SpecError, match="at least 0, got -1"):
        fuzz(-1)


# --- collect ------------------------------------------------------------------------------------


def test_collect_combines_sources_in_order() -> None:
    large_padding = DATA / "shapes_large_padding"
    got = collect(
        suites=["seed", "smoke"],
        specs=["ic3ih5oc4kh3", "--dir=FWD_D ic3ih6oc4kh3"],
        batch_files=[large_padding],
        grids=["ic=1 oc=1 ih=5 kh=1,3"],
        fuzz_count=3,
        fuzz_seed=7,
    )
    plain = [
        parse("ic3ih5oc4kh3"),
        parse("--dir=FWD_D ic3ih6oc4kh3"),
        *read_batch_file(large_padding, skip_unsupported=True),
        *grid("ic=1 oc=1 ih=5 kh=1,3"),
        *fuzz(3, 7),
    ]
    expected = (
        get_suite("seed").workloads()
        + get_suite("smoke").workloads()
        + [Workload(s) for s in plain]
    )
    assert got == expected
    assert got[0].fill == "seed" and all(w.fill == "randn" for w in got[1:])


def test_collect_removes_duplicates_keeping_the_first() -> None:
    smoke = get_suite("smoke").workloads()
    assert collect(suites=["smoke", "smoke"]) == smoke
    got = collect(
        specs=["ic3ih5oc4kh3", "ic3_ih5_oc4_kh3", "ic3ih7oc4kh3"], grids=["ic=3 oc=4 ih=5,7 kh=3"]
    )
    assert got == [Workload(parse("ic3ih5oc4kh3")), Workload(parse("ic3ih7oc4kh3"))]


def test_collect_mb_overrides_all() -> None:
    got = collect(
        suites=["smoke", "resnet50"],
        specs=["mb3ic3ih5oc4kh3"],
        batch_files=[DATA / "shapes_resnet_50"],
        grids=["mb=4 ic=1 oc=1 ih=5 kh=3"],
        fuzz_count=5,
        mb=6,
    )
    assert got and all(w.spec.mb == 6 for w in got)
    without = collect(specs=["mb3ic3ih5oc4kh3"], batch_files=[DATA / "shapes_resnet_50"])
    assert {w.spec.mb for w in without} == {3, 50}


def test_collect_skips_3d_lines_of_batch_files(tmp_path: Path) -> None:
    got = collect(batch_files=[DATA / "shapes_large_padding"])
    assert len(got) == 5
    path = tmp_path / "batch"
    path.write_text("ic1iw5oc1kw3\nic3ih5oc4kh3\nic1id5oc1kd3\nic2id1ih4oc2kd1kh3\n")
    assert collect(batch_files=[str(path)]) == [
        Workload(parse("ic1ih1iw5oc1kh1kw3")),
        Workload(parse("ic3ih5oc4kh3")),
        Workload(parse("ic2ih4oc2kh3")),
    ]
    path.write_text("ic3ih5oc4kh3\ng2ic3ih5oc4kh3\n")
    with pytest.raises(SpecError, match=":2: ic 3 is not divisible"):
        collect(batch_files=[path])


def test_collect_nothing_and_errors() -> None:
    assert collect() == []
    with pytest.raises(SpecError, match="unknown suite"):
        collect(suites=["nope"])
    with pytest.raises(SpecError):
        collect(specs=["ic3"])


def test_suite_with_own_mb_none_keeps_descriptor_mb() -> None:
    suite = Suite("t", "test", ("mb3ic3ih5oc4kh3", "ic3ih5oc4kh3"), mb=None)
    assert [w.spec.mb for w in suite.workloads()] == [3, 2]
    assert [w.spec.mb for w in suite.workloads(mb=1)] == [1, 1]
    assert [w.spec.mb for w in replace(suite, mb=5).workloads()] == [5, 5]


def test_fuzz_with_an_impossible_budget_raises_instead_of_hanging() -> None:
    with pytest.raises(SpecError, match="cannot draw"):
        fuzz(1, max_flops=1)
