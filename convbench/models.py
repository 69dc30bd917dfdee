"""Whole networks, randomly initialised, for ``convbench model NAME``.

A suite lists a network's convolution layers one by one; running the network itself measures
them as they really follow each other, with the activations, pooling and caches between them.
No weights are downloaded: timing does not depend on trained values, and a benchmark must run
offline.

Where ``import torchvision`` works, its models are the reference and are used as they are. It
cannot always be imported: a CPU build of torch with a torchvision built for another one fails
at import with a ``RuntimeError`` ("operator torchvision::nms does not exist"), and convbench does
not depend on torchvision at all. So each network is also written here once, from its paper,
with torchvision's layer structure and module names (the same parameter counts and
``state_dict`` keys) and its initialisation. :attr:`Network.source` records which was used.

A user's own network is named ``"package.module:callable"``: the callable is called with no
arguments and must return an ``nn.Module``.
"""

from __future__ import annotations

import functools
import importlib
from dataclasses import dataclass
from types import ModuleType

import torch
from torch import nn

__all__ = ["NAMES", "SOURCE_EXAMPLE", "SOURCE_PAPER", "SOURCE_TORCHVISION", "Network", "build"]

NAMES: tuple[str, ...] = ("resnet50", "vgg16", "alexnet", "mobilenet_v2", "example")

SOURCE_TORCHVISION = "torchvision"
SOURCE_PAPER = "convbench (from the paper)"
SOURCE_EXAMPLE = "convbench (the worked example)"

_IMAGENET_INPUT = (3, 224, 224)


@dataclass(frozen=True)
class Network:
    """A network ready to time, with what it takes and where it came from.

    ``module`` is in ``eval()`` mode, so dropout is off and batch norm uses its running
    statistics: a forward pass is then inference, the same computation at every call.
    ``input_size`` is ``(C, H, W)``, without the minibatch, which the caller chooses.
    ``source`` is ``"torchvision"``, ``"convbench (from the paper)"``, ``"convbench (the worked
    example)"`` or, for a user's network, the ``"package.module:callable"`` text it was built
    from, so a result says which definition was timed.
    """

    name: str
    module: nn.Module
    input_size: tuple[int, int, int]
    source: str


# --- initialisation, as torchvision does it -----------------------------------------------------


def _init_weights(net: nn.Module, *, linear_std: float | None) -> nn.Module:
    """He initialisation of the convolutions (fan-out, for ReLU), unit batch norms, and, given
    ``linear_std``, normal fully connected weights with zero bias; otherwise torch's default for
    those. This is torchvision's scheme for ResNet, VGG and MobileNetV2, so activations keep the
    scale a benchmark of the torchvision model would see."""
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear) and linear_std is not None:
            nn.init.normal_(m.weight, 0.0, linear_std)
            nn.init.zeros_(m.bias)
    return net


# --- building blocks ----------------------------------------------------------------------------


class _Classifier(nn.Module):
    """Convolutional ``features``, an adaptive average pool and a fully connected
    ``classifier``: the shape of VGG, AlexNet and MobileNetV2. The adaptive pool makes the
    classifier's input size independent of the image size."""

    def __init__(self, features: nn.Sequential, pool: int, classifier: nn.Sequential) -> None:
        super().__init__()
        self.features = features
        self.avgpool = nn.AdaptiveAvgPool2d(pool)
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _conv_bn_relu6(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1
) -> nn.Sequential:
    """Convolution without bias (batch norm's shift replaces it), batch norm and ReLU6:
    MobileNetV2's unit, with "same" padding for its odd kernels. ReLU6 keeps activations
    bounded for low-precision inference, the paper's reason for it."""
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU6(inplace=True),
    )


class _Bottleneck(nn.Module):
    """ResNet's bottleneck: 1x1 reduce, 3x3, 1x1 expand by 4, added to the shortcut.

    v1.5 strides in the 3x3 convolution rather than the first 1x1, as torchvision does, so no
    input pixel is skipped before the spatial convolution. The shortcut is a strided 1x1 with
    batch norm wherever the shape changes, the identity elsewhere.
    """

    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
            if stride != 1 or cin != cout
            else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return self.relu(out + shortcut)


class _ResNet50(nn.Module):
    """ResNet-50 (He et al. 2015, table 1, "50-layer"): a 7x7 stem and max pool, then 3, 4, 6
    and 3 bottlenecks of widths 64 to 512, the first of each stage but the first striding by 2,
    global average pool and a 1000-way fully connected layer."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin = 64
        for stage, (width, blocks) in enumerate(
            zip((64, 128, 256, 512), (3, 4, 6, 3), strict=True), 1
        ):
            layer = []
            for i in range(blocks):
                layer.append(_Bottleneck(cin, width, 2 if i == 0 and stage > 1 else 1))
                cin = width * _Bottleneck.expansion
            setattr(self, f"layer{stage}", nn.Sequential(*layer))
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(cin, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for stage in range(1, 5):
            x = getattr(self, f"layer{stage}")(x)
        return self.fc(torch.flatten(self.avgpool(x), 1))


class _InvertedResidual(nn.Module):
    """MobileNetV2's block: 1x1 expansion by ``expand`` (none when it is 1), 3x3 depthwise,
    linear 1x1 projection; the input is added back when stride and width are unchanged. The
    projection has no activation, since ReLU on the narrow bottleneck would destroy
    information (the paper's "linear bottleneck")."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = [_conv_bn_relu6(cin, hidden, 1)] if expand != 1 else []
        layers += [
            _conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden),
            nn.Conv2d(hidden, cout, 1, bias=False),
            nn.BatchNorm2d(cout),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


# --- the networks, from their papers ------------------------------------------------------------


def _resnet50() -> nn.Module:
    return _init_weights(_ResNet50(), linear_std=None)


# VGG's configuration D (Simonyan & Zisserman 2014, table 1): channels of each 3x3 convolution,
# "M" a 2x2 max pool.
_VGG16_D = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")


def _vgg16() -> nn.Module:
    """VGG-16 without batch norm: 13 3x3 convolutions with bias, five max pools, a 7x7 pool and
    two 4096-wide fully connected layers with dropout before the 1000-way one."""
    features: list[nn.Module] = []
    cin = 3
    for item in _VGG16_D:
        if item == "M":
            features.append(nn.MaxPool2d(2, 2))
        else:
            features += [nn.Conv2d(cin, item, 3, padding=1), nn.ReLU(inplace=True)]
            cin = item
    classifier = nn.Sequential(
        nn.Linear(512 * 7 * 7, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(4096, 1000),
    )
    return _init_weights(_Classifier(nn.Sequential(*features), 7, classifier), linear_std=0.01)


def _alexnet() -> nn.Module:
    """AlexNet as torchvision has it: the one-GPU variant of Krizhevsky's "One weird trick"
    (2014), 64, 192, 384, 256 and 256 channels without groups, a 6x6 adaptive pool and two
    4096-wide layers with dropout before them. torch's default initialisation, as torchvision."""
    features = nn.Sequential(
        nn.Conv2d(3, 64, 11, 4, 2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(64, 192, 5, padding=2),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
        nn.Conv2d(192, 384, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(384, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.Conv2d(256, 256, 3, padding=1),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2),
    )
    classifier = nn.Sequential(
        nn.Dropout(),
        nn.Linear(256 * 6 * 6, 4096),
        nn.ReLU(inplace=True),
        nn.Dropout(),
        nn.Linear(4096, 4096),
        nn.ReLU(inplace=True),
        nn.Linear(4096, 1000),
    )
    return _Classifier(features, 6, classifier)


# MobileNetV2's bottleneck table (Sandler et al. 2018, table 2): expansion t, output channels c,
# repeats n, stride s of the first repeat.
_MOBILENET_V2_TABLE = (
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
)


def _mobilenet_v2() -> nn.Module:
    """MobileNetV2 at width 1.0: a 32-channel strided 3x3 stem, the inverted residuals of the
    table, a 1x1 to 1280 channels, global average pool, dropout 0.2 and a 1000-way layer."""
    features = [_conv_bn_relu6(3, 32, 3, 2)]
    cin = 32
    for t, c, n, s in _MOBILENET_V2_TABLE:
        for i in range(n):
            features.append(_InvertedResidual(cin, c, s if i == 0 else 1, t))
            cin = c
    features.append(_conv_bn_relu6(cin, 1280, 1))
    classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))
    return _init_weights(_Classifier(nn.Sequential(*features), 1, classifier), linear_std=0.01)


def _example() -> nn.Module:
    """The worked example's convolution (padding 1, no bias, every kernel row ``[1, 0, -1]``)
    followed by ReLU and a 2x2 max pool: a network small enough to check by hand. The pool keeps
    the odd last row and column (``ceil_mode``): the image's positive outputs are all in its last
    column, so a floor pool would leave only zeros, which any wrong network could match."""
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.tensor([1.0, 0.0, -1.0]).expand(1, 1, 3, 3))
    return nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(2, ceil_mode=True))


_FROM_PAPER = {
    "resnet50": _resnet50,
    "vgg16": _vgg16,
    "alexnet": _alexnet,
    "mobilenet_v2": _mobilenet_v2,
}


@functools.cache
def _torchvision_models() -> ModuleType | None:
    """``torchvision.models``, or ``None`` where torchvision is missing or broken.

    Any exception counts as broken: a torchvision built for another torch raises
    ``RuntimeError`` at import, not ``ImportError``. Cached, since a failed import would be
    attempted, and fail, again on every call.
    """
    try:
        return importlib.import_module("torchvision.models")
    except Exception:
        return None


# --- a user's network ---------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__


def _from_callable(text: str) -> nn.Module:
    """The ``nn.Module`` that the callable named ``package.module:attr`` returns.

    Every failure is a ``ValueError`` with one line naming ``text``, so the command line can
    print it as it prints any other bad argument.
    """
    module_name, _, attr = text.partition(":")
    if not module_name or not attr:
        raise ValueError(f"expected 'package.module:callable', got {text!r}")
    try:
        obj: object = importlib.import_module(module_name)
    except Exception as exc:
        raise ValueError(
            f"cannot import module {module_name!r} of network {text!r}: {_first_line(exc)}"
        ) from exc
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"module {module_name!r} has no attribute {attr!r} (network {text!r})")
        obj = getattr(obj, part)
    if not callable(obj):
        raise ValueError(f"{text!r} is not callable")
    try:
        net = obj()
    except Exception as exc:
        raise ValueError(f"{text}() raised {_first_line(exc)}") from exc
    if not isinstance(net, nn.Module):
        raise ValueError(f"{text}() returned {type(net).__name__}, not a torch.nn.Module")
    return net


# --- the entry point ----------------------------------------------------------------------------


def build(name: str, seed: int = 0) -> Network:
    """The network ``name``, its weights drawn from ``seed``, in ``eval()`` mode.

    ``name`` is one of :data:`NAMES` or ``"package.module:callable"``. The weights are drawn on
    the CPU from a generator seeded with ``seed`` inside a forked random state: the same seed
    gives the same weights, so two runs time the same network, and the caller's random state
    is left as it was. Bad input raises ``ValueError`` with a one-line message.
    """
    if name not in NAMES and ":" not in name:
        raise ValueError(
            f"unknown network {name!r} (known: {', '.join(NAMES)}, or 'package.module:callable')"
        )
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        if name == "example":
            module, input_size, source = _example(), (1, 5, 5), SOURCE_EXAMPLE
        elif name in _FROM_PAPER:
            tv = _torchvision_models()
            if tv is not None:
                module, source = getattr(tv, name)(weights=None), SOURCE_TORCHVISION
            else:
                module, source = _FROM_PAPER[name](), SOURCE_PAPER
            input_size = _IMAGENET_INPUT
        else:
            module, input_size, source = _from_callable(name), _IMAGENET_INPUT, name
    return Network(name, module.eval(), input_size, source)
