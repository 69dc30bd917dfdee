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
from pathlib import Path
from typing import Any, ClassVar

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


class _Instructions:
    """Instructions per call of each CPU float32 case under callgrind, one thread: a history
    that does not move with the machine's load, so ``asv continuous`` can trust a small change.

    Importing torch under valgrind alone takes tens of seconds, so ``setup_cache`` counts every
    case of every instruction suite in ONE valgrind process; being defined once, here, it has one
    key for all the subclasses, and asv runs it once and hands each of them the same counts. A
    case without a count (declined, failed, or no valgrind here) raises ``NotImplementedError``
    in ``setup``: asv shows ``n/a``.
    """

    param_names = ("case", "backend")
    workloads: ClassVar[dict[str, Workload]] = {}

    def setup_cache(self) -> dict[str, Any]:
        from convbench import instructions

        reason = instructions.valgrind_reason()
        if reason:
            return {"reason": reason, "counts": {}}
        run = instructions.count_instructions(
            instructions.gate_cases(INSTRUCTION_SUITES), workdir=Path("callgrind")
        )
        return {
            "reason": "",
            "counts": {(c.spec, c.backend): c.instructions or c.reason for c in run.counts},
        }

    setup_cache.timeout = 3600  # type: ignore[attr-defined]

    def setup(self, cache: dict[str, Any], case: str, backend: str) -> None:
        spec = self.workloads[case].spec
        count = cache["counts"].get((spec.format(), backend))
        if not isinstance(count, float):
            declined = backends.get(backend).supports(spec, "cpu", torch.float32)
            raise NotImplementedError(cache["reason"] or declined or count)
        self.count = count

    def track_instructions(self, cache: dict[str, Any], case: str, backend: str) -> float:
        """Instructions of one call after its warm-up calls, glibc's allocator left out (see
        ``convbench.instructions``)."""
        return self.count

    track_instructions.unit = "instructions"  # type: ignore[attr-defined]


# Under valgrind a smoke case takes seconds, a representative one minutes (hours for the suite):
# instruction classes are for the suites CONVBENCH_ASV_INSTRUCTIONS names, smoke alone by default.
INSTRUCTION_SUITES = tuple(
    n.strip() for n in os.environ.get("CONVBENCH_ASV_INSTRUCTIONS", "smoke").split(",") if n.strip()
)

for _name in INSTRUCTION_SUITES:
    _timed = _suite_class(_name)
    _cls = type(
        f"{_timed.__name__}Instructions",
        (_Instructions,),
        {
            "__doc__": f"{_timed.__doc__}: instructions per call",
            "workloads": _timed.workloads,
            "params": (list(_timed.workloads), backends.names()),
        },
    )
    globals()[_cls.__name__] = _cls
