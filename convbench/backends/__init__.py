"""The registry of convolution backends.

Backends of the project register here; a user's own backends register from the modules named
in the ``CONVBENCH_PLUGINS`` environment variable (comma-separated), each of which calls
:func:`register` when imported.
"""

from __future__ import annotations

import importlib
import os

import torch

from convbench.backends.base import Backend, Prepared, UnsupportedConfig
from convbench.backends.direct import DirectBackend
from convbench.backends.fft import FFTScipyBackend, FFTTorchBackend
from convbench.backends.im2col import Im2colBackend
from convbench.backends.torch_native import TorchBackend, TorchCudnnAutotuneBackend
from convbench.backends.winograd import WinogradBackend

__all__ = [
    "Backend",
    "Prepared",
    "UnsupportedConfig",
    "all_backends",
    "available",
    "device_reason",
    "get",
    "names",
    "register",
]

_REGISTRY: dict[str, Backend] = {}
_plugins_loaded = False


def register(backend: Backend, *, replace: bool = False) -> Backend:
    """Add ``backend`` under its name; a second one of the same name needs ``replace``."""
    if not isinstance(backend, Backend):
        raise TypeError(f"{backend!r} does not implement the Backend protocol")
    if backend.name in _REGISTRY and not replace:
        raise ValueError(f"a backend named {backend.name!r} is already registered")
    _REGISTRY[backend.name] = backend
    return backend


def unregister(name: str) -> None:
    _REGISTRY.pop(name, None)


def _load_plugins() -> None:
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for module in filter(
        None, (m.strip() for m in os.environ.get("CONVBENCH_PLUGINS", "").split(","))
    ):
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"cannot import backend plugin {module!r}: {exc}") from None


def names() -> list[str]:
    """The names of every registered backend, in registration order."""
    _load_plugins()
    return list(_REGISTRY)


def all_backends() -> list[Backend]:
    _load_plugins()
    return list(_REGISTRY.values())


def device_reason(backend: Backend, device: str) -> str | None:
    """Why ``backend`` cannot run on ``device`` at all (``None`` if it can): what it says of a
    small 3x3 float32 problem, which every backend accepts where it runs."""
    from convbench.spec import parse

    return backend.supports(parse("mb1ic1ih4oc1kh3"), device, torch.float32)


def available(devices: list[str]) -> list[str]:
    """The backends that can run on at least one of ``devices``."""
    return [b.name for b in all_backends() if any(device_reason(b, d) is None for d in devices)]


def get(name: str) -> Backend:
    """The backend called ``name``; a ``KeyError`` lists the known names."""
    _load_plugins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown backend {name!r} (known: {', '.join(_REGISTRY)})") from None


for _backend in (
    TorchBackend(),
    TorchCudnnAutotuneBackend(),
    DirectBackend(),
    Im2colBackend(),
    FFTScipyBackend(),
    FFTTorchBackend(),
    WinogradBackend(2),
    WinogradBackend(4),
    WinogradBackend(6),
):
    register(_backend)
