"""Whole networks: torchvision's parameter counts from the paper definitions, forward passes, the
worked example, the conv layers against the suites, seeding, the torchvision guard and bad
names."""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from convbench import models
from convbench.models import NAMES, SOURCE_EXAMPLE, SOURCE_PAPER, SOURCE_TORCHVISION, build
from convbench.spec import ConvSpec
from convbench.suites import get_suite
from tests.test_suites import SEED_OUTPUT

# torchvision's published counts (its weights tables' "num_params").
PARAMS = {
    "resnet50": 25_557_032,
    "vgg16": 138_357_544,
    "alexnet": 61_100_840,
    "mobilenet_v2": 3_504_872,
}


def _tiny() -> nn.Module:
    """A network factory for ``build("tests.test_models:_tiny")``."""
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())


def _tiny_broken() -> nn.Module:
    raise RuntimeError("no network today")


@pytest.fixture(autouse=True)
def no_torchvision(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Build from the paper definitions even where torchvision imports, so that they are what
    these tests check everywhere; the tests of the guard itself bring their own torchvision."""
    if "fake_torchvision" not in request.fixturenames:
        monkeypatch.setattr(models, "_torchvision_models", lambda: None)


@pytest.fixture(scope="module")
def built() -> Iterator[Callable[[str], models.Network]]:
    """``build(name)``, once per network for the tests that only read it (VGG-16 takes a
    second to build); the networks are let go after this file's tests."""
    cache: dict[str, models.Network] = {}

    def get(name: str) -> models.Network:
        if name not in cache:
            cache[name] = build(name)
        return cache[name]

    yield get
    cache.clear()


def _conv_specs(net: models.Network) -> list[ConvSpec]:
    """Every ``nn.Conv2d`` call of a minibatch-1 forward pass at the network's input size, as a
    problem without bias or name, in call order."""
    specs: list[ConvSpec] = []

    def hook(m: nn.Conv2d, inputs: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        (x,) = inputs
        specs.append(
            ConvSpec(
                mb=x.shape[0],
                g=m.groups,
                ic=x.shape[1],
                ih=x.shape[2],
                iw=x.shape[3],
                oc=out.shape[1],
                oh=out.shape[2],
                ow=out.shape[3],
                kh=m.kernel_size[0],
                kw=m.kernel_size[1],
                sh=m.stride[0],
                sw=m.stride[1],
                ph=m.padding[0],
                pw=m.padding[1],
                dh=m.dilation[0],
                dw=m.dilation[1],
                bias=False,
                padding_mode=m.padding_mode,
            )
        )

    convs = [m for m in net.module.modules() if isinstance(m, nn.Conv2d)]
    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        with torch.no_grad():
            net.module(torch.randn(1, *net.input_size))
    finally:
        for h in handles:
            h.remove()
    assert len(specs) == len(convs)
    return specs


# --- the networks -------------------------------------------------------------------------------


def test_names() -> None:
    assert NAMES == ("resnet50", "vgg16", "alexnet", "mobilenet_v2", "example")
    assert set(PARAMS) | {"example"} == set(NAMES)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_parameter_counts_are_torchvisions(
    name: str, built: Callable[[str], models.Network]
) -> None:
    net = built(name)
    assert net.name == name
    assert net.source == SOURCE_PAPER
    assert net.input_size == (3, 224, 224)
    assert sum(p.numel() for p in net.module.parameters()) == PARAMS[name]


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_forward_pass_is_random_and_finite(
    name: str, built: Callable[[str], models.Network]
) -> None:
    net = built(name)
    assert not net.module.training
    assert all(m.weight.abs().sum() > 0 for m in net.module.modules() if isinstance(m, nn.Conv2d))
    with torch.no_grad():
        y = net.module(torch.randn(1, *net.input_size, generator=torch.Generator().manual_seed(0)))
    assert y.shape == (1, 1000)
    assert torch.isfinite(y).all()
    assert y.unique().numel() > 1


def test_example_is_the_worked_example() -> None:
    net = build("example")
    assert (net.name, net.input_size, net.source) == ("example", (1, 5, 5), SOURCE_EXAMPLE)
    conv, relu, pool = net.module
    assert isinstance(conv, nn.Conv2d) and conv.bias is None
    assert conv.weight.tolist() == [[[[1.0, 0.0, -1.0]] * 3]]
    assert isinstance(relu, nn.ReLU) and isinstance(pool, nn.MaxPool2d)

    x = torch.arange(1, 26, dtype=torch.float32).reshape(1, 1, 5, 5)
    known = torch.tensor(SEED_OUTPUT, dtype=torch.float32).reshape(1, 1, 5, 5)
    with torch.no_grad():
        assert torch.equal(conv(x), known)
        y = net.module(x)
    assert y.tolist() == [[[[0.0, 0.0, 27.0], [0.0, 0.0, 57.0], [0.0, 0.0, 43.0]]]]
    assert torch.equal(y, F.max_pool2d(F.relu(known), 2, ceil_mode=True))


# --- the conv layers against the suites --------------------------------------------------------


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "mobilenet_v2"])
def test_conv_layers_are_the_suites(name: str, built: Callable[[str], models.Network]) -> None:
    """The suites list every distinct conv layer, ``*N`` counting its occurrences; the
    networks' own layers, captured while they run, must be exactly those."""
    found = Counter(_conv_specs(built(name)))
    suite = Counter(
        {replace(w.spec, name="", bias=False): w.spec.repeat for w in get_suite(name).workloads(1)}
    )
    assert set(found) == set(suite)
    assert found == suite


# --- seeding ------------------------------------------------------------------------------------


# VGG-16 is left out: three builds take five seconds, and its initialisation is MobileNetV2's.
@pytest.mark.parametrize("name", ["resnet50", "alexnet", "mobilenet_v2", "tests.test_models:_tiny"])
def test_seed_decides_the_weights(name: str) -> None:
    """Same seed, same weights (a rerun times the same network); another seed, other weights;
    and the caller's random state untouched."""
    state = torch.random.get_rng_state()
    a, b, c = (build(name, seed).module.state_dict() for seed in (3, 3, 4))
    assert torch.equal(torch.random.get_rng_state(), state)
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


# --- torchvision, where it imports --------------------------------------------------------------


@pytest.fixture
def fake_torchvision(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty ``torchvision`` package under ``tmp_path`` for the test to fill, the real one
    hidden, and the guard's cache cleared around the test."""
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        monkeypatch.delitem(sys.modules, mod)
    (tmp_path / "torchvision").mkdir()
    monkeypatch.syspath_prepend(str(tmp_path))
    models._torchvision_models.cache_clear()
    yield tmp_path / "torchvision"
    models._torchvision_models.cache_clear()
    for mod in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[mod]


def test_torchvision_is_used_where_it_imports(fake_torchvision: Path) -> None:
    (fake_torchvision / "__init__.py").write_text("")
    (fake_torchvision / "models.py").write_text(
        "from torch import nn\n"
        "def resnet50(weights):\n"
        "    assert weights is None\n"
        "    return nn.Sequential(nn.Dropout(), nn.Linear(2, 2))\n"
    )
    net = build("resnet50")
    assert net.source == SOURCE_TORCHVISION
    assert isinstance(net.module[1], nn.Linear) and not net.module.training
    assert build("example").source == SOURCE_EXAMPLE


def test_a_torchvision_that_fails_at_import_is_passed_over(fake_torchvision: Path) -> None:
    (fake_torchvision / "__init__.py").write_text(
        'raise RuntimeError("operator torchvision::nms does not exist")\n'
    )
    net = build("mobilenet_v2")
    assert net.source == SOURCE_PAPER
    assert sum(p.numel() for p in net.module.parameters()) == PARAMS["mobilenet_v2"]


# --- a user's network, and bad names ------------------------------------------------------------


def test_a_callable_builds_a_network() -> None:
    net = build("tests.test_models:_tiny")
    assert net.source == net.name == "tests.test_models:_tiny"
    assert net.input_size == (3, 224, 224)
    assert isinstance(net.module[0], nn.Conv2d) and not net.module.training


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("resnet", "unknown network 'resnet' (known: resnet50, vgg16, alexnet, mobilenet_v2, ex"),
        ("", "unknown network ''"),
        (":_tiny", "expected 'package.module:callable', got ':_tiny'"),
        ("tests.test_models:", "expected 'package.module:callable', got 'tests.test_models:'"),
        ("no_such_package.nets:net", "cannot import module 'no_such_package.nets' of network"),
        ("tests.test_models:_huge", "module 'tests.test_models' has no attribute '_huge'"),
        ("tests.test_models:PARAMS", "'tests.test_models:PARAMS' is not callable"),
        ("tests.test_models:_tiny_broken", "raised RuntimeError: no network today"),
        ("math:sqrt", "math:sqrt() raised TypeError"),
        ("math:pi", "'math:pi' is not callable"),
        ("builtins:dict", "builtins:dict() returned dict, not a torch.nn.Module"),
    ],
)
def test_bad_names_raise_value_error(name: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        build(name)
    text = str(info.value)
    assert message in text
    assert "\n" not in text
