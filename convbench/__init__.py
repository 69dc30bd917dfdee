"""convbench: benchmark 2-D convolution algorithms for speed, memory and accuracy."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("convbench")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

from convbench import nn
from convbench.backends.base import UnsupportedConfig
from convbench.functional import conv2d
from convbench.nn import convert
from convbench.spec import ConvSpec, SpecError, parse

__all__ = [
    "ConvSpec",
    "SpecError",
    "UnsupportedConfig",
    "__version__",
    "conv2d",
    "convert",
    "nn",
    "parse",
]
