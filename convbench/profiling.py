"""PyTorch profiler traces of one prepared case, and where its time goes, stage by stage.

A trace is written by ``torch.profiler.tensorboard_trace_handler`` into
``<run folder>/traces/<case>/<backend>_<device>_<dtype>.<timestamp>.pt.trace.json``: each case
folder is a run of TensorBoard's PyTorch Profiler tab (torch-tb-profiler) and each backend one
of its workers, so the backends of a case are compared side by side. The file is Chrome trace
JSON, which Perfetto and chrome://tracing open as it is.

The stages are what each profiled step calls directly: the ``record_function`` labels of the
backends (``winograd/gemm``, ``fft/forward``, ...) and any torch operator called outside them.
Profiling slows what it watches, so it never runs during the timed calls.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import TYPE_CHECKING

from torch.profiler import ProfilerActivity, profile, schedule, tensorboard_trace_handler

from convbench.measure.memory import quiet_stderr

if TYPE_CHECKING:  # the sweep calls into this module
    from torch.autograd.profiler_util import FunctionEvent

    from convbench.sweep import Case, Ready

__all__ = ["TRACES", "Profile", "Stage", "case_folder", "profile_ready", "worker_name"]

TRACES = "traces"
_STEP = "ProfilerStep"


@dataclass(frozen=True)
class Stage:
    """One stage of a step, averaged over the profiled steps. ``device_s`` is the time of the
    kernels it launched (CUDA only; on the CPU the stage's own time is the work)."""

    name: str
    calls: float
    cpu_s: float
    device_s: float


@dataclass(frozen=True)
class Profile:
    """A profiled case: its trace file, the mean wall time of a profiled step, its stages
    (largest first), and the time of each stage that says what it costs: the kernels' device
    time on CUDA, where the CPU only launches them; the CPU time on the CPU."""

    trace: Path
    step_s: float
    stages: list[Stage]
    seconds: dict[str, float]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", text).strip("-") or "case"


def case_folder(case: Case) -> str:
    """The case's trace folder: its name (or descriptor) made file-safe, plus a hash of the
    full problem, so that two problems that share a name never share a folder."""
    spec = case.spec.format()
    digest = hashlib.sha1(f"{spec}|{case.workload.fill}".encode()).hexdigest()[:8]
    label = case.spec.name or spec.split()[-1]
    return f"{_slug(label)}-{digest}"


def worker_name(case: Case) -> str:
    """The worker's name in TensorBoard; no dots, which its file-name pattern splits on."""
    return _slug(f"{case.backend}_{case.device}_{case.dtype}")


def _device_us(event: FunctionEvent) -> float:
    """The device time of an event's kernels: ``cuda_time_total`` before torch 2.4."""
    if hasattr(event, "device_time_total"):
        return event.device_time_total
    return event.cuda_time_total


def _stages(events: list[FunctionEvent], steps: int) -> tuple[float, list[Stage]]:
    """Mean step time and the direct children of the steps, aggregated by name, per step."""
    step_us = 0.0
    calls: dict[str, int] = defaultdict(int)
    cpu_us: dict[str, float] = defaultdict(float)
    device_us: dict[str, float] = defaultdict(float)
    for step in (e for e in events if e.name.startswith(_STEP)):
        step_us += step.cpu_time_total
        for child in step.cpu_children:
            calls[child.name] += 1
            cpu_us[child.name] += child.cpu_time_total
            device_us[child.name] += _device_us(child)
    stages = [
        Stage(name, calls[name] / steps, cpu_us[name] / steps / 1e6, device_us[name] / steps / 1e6)
        for name in calls
    ]
    return step_us / steps / 1e6, stages


def profile_ready(r: Ready, traces: Path, steps: int = 5) -> Profile:
    """Profile ``steps`` calls of ``r`` (after one unrecorded warm-up call) and write the trace
    under ``traces`` with shapes and memory recorded."""
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    folder = traces / case_folder(r.case)
    worker = worker_name(r.case)
    before = set(folder.glob(f"{worker}.*.pt.trace.json"))
    activities = [ProfilerActivity.CPU]
    if r.case.device.startswith("cuda"):  # the kernels, on the device's own clock
        activities.append(ProfilerActivity.CUDA)
    write = tensorboard_trace_handler(str(folder), worker_name=worker)
    events: list[FunctionEvent] = []

    def on_trace_ready(p: profile) -> None:
        # The profiler drops its events when the cycle ends: keep them while they exist.
        write(p)
        events.extend(p.events())

    prof = profile(
        activities=activities,
        schedule=schedule(wait=0, warmup=1, active=steps, repeat=1),
        on_trace_ready=on_trace_ready,
        record_shapes=True,
        profile_memory=True,
    )
    # Kineto logs a line to file descriptor 2 each time it starts and stops recording, which
    # happens inside ``step()``; the calls themselves already ran, unsilenced, when timed.
    with quiet_stderr(), prof:
        for _ in range(steps + 1):
            r()
            prof.step()
    written = sorted(set(folder.glob(f"{worker}.*.pt.trace.json")) - before)
    if not written:
        raise RuntimeError(f"the profiler wrote no trace into {folder}")
    step_s, stages = _stages(events, steps)
    cost = attrgetter("device_s" if r.case.device.startswith("cuda") else "cpu_s")
    stages.sort(key=cost, reverse=True)
    return Profile(written[-1], step_s, stages, {s.name: cost(s) for s in stages})
