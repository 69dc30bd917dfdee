"""The benchdnn descriptor: parsing by benchdnn's rules, validation, derived values, and
agreement with torch on real shape files and on random problems."""

from __future__ import annotations

import filecmp
import re
import string
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from convbench.spec import BatchLine, ConvSpec, SpecError, iter_batch_file, parse, read_batch_file

DATA = Path(__file__).resolve().parent / "data" / "benchdnn"
VENDORED = sorted(DATA.glob("shapes_*"))
SHARED = Path(__file__).resolve().parents[2] / "shared" / "benchdnn-shapes"

UNSUPPORTED = "3-D convolution is not supported"


# --- helpers ------------------------------------------------------------------------------------


def torch_output_shape(spec: ConvSpec) -> tuple[int, ...]:
    """The output shape torch computes for the problem: explicit (possibly negative, possibly
    asymmetric) padding with F.pad, then an unpadded conv2d, all on the meta device."""
    x = F.pad(
        torch.empty(spec.input_shape, device="meta"), (spec.pw, spec.pw_r, spec.ph, spec.ph_r)
    )
    w = torch.empty(spec.weight_shape, device="meta")
    y = F.conv2d(x, w, None, (spec.sh, spec.sw), 0, (spec.dh, spec.dw), spec.g)
    return tuple(y.shape)


def torch_symmetric_shape(spec: ConvSpec) -> tuple[int, ...] | None:
    """The output shape of torch's own symmetric padding (ph, pw), or None if torch refuses."""
    if spec.ph < 0 or spec.pw < 0:
        return None
    x = torch.empty(spec.input_shape, device="meta")
    w = torch.empty(spec.weight_shape, device="meta")
    try:
        y = F.conv2d(x, w, None, (spec.sh, spec.sw), (spec.ph, spec.pw), (spec.dh, spec.dw), spec.g)
    except RuntimeError:
        return None
    return tuple(y.shape)


def check_spec_against_torch(spec: ConvSpec) -> list[str]:
    """Every disagreement between the spec, its descriptor and torch, as messages."""
    problems = []
    try:
        again = parse(spec.format())
    except SpecError as exc:
        problems.append(f"format() does not parse: {exc}")
    else:
        if again != spec:
            problems.append(f"round trip changed it: {again!r}")
    try:
        shape = torch_output_shape(spec)
    except RuntimeError as exc:
        problems.append(f"torch refuses it: {exc}")
    else:
        if shape != spec.output_shape:
            problems.append(f"torch gives {shape}, spec says {spec.output_shape}")
    sym = torch_symmetric_shape(spec)
    expressible = sym == spec.output_shape
    if (spec.symmetric_padding is not None) != expressible:
        problems.append(f"symmetric_padding {spec.symmetric_padding} but torch gives {sym}")
    return problems


def check_batch_file(path: Path) -> tuple[int, int]:
    """Check every line of a benchdnn shape file; return (2-D lines, unsupported lines)."""
    lines = list(iter_batch_file(path))
    if not lines:  # a file of comments only (benchdnn has one)
        with pytest.raises(SpecError, match="holds no 2-D convolution problem"):
            read_batch_file(path, skip_unsupported=True)
        return 0, 0
    failures = []
    good: list[ConvSpec] = []
    bad: list[BatchLine] = []
    for line in lines:
        assert line.path == str(path)
        assert (line.spec is None) != (line.error is None)
        if line.spec is None:
            bad.append(line)
            if UNSUPPORTED not in (line.error or ""):
                failures.append(f"{path.name}:{line.lineno}: unexpected error {line.error}")
            continue
        good.append(line.spec)
        failures += [
            f"{path.name}:{line.lineno}: {line.text}: {p}"
            for p in check_spec_against_torch(line.spec)
        ]
    assert not failures, "\n".join(failures[:20])

    if bad:
        with pytest.raises(SpecError) as info:
            read_batch_file(path)
        first = bad[0]
        assert str(info.value).startswith(f"{path}:{first.lineno}: ")
        assert first.error in str(info.value)
    else:
        assert read_batch_file(path) == good
    if good:
        assert read_batch_file(path, skip_unsupported=True) == good
    else:
        with pytest.raises(SpecError, match="holds no 2-D convolution problem"):
            read_batch_file(path, skip_unsupported=True)
    return len(good), len(bad)


_TRIVIAL_DEPTH = re.compile(r"(?:kd|id|od|sd)1(?!\d)|(?:pd|dd)0(?!\d)")


def check_depth_collapsed(path: Path) -> int:
    """benchdnn's generated ``dilated_2d_*`` files write 2-D problems in 3-D form (``id1kd1``)
    and state the bottom padding they imply in the name (``ph-bottom(N)``). Each line reads as
    the 2-D descriptor left when the trivial depth is dropped, and ``ph_r`` must be that stated
    bottom padding."""
    named = 0
    for line in iter_batch_file(path):
        spec = parse(_TRIVIAL_DEPTH.sub("", line.text))
        assert line.spec == spec, line.text
        assert check_spec_against_torch(spec) == [], line.text
        m = re.search(r"ph-bottom\((-?\d+)\)", spec.name)
        if m:
            assert spec.ph_r == int(m.group(1)), line.text
            named += 1
    return named


# --- the vendored shape files -------------------------------------------------------------------


def test_vendored_files_are_present() -> None:
    names = {p.name for p in VENDORED}
    assert {
        "shapes_resnet_50",
        "shapes_dilated_2d_strided_padding",
        "shapes_large_padding",
        "shapes_regression_padding",
        "shapes_mobilenet_dw",
    } <= names
    assert "Apache License" in (DATA / "LICENSE").read_text()
    assert "Apache" in (DATA / "README.md").read_text()


@pytest.mark.parametrize("path", VENDORED, ids=lambda p: p.name)
def test_vendored_file_lines_parse_round_trip_and_match_torch(path: Path) -> None:
    check_batch_file(path)


def test_vendored_files_mix_in_1d_3d_and_asymmetric_padding() -> None:
    """The vendored set really exercises what it is kept for."""
    lines = [ln for p in VENDORED for ln in iter_batch_file(p)]
    specs = [ln.spec for ln in lines if ln.spec is not None]
    errors = [ln.error or "" for ln in lines if ln.spec is None]
    assert len(specs) >= 100
    assert any(s.ih == s.kh == s.oh == 1 and s.iw > 1 for s in specs)  # 1-D lines
    assert any("kd1" in ln.text and ln.spec is not None for ln in lines)  # one-plane 3-D lines
    assert any(UNSUPPORTED in e for e in errors)
    assert any(s.ph != s.ph_r or s.pw != s.pw_r for s in specs)
    assert any(s.ph_r < 0 or s.pw_r < 0 for s in specs)
    assert any(s.g > 1 and s.g == s.ic == s.oc for s in specs)
    assert any(s.dh > 1 for s in specs)
    assert any(s.repeat > 1 for s in specs)


def test_large_padding_file_line_by_line() -> None:
    path = DATA / "shapes_large_padding"
    lines = list(iter_batch_file(path))
    assert [ln.lineno for ln in lines] == [1, 2, 3, 4, 5, 6]
    kinds = [
        "3-D"
        if ln.spec is None
        else "1-D"
        if ln.spec.ih == ln.spec.kh == ln.spec.oh == 1
        else "2-D"
        for ln in lines
    ]
    assert kinds == ["1-D", "2-D", "2-D", "1-D", "2-D", "3-D"]
    assert UNSUPPORTED in (lines[5].error or "")
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}:6: 3-D convolution"):
        read_batch_file(path)
    assert len(read_batch_file(path, skip_unsupported=True)) == 5
    # ic16oc16_iw1kw3ow100pw100: one pixel padded by 100 on the left, and by 1 on the right so
    # that a 3-wide kernel gives 100 outputs
    row = lines[0].spec
    assert row is not None
    assert (row.iw, row.kw, row.pw, row.pw_r, row.ow, row.ih, row.ph, row.ph_r) == (
        1,
        3,
        100,
        1,
        100,
        1,
        0,
        0,
    )
    # ic1oc64_ih55oh18kh30sh3ph29dh2: the dilated kernel spans 29*3+1 = 88 rows
    spec = lines[1].spec
    assert spec is not None
    assert (spec.ih, spec.kh, spec.dh, spec.sh, spec.ph, spec.oh) == (55, 30, 3, 3, 29, 18)
    assert spec.ph_r == 17 * 3 - 55 + 88 - 29 == 55
    assert (spec.iw, spec.kw, spec.dw, spec.pw, spec.ow) == (55, 30, 3, 29, 18)


def test_resnet_50_file_values() -> None:
    specs = read_batch_file(DATA / "shapes_resnet_50")
    by_name = {s.name: s for s in specs}
    s = by_name["resnet_50:res2a_branch1*4"]
    assert (s.mb, s.ic, s.oc, s.kh, s.kw) == (50, 64, 256, 1, 1)
    assert (s.ih, s.iw, s.oh, s.ow) == (56, 56, 56, 56)
    assert s.repeat == 4 and s.bias and s.g == 1
    conv1 = by_name["resnet_50:conv1"]
    assert (conv1.sh, conv1.sw, conv1.ph, conv1.pw, conv1.ph_r) == (2, 2, 3, 3, 2)
    assert conv1.symmetric_padding == (3, 3)
    assert by_name["resnet_50:res3a_branch2a"].repeat == 1


def test_dilated_file_states_the_bottom_padding_benchdnn_implies() -> None:
    assert check_depth_collapsed(DATA / "shapes_dilated_2d_strided_padding") >= 500


# --- every shape file of the shared folder ------------------------------------------------------


def test_all_shared_shape_files() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent: the full benchdnn shape-file set is not available here")
    files = sorted(SHARED.glob("shapes_*"))
    assert len(files) >= 50
    total_2d = total_bad = 0
    for path in files:
        good, bad = check_batch_file(path)
        total_2d += good
        total_bad += bad
    assert total_2d >= 13500
    assert total_bad >= 50
    named = sum(check_depth_collapsed(p) for p in SHARED.glob("shapes_dilated_2d_*"))
    assert named >= 3000


def test_vendored_files_are_unchanged_copies() -> None:
    if not SHARED.is_dir():
        pytest.skip(f"{SHARED} is absent")
    for path in [*VENDORED, DATA / "LICENSE"]:
        assert filecmp.cmp(path, SHARED / path.name, shallow=False), path.name


# --- benchdnn's rules, by hand-worked examples --------------------------------------------------


def test_defaults() -> None:
    s = parse("ic3ih5oc4kh3")
    assert (s.mb, s.g, s.sh, s.sw, s.dh, s.dw, s.ph, s.pw) == (2, 1, 1, 1, 1, 1, 0, 0)
    assert (s.oh, s.ow) == (3, 3)  # (5 - 3 + 0) / 1 + 1
    assert s.bias is True and s.name == "" and s.repeat == 1


def test_dilation_counts_from_zero() -> None:
    # benchdnn dh1 = one gap between taps = torch dilation 2: the 3-tap kernel spans 5 rows
    s = parse("ic1ih10oc1kh3dh1")
    assert (s.dh, s.dw) == (2, 2)
    assert (s.oh, s.ow) == (6, 6)
    assert parse("ic1ih10oc1kh3dh0").dh == 1
    assert parse("ic1ih10oc1kh3").dh == 1
    assert torch_output_shape(s) == s.output_shape


def test_square_promotion() -> None:
    s = parse("ic3ih5oc4kh3")
    assert (s.iw, s.kw, s.ow) == (5, 3, 3)
    s = parse("ic1ih9oc1kh3sh2dh1ph2")
    assert (s.iw, s.kw, s.sw, s.dw, s.pw) == (9, 3, 2, 2, 2)
    assert (s.oh, s.ow) == (5, 5)  # (9 - 5 + 4) / 2 + 1
    # w values that are given are kept
    s = parse("ic1ih9iw7oc1kh3kw1")
    assert (s.iw, s.kw, s.ow, s.oh) == (7, 1, 7, 7)


def test_padding_deduced_with_c_truncating_division() -> None:
    # ph = ((oh-1)*sh - ih + (kh-1)*(dh+1) + 1) / 2, division truncating toward zero.
    # ic1ih10oc1oh4kh3: (3 - 10 + 3) / 2 = -4 / 2 = -2; bottom = -4 - (-2) = -2.
    s = parse("ic1ih10oc1oh4kh3")
    assert (s.ph, s.ph_r, s.pw, s.pw_r) == (-2, -2, -2, -2)
    assert torch_output_shape(s) == s.output_shape == (2, 1, 4, 4)
    # ic1ih10oc1oh3kh3: (2 - 10 + 3) / 2 = -5 / 2 = -2 in C (floor would give -3);
    # bottom = -5 - (-2) = -3.
    s = parse("ic1ih10oc1oh3kh3")
    assert (s.ph, s.ph_r) == (-2, -3)
    assert torch_output_shape(s) == s.output_shape
    # a positive odd numerator: ih5 oh5 kh4: (4 - 5 + 4) / 2 = 3 / 2 = 1; bottom = 3 - 1 = 2
    s = parse("ic1ih5oc1oh5kh4")
    assert (s.ph, s.ph_r) == (1, 2)
    assert s.symmetric_padding is None
    # stride 2, no padding given: (27*2 - 56 + 3) / 2 = 1 / 2 = 0; bottom = 1 (TF-style SAME)
    s = parse("ic1ih56oc1oh28kh3sh2")
    assert (s.ph, s.ph_r) == (0, 1)


def test_asymmetric_bottom_padding_from_stride() -> None:
    # ph given as 1; bottom = (28-1)*2 - 56 + 3 - 1 = 0: the last padding row is never read
    s = parse("ic1ih56oc1oh28kh3sh2ph1")
    assert (s.ph, s.ph_r, s.pw, s.pw_r) == (1, 0, 1, 0)
    assert s.symmetric_padding == (1, 1)
    assert torch_output_shape(s) == s.output_shape


def test_output_deduced_when_absent() -> None:
    s = parse("ic1ih7oc1kh3sh2ph1")
    assert (s.oh, s.ow) == (4, 4)  # (7 - 3 + 2) / 2 + 1
    assert s.ph_r == 3 * 2 - 7 + 3 - 1 == 1
    # benchdnn truncates here too: (3 - 4 + 0) / 2 = 0 in C, so oh = 1 (floor would give 0)
    s = parse("ic1ih3oc1kh4sh2")
    assert (s.oh, s.ph, s.ph_r) == (1, 0, 1)
    assert s.symmetric_padding is None  # torch refuses a kernel larger than the input
    assert torch_output_shape(s) == s.output_shape


def test_repeat_counts_in_names() -> None:
    assert parse('ic3ih5oc4kh3n"net:layer*3"').repeat == 3
    assert parse('ic3ih5oc4kh3n"net:layer*12"').repeat == 12
    assert parse('ic3ih5oc4kh3n"net:layer"').repeat == 1
    assert parse('ic3ih5oc4kh3n"a*2b"').repeat == 1
    assert parse("ic3ih5oc4kh3").repeat == 1


def test_name_quoting() -> None:
    names = {
        parse(d).name for d in ('ic3ih5oc4kh3n"x:y"', "ic3ih5oc4kh3nx:y", "ic3ih5oc4kh3n'x:y'")
    }
    assert names == {"x:y"}
    assert parse('ic3ih5oc4kh3_n"x"').name == "x"


def test_direction_sets_bias_and_round_trips() -> None:
    s = parse("--dir=FWD_D ic3ih5oc4kh3")
    assert s.bias is False
    assert s.format().startswith("--dir=FWD_D ")
    assert parse(s.format()) == s
    assert parse("--dir=FWD_I ic3ih5oc4kh3").bias is False
    assert parse("--dir=fwd_d ic3ih5oc4kh3").bias is False
    b = parse("--dir=FWD_B ic3ih5oc4kh3")
    assert b.bias is True and not b.format().startswith("--")
    assert parse(b.format()) == b
    assert replace(s, bias=True) == b


def test_mb_option_overrides_mb() -> None:
    assert parse("mb3ic3ih5oc4kh3").mb == 3
    assert parse("--mb=8 mb3ic3ih5oc4kh3").mb == 8
    assert parse("--mb=8 ic3ih5oc4kh3").mb == 8
    assert parse("--mb=0 mb3ic3ih5oc4kh3").mb == 3  # benchdnn: 0 means the descriptor's own
    # other options do not change the problem
    assert parse("--cfg=f16 --stag=nhwc --alg=direct ic3ih5oc4kh3") == parse("ic3ih5oc4kh3")


def test_underscores_are_optional() -> None:
    a = parse("g2mb3_ic4ih9iw8_oc6oh5ow4_kh3kw2_sh2sw2_ph1pw0_dh0dw1")
    b = parse("g2mb3ic4ih9iw8oc6oh5ow4kh3kw2sh2sw2ph1pw0dh0dw1")
    c = parse("g2_mb3_ic4_ih9_iw8_oc6_oh5_ow4_kh3_kw2_sh2_sw2_ph1_pw0_dh0_dw1")
    assert a == b == c
    assert (a.g, a.mb, a.ic, a.oc, a.ih, a.iw, a.oh, a.ow) == (2, 3, 4, 6, 9, 8, 5, 4)
    assert (a.kh, a.kw, a.sh, a.sw, a.ph, a.pw, a.dh, a.dw) == (3, 2, 2, 2, 1, 0, 1, 2)


def test_key_order_does_not_matter() -> None:
    assert parse("kh3oc4ih5ic3mb1") == parse("mb1ic3ih5oc4kh3")


def test_format_is_canonical() -> None:
    geometry = dict(ic=4, ih=9, iw=8, oc=6, oh=5, ow=4, kh=3, kw=2, sh=2, sw=2, ph=1, dw=2)
    s = ConvSpec(mb=3, g=2, name="n:x*2", **geometry)
    assert s.format() == 'g2mb3_ic4ih9iw8_oc6oh5ow4_kh3kw2_sh2sw2_ph1pw0_dh0dw1_n"n:x*2"'
    assert str(s) == s.format()
    assert parse(s.format()) == s


def test_with_mb() -> None:
    s = parse("mb3ic3ih5oc4kh3")
    t = s.with_mb(7)
    assert t.mb == 7 and replace(t, mb=3) == s
    with pytest.raises(SpecError, match="mb"):
        s.with_mb(0)


# --- batch files --------------------------------------------------------------------------------


def test_batch_options_persist_until_reset(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_text(
        "# a comment\n"
        "\n"
        "--dir=FWD_D\n"
        "ic3ih5oc4kh3 ic3ih6oc4kh3  # two descriptors, then a comment\n"
        "--mb=8\n"
        "mb2ic3ih7oc4kh3\n"
        "--reset\n"
        "ic3ih8oc4kh3\n"
    )
    lines = list(iter_batch_file(path))
    assert [ln.lineno for ln in lines] == [4, 4, 6, 8]
    specs = read_batch_file(path)
    assert [(s.ih, s.mb, s.bias) for s in specs] == [
        (5, 2, False),
        (6, 2, False),
        (7, 8, False),
        (8, 2, True),
    ]


def test_batch_file_errors_name_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_text("ic3ih5oc4kh3\nic1iw5oc1kw3\nic1id5oc1kd3\ng2ic3ih5oc4kh3\n")
    lines = list(iter_batch_file(path))
    assert lines[1].spec == parse("ic1ih1iw5oc1kh1kw3")
    assert "3-D convolution is not supported" in (lines[2].error or "")
    assert "not divisible" in (lines[3].error or "")
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}:3: 3-D convolution"):
        read_batch_file(path)
    # skipping 3-D lines does not skip a genuinely bad line
    with pytest.raises(SpecError, match=rf"^{re.escape(str(path))}:4: ic 3 is not divisible"):
        read_batch_file(path, skip_unsupported=True)
    path.write_text("ic3ih5oc4kh3\nic1iw5oc1kw3\nic1id5oc1kd3\n")
    assert read_batch_file(path, skip_unsupported=True) == [
        parse("ic3ih5oc4kh3"),
        parse("ic1ih1iw5oc1kh1kw3"),
    ]


def test_batch_file_without_2d_problems(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_text("# only comments\n")
    with pytest.raises(SpecError, match="holds no 2-D convolution problem"):
        read_batch_file(path)
    path.write_text("ic1id5oc1kd3\n")
    with pytest.raises(SpecError, match="holds no 2-D convolution problem"):
        read_batch_file(path, skip_unsupported=True)


def test_missing_batch_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read batch file"):
        read_batch_file(tmp_path / "nope")
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xff\xfe\x00ic")
    with pytest.raises(SpecError, match="cannot read batch file"):
        list(iter_batch_file(binary))


# --- validation: one rule per test --------------------------------------------------------------

BASE = dict(ic=4, ih=5, iw=5, oc=4, oh=3, ow=3, kh=3, kw=3)


def make(**changes: object) -> ConvSpec:
    return ConvSpec(**{**BASE, **changes})  # type: ignore[arg-type]


def test_spec_error_is_a_value_error() -> None:
    assert issubclass(SpecError, ValueError)
    with pytest.raises(ValueError):
        parse("not a descriptor")


def test_base_spec_is_valid() -> None:
    assert make().output_shape == (2, 4, 3, 3)


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"g": 3}, "ic 4 is not divisible by groups g3"),
        ({"g": 2, "oc": 3}, "oc 3 is not divisible by groups g2"),
        ({"g": 2, "ic": 3}, "ic 3 is not divisible by groups g2"),
    ],
)
def test_channels_not_divisible_by_groups(changes: dict[str, int], field: str) -> None:
    with pytest.raises(SpecError, match=re.escape(field)):
        make(**changes)


def test_channels_not_divisible_by_groups_in_descriptor() -> None:
    with pytest.raises(SpecError, match="oc 3 is not divisible by groups g2"):
        parse("g2ic4ih5oc3kh3")
    with pytest.raises(SpecError, match="ic 3 is not divisible by groups g2"):
        parse("g2ic3ih5oc4kh3")


@pytest.mark.parametrize("axis", ["h", "w"])
def test_output_below_one(axis: str) -> None:
    with pytest.raises(SpecError, match=f"o{axis} must be at least 1, got 0"):
        make(**{"o" + axis: 0})


def test_output_below_one_in_descriptor() -> None:
    with pytest.raises(SpecError, match="oh would be 0"):
        parse("ic1ih2oc1kh3")
    with pytest.raises(SpecError, match="ow would be 0"):
        parse("ic1ih5iw2oc1kh3kw3")
    with pytest.raises(SpecError, match="oh would be -1"):
        parse("ic1ih2oc1kh4")


@pytest.mark.parametrize(
    "key", ["mb", "g", "ic", "oc", "ih", "iw", "kh", "kw", "sh", "sw", "dh", "dw"]
)
@pytest.mark.parametrize("value", [0, -1])
def test_sizes_strides_dilations_at_least_one(key: str, value: int) -> None:
    with pytest.raises(SpecError, match=rf"^{key} must be at least 1, got {value}$"):
        make(**{key: value})


@pytest.mark.parametrize("key", ["ic", "ih", "oc", "oh", "kh", "sh", "dh", "mb", "g"])
def test_negative_value_in_descriptor(key: str) -> None:
    desc = {"ic": "ic4", "ih": "ih5", "oc": "oc4", "kh": "kh3"}
    desc[key] = f"{key}-2"
    with pytest.raises(SpecError, match=f"{key} must not be negative, got -2"):
        parse("".join(desc.values()))


def test_padding_that_crops_the_whole_input() -> None:
    with pytest.raises(SpecError, match=r"ph=-5, ph_r=.*crops away the whole input \(ih=5\)"):
        make(ph=-5, oh=1, kh=1)
    make(ph=-4, oh=1, kh=1)  # one row left: fine
    # bottom: ih5 kh1 oh1 ph4 reads padding only: ph_r = 0 - 5 + 1 - 4 = -8
    with pytest.raises(SpecError, match=r"ph=4, ph_r=-8 crops away"):
        make(ph=4, oh=1, kh=1)
    with pytest.raises(SpecError, match=r"pw=-6, pw_r=.*\(iw=5\)"):
        make(pw=-6, ow=1, kw=1)


def test_duplicate_key() -> None:
    with pytest.raises(SpecError, match="ih is given twice"):
        parse("ic1ih5ih5oc1kh3")
    with pytest.raises(SpecError, match="kh is given twice"):
        parse("ic1ih5oc1kh3_kh3")


def test_unknown_token() -> None:
    with pytest.raises(SpecError, match=r"cannot read 'xx2'"):
        parse("ic1ih5oc1kh3xx2")
    with pytest.raises(SpecError, match=r"cannot read 'zz1ic1ih5oc1kh3'"):
        parse("zz1ic1ih5oc1kh3")
    with pytest.raises(SpecError, match=r"cannot read 'ih'"):
        parse("ic1oc1kh3ih")  # a key without a value
    with pytest.raises(SpecError, match="expected one descriptor, found 2"):
        parse("ic1ih5oc1kh3 ic1ih5oc1kh3")
    with pytest.raises(SpecError, match="expected one descriptor, found 0"):
        parse("   ")


@pytest.mark.parametrize(
    ("desc", "message"),
    [
        ("ih5oc4kh3", "ic must be given"),
        ("ic0ih5oc4kh3", "ic must be given and at least 1"),
        ("ic4ih5kh3", "oc must be given"),
        ("ic4ih5oc0kh3", "oc must be given and at least 1"),
        ("ic4ih5oc4", "ih and kh must be given"),
        ("ic4oc4kh3", "ih and kh must be given"),
        ("ic4ih5iw5oc4kh3", "iw and kw must be given"),
        ("ic4oc4", "no spatial size given"),
    ],
)
def test_missing_fields(desc: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse(desc)


def test_zero_stride() -> None:
    with pytest.raises(SpecError, match="sh must be at least 1"):
        parse("ic1ih5oc1kh3sh0")
    with pytest.raises(SpecError, match="sw must be at least 1"):
        parse("ic1ih5iw5oc1kh3kw3sw0")
    with pytest.raises(SpecError, match="sh must be at least 1, got 0"):
        make(sh=0)


@pytest.mark.parametrize("name", ["a b", "a\tb", 'a"b', '"', " "])
def test_names_with_spaces_or_quotes(name: str) -> None:
    with pytest.raises(SpecError, match="name must be a string without spaces, quotes"):
        make(name=name)


def test_names_with_spaces_in_descriptor() -> None:
    with pytest.raises(SpecError, match="name must be a string without spaces"):
        parse('ic1ih5oc1kh3n"a b"')
    with pytest.raises(SpecError, match="cannot split"):
        parse('ic1ih5oc1kh3n"ab')


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"ic": 4.0}, "ic must be an integer, got 4.0"),
        ({"ph": "1"}, "ph must be an integer, got '1'"),
        ({"mb": True}, "mb must be an integer, got True"),
        ({"bias": 1}, "bias must be True or False, got 1"),
        ({"name": None}, "name must be a string"),
    ],
)
def test_field_types(changes: dict[str, object], message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        make(**changes)


@pytest.mark.parametrize(
    ("desc", "message"),
    [
        ("ic1id5oc1kd3", "3-D convolution is not supported"),
        ("ic1id2ih5oc1kd1kh3", "3-D convolution is not supported"),
        ("ic1id1ih5oc1kd1kh3pd1", "3-D convolution is not supported"),
        ("ic1id1ih5oc1kd1kh3od3", "3-D convolution is not supported"),
        ("ic1id1ih5oc1kd2kh3", "3-D convolution is not supported"),
        ("ic1id3ih5oc1kd3kh3", "3-D convolution is not supported"),
        ("ic1id5ih5iw5oc1kd3kh3kw3", "3-D convolution is not supported"),
        ("ic1ih5oc1kh3pd1", "3-D convolution is not supported"),
        ("ic1ih5oc1kh3sd2", "3-D convolution is not supported"),
    ],
)
def test_unsupported_dimensions(desc: str, message: str) -> None:
    with pytest.raises(SpecError, match=message):
        parse(desc)


@pytest.mark.parametrize(
    ("desc", "same"),
    [
        ("ic1iw5oc1kw3", "ic1ih1iw5oc1kh1kw3"),
        ("mb3ic2oc4_iw9ow4kw3sw2pw1dw1", "mb3ic2oc4_ih1iw9oh1ow4kh1kw3sw2pw1dw1"),
        ("ic1oc1_iw5ow3kw3", "ic1oc1_ih1iw5oh1ow3kh1kw3"),
        (
            "mb1_ic16oc16_kd1kh3kw1_id1ih3iw1_od1oh1ow1_sd1sh1sw1_pd0ph0pw0_dd0dh3dw0",
            "mb1_ic16oc16_kh3kw1_ih3iw1_oh1ow1_sh1sw1_ph0pw0_dh3dw0",
        ),
        ("ic4id1ih7oc2kd1kh3sd3dd2", "ic4ih7oc2kh3"),
    ],
)
def test_one_row_and_one_plane_problems_read_as_2d(desc: str, same: str) -> None:
    """A 1-D problem is the 2-D one of height 1; a 3-D one of a single plane (``id1kd1``, no
    depth padding) is its 2-D problem, whatever its depth stride and dilation."""
    spec = parse(desc)
    assert spec == parse(same)
    assert check_spec_against_torch(spec) == []


def test_trivial_dimension_values_do_not_count_as_given() -> None:
    # benchdnn: a dimension is "given" only by a non-zero size, kernel, output or dilation, a
    # stride other than 1 or a padding of at least 1
    assert parse("ic1ih5oc1kh3sd1pd0dd0id0") == parse("ic1ih5oc1kh3")
    assert parse("ic1ih5oc1kh3sw1pw0dw0") == parse("ic1ih5oc1kh3")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("--dir=BWD_D ic1ih5oc1kh3", "only forward convolution is supported, got --dir=BWD_D"),
        ("--mb=x ic1ih5oc1kh3", "--mb takes an integer, got 'x'"),
        ("--mb=-1 ic1ih5oc1kh3", "--mb must not be negative, got -1"),
    ],
)
def test_bad_options(text: str, message: str) -> None:
    with pytest.raises(SpecError, match=re.escape(message)):
        parse(text)


# --- derived values -----------------------------------------------------------------------------


def brute_force_flops(s: ConvSpec) -> int:
    """2 x every multiply-add a direct convolution performs, taps in padding included."""
    macs = 0
    for _n in range(s.mb):
        for _k in range(s.oc):
            for _c in range(s.ic // s.g):
                for _oh in range(s.oh):
                    for _ow in range(s.ow):
                        for _r in range(s.kh):
                            for _t in range(s.kw):
                                macs += 1
    return 2 * macs


def benchdnn_ops(s: ConvSpec) -> int:
    """benchdnn's count_ops: only the taps that land inside the input."""
    taps = 0
    for oh in range(s.oh):
        for ow in range(s.ow):
            for r in range(s.kh):
                i = oh * s.sh - s.ph + r * s.dh
                if not 0 <= i < s.ih:
                    continue
                for t in range(s.kw):
                    j = ow * s.sw - s.pw + t * s.dw
                    if 0 <= j < s.iw:
                        taps += 1
    return 2 * s.mb * s.oc * (s.ic // s.g) * taps


SMALL = [
    "mb1ic1ih5oc1kh3ph1",
    "mb2g2ic4ih6iw5oc2kh3kw2sh2sw1ph1pw0",
    "mb1g3ic3ih7oc3oh4kh3sh2dh1",
    "--dir=FWD_D mb1ic2ih9iw4oc3oh3ow2kh2kw3sh3sw1ph0pw0dh1dw0",
    "mb1ic2ih10oc1oh3kh3",
]


@pytest.mark.parametrize("desc", SMALL)
def test_flops_formula_and_brute_force(desc: str) -> None:
    s = parse(desc)
    formula = 2 * s.mb * s.oc * (s.ic // s.g) * s.kh * s.kw * s.oh * s.ow
    assert s.flops == formula == brute_force_flops(s)
    inside = benchdnn_ops(s)
    assert inside <= s.flops
    touches_padding = s.ph > 0 or s.pw > 0 or s.ph_r > 0 or s.pw_r > 0
    assert (inside < s.flops) == touches_padding


def test_flops_known_value() -> None:
    # ResNet-50 conv1 at mb1: 64 * 3 * 7 * 7 * 112 * 112 MACs = 118,013,952
    s = parse("mb1ic3ih224oc64oh112kh7sh2ph3")
    assert s.flops == 2 * 118_013_952


@pytest.mark.parametrize("desc", SMALL)
@pytest.mark.parametrize(
    ("itemsize", "dtype"), [(2, torch.float16), (4, torch.float32), (8, torch.float64)]
)
def test_bytes(desc: str, itemsize: int, dtype: torch.dtype) -> None:
    s = parse(desc)
    tensors = {
        "input": torch.empty(s.input_shape, dtype=dtype, device="meta"),
        "weight": torch.empty(s.weight_shape, dtype=dtype, device="meta"),
        "output": torch.empty(s.output_shape, dtype=dtype, device="meta"),
    }
    expected = {k: t.numel() * t.element_size() for k, t in tensors.items()}
    expected["bias"] = s.oc * itemsize if s.bias else 0
    assert s.bytes(itemsize) == expected
    if itemsize == 4:
        assert s.bytes() == expected


@pytest.mark.parametrize(
    ("desc", "symmetric"),
    [
        ("ic1ih56oc1oh28kh3sh2ph1", (1, 1)),  # bottom 0 < top 1, but torch drops that row
        ("ic1ih56oc1oh28kh3sh2", None),  # TF SAME: top 0, bottom 1
        ("ic1ih10oc1oh4kh3", None),  # negative top padding
        ("ic1ih5oc1oh5kh4", None),  # top 1, bottom 2
        ("ic1ih6oc1oh3kh1sh2", (0, 0)),  # bottom -1: a crop of a row no output reads
        ("ic1ih3oc1kh4sh2", None),  # kernel larger than the input
        ("ic1ih7iw8oc1oh7ow4kh3kw3sw2ph1pw1", (1, 1)),
    ],
)
def test_symmetric_padding_examples(desc: str, symmetric: tuple[int, int] | None) -> None:
    s = parse(desc)
    assert s.symmetric_padding == symmetric
    assert (torch_symmetric_shape(s) == s.output_shape) == (symmetric is not None)


# --- random problems ----------------------------------------------------------------------------

NAME = st.text(alphabet=string.ascii_letters + string.digits + ":_-.*/#", max_size=12)


@st.composite
def conv_specs(draw: st.DrawFn, negative_top: bool = True, names: bool = True) -> ConvSpec:
    g = draw(st.integers(1, 3))
    fields: dict[str, object] = {
        "mb": draw(st.integers(1, 2)),
        "g": g,
        "ic": g * draw(st.integers(1, 3)),
        "oc": g * draw(st.integers(1, 3)),
        "bias": draw(st.booleans()),
        "name": draw(NAME) if names else "",
    }
    for axis in "hw":
        i, k = draw(st.integers(1, 12)), draw(st.integers(1, 5))
        s, d = draw(st.integers(1, 3)), draw(st.integers(1, 3))
        span = (k - 1) * d + 1
        top = draw(st.integers(-(i - 1) if negative_top else 0, k * d))
        # at least enough bottom padding for one output (never more than k*d is needed);
        # often the same as the top, so that torch's symmetric padding applies
        lowest = max(-(i - 1), span - i - top)
        if top >= lowest and draw(st.booleans()):
            bottom = top
        else:
            bottom = draw(st.integers(lowest, k * d))
        o = (i + top + bottom - span) // s + 1
        fields.update({"i" + axis: i, "k" + axis: k, "s" + axis: s, "d" + axis: d})
        fields.update({"p" + axis: top, "o" + axis: o})
    try:
        return ConvSpec(**fields)  # type: ignore[arg-type]
    except SpecError:
        assume(False)
        raise


HYPOTHESIS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HYPOTHESIS
@given(conv_specs(negative_top=False))
def test_random_round_trip(spec: ConvSpec) -> None:
    text = spec.format()
    assert parse(text) == spec
    # the same without the optional underscores (outside the option and the name)
    option, _, desc = text.rpartition(" ")
    body, n, name = desc.partition("n")
    assert parse(f"{option} {body.replace('_', '')}{n}{name}") == spec


@HYPOTHESIS
@given(conv_specs())
def test_random_output_shape_matches_torch(spec: ConvSpec) -> None:
    assert spec.ph + spec.ph_r + spec.ih == (spec.oh - 1) * spec.sh + (spec.kh - 1) * spec.dh + 1
    assert torch_output_shape(spec) == spec.output_shape
    sym = torch_symmetric_shape(spec)
    assert (spec.symmetric_padding is not None) == (sym == spec.output_shape)
    if spec.symmetric_padding is not None:
        assert spec.symmetric_padding == (spec.ph, spec.pw)


def direct_conv(
    s: ConvSpec, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None
) -> torch.Tensor:
    """benchdnn's reference convolution: out[n, k, oh, ow] sums x[n, c, oh*sh - ph + r*dh,
    ow*sw - pw + t*dw] * w[k, c, r, t] over the taps that land inside the input. It never
    uses the bottom/right padding, so it checks what the spec derives."""
    out = torch.zeros(s.output_shape, dtype=x.dtype)
    cg, kg = s.ic // s.g, s.oc // s.g
    for r in range(s.kh):
        rows = torch.arange(s.oh) * s.sh - s.ph + r * s.dh
        row_ok = (rows >= 0) & (rows < s.ih)
        for t in range(s.kw):
            cols = torch.arange(s.ow) * s.sw - s.pw + t * s.dw
            col_ok = (cols >= 0) & (cols < s.iw)
            patch = x[:, :, rows.clamp(0, s.ih - 1)][:, :, :, cols.clamp(0, s.iw - 1)]
            patch = patch * (row_ok[:, None] & col_ok[None, :])
            for grp in range(s.g):
                xs = patch[:, grp * cg : (grp + 1) * cg]
                ws = w[grp * kg : (grp + 1) * kg, :, r, t]
                out[:, grp * kg : (grp + 1) * kg] += torch.einsum("nchw,kc->nkhw", xs, ws)
    if b is not None:
        out += b[None, :, None, None]
    return out


@HYPOTHESIS
@given(conv_specs(names=False), st.integers(0, 2**31 - 1))
def test_random_numerics(spec: ConvSpec, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(spec.input_shape, generator=gen, dtype=torch.float64)
    w = torch.randn(spec.weight_shape, generator=gen, dtype=torch.float64)
    b = torch.randn(spec.oc, generator=gen, dtype=torch.float64) if spec.bias else None
    stride, dilation = (spec.sh, spec.sw), (spec.dh, spec.dw)
    padded = F.pad(x, (spec.pw, spec.pw_r, spec.ph, spec.ph_r))
    y = F.conv2d(padded, w, b, stride, 0, dilation, spec.g)
    assert y.shape == spec.output_shape
    torch.testing.assert_close(y, direct_conv(spec, x, w, b), atol=1e-12, rtol=0)
    if spec.symmetric_padding is not None:
        ref = F.conv2d(x, w, b, stride, spec.symmetric_padding, dilation, spec.g)
        torch.testing.assert_close(y, ref, atol=1e-12, rtol=0)


# --- corner cases of the descriptor --------------------------------------------------------


def test_negative_top_padding_is_a_crop() -> None:
    """benchdnn takes no negative value; convbench takes a negative ph/pw as a crop."""
    s = parse("ic4ih9oc4kh3ph-1")
    assert (s.ph, s.ph_r, s.oh) == (-1, -1, 5)


def test_round_trip_with_negative_top_padding() -> None:
    s = parse("ic1ih10oc1oh4kh3")
    assert s.ph == -2
    assert parse(s.format()) == s


@pytest.mark.parametrize("name", ["'x'", "''", "a\\\\b", "a\\", "a#b"])
def test_names_that_cannot_round_trip_are_refused(name: str) -> None:
    with pytest.raises(SpecError, match="name must be"):
        make(name=name)


def test_skip_unsupported_does_not_skip_errors_whose_text_mentions_it(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_text('ic3ih5oc4kh3\nic3ih2oc4kh5n"this_is_not_supported"\n')
    with pytest.raises(SpecError, match=":2: oh would be"):
        read_batch_file(path, skip_unsupported=True)


def test_option_after_descriptor_applies_only_to_later_ones(tmp_path: Path) -> None:
    path = tmp_path / "batch"
    path.write_text("mb2ic3ih5oc4kh3 --mb=8 mb2ic3ih6oc4kh3\n")
    assert [s.mb for s in read_batch_file(path)] == [2, 8]


def test_zero_stride_in_w_only_names_sw() -> None:
    with pytest.raises(SpecError, match=r"^sw must be at least 1"):
        parse("ic1ih5oc1kh3sw0")
