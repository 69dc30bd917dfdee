"""The asv suite, built from ``convbench.suites``: one class per suite, SciPy-style.

Each class is parameterised over case × backend × device and times exactly what
``convbench run`` times — ``convbench.sweep.ready`` makes the seeded inputs, the float64
reference and the backend's ``prepare`` in ``setup``, so the timed call is one convolution
with the device synchronised. A combination a backend declines (or a device this machine
lacks) raises ``NotImplementedError`` in ``setup``, which asv shows as skipped, ``n/a``.

The default suites keep ``asv run`` to minutes; ``CONVBENCH_ASV_SUITES`` names others to add
(``CONVBENCH_ASV_SUITES=resnet50,vgg16 asv run``). Each suite keeps its own class, so its
history never mixes with another's. ``CONVBENCH_ASV_THREADS`` sets the CPU threads (default:
all cores); one thread is steadier on a machine whose other cores come and go.
"""

from __future__ import annotations

import os
from typing import ClassVar

import torch

from convbench import backends
from convbench.backends.base import UnsupportedConfig
from convbench.env import cpu_count
from convbench.suites import Workload, get_suite
from convbench.sweep import Case, Ready, ready

DEFAULT_SUITES = ("smoke", "representative")
DEVICES = ("cpu", "cuda")
DTYPE = "float32"


class _Conv:
    """What every suite's class shares; its subclasses set ``workloads`` and ``params``."""

    param_names = ("case", "backend", "device")
    workloads: ClassVar[dict[str, Workload]] = {}
    timeout = 300

    def setup(self, case: str, backend: str, device: str) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise NotImplementedError("no CUDA device")
        torch.set_num_threads(int(os.environ.get("CONVBENCH_ASV_THREADS") or cpu_count()))
        try:
            self.ready: Ready = ready(Case(self.workloads[case], backend, device, DTYPE))
        except UnsupportedConfig as exc:
            raise NotImplementedError(str(exc)) from None

    def time_conv(self, case: str, backend: str, device: str) -> None:
        """Seconds per convolution, device synchronised."""
        self.ready()

    def track_rel_error(self, case: str, backend: str, device: str) -> float:
        """Relative L2 error of the output against the float64 reference."""
        return self.ready.accuracy.rel_l2_error

    track_rel_error.unit = "relative L2 error"  # type: ignore[attr-defined]

    def track_peak_bytes(self, case: str, backend: str, device: str) -> int:
        """Most bytes allocated at once during one call, above what was live before it."""
        return self.ready.peak_bytes

    track_peak_bytes.unit = "bytes"  # type: ignore[attr-defined]


def _suite_class(name: str) -> type:
    suite = get_suite(name)
    workloads = {w.spec.name: w for w in suite.workloads()}
    class_name = "".join(part.capitalize() for part in name.split("_"))
    return type(
        class_name,
        (_Conv,),
        {
            "__doc__": suite.description,
            "workloads": workloads,
            "params": (list(workloads), backends.names(), list(DEVICES)),
        },
    )


def _suites() -> list[str]:
    extra = os.environ.get("CONVBENCH_ASV_SUITES", "")
    names = list(DEFAULT_SUITES)
    names += [n.strip() for n in extra.split(",") if n.strip() and n.strip() not in names]
    return names


for _name in _suites():
    _cls = _suite_class(_name)
    globals()[_cls.__name__] = _cls
