"""Turns workloads × backends × devices × dtypes into records.

Order: all cases of one workload together, so its seeded inputs and float64 reference are made
once and shared. Pairing: the backends of one problem on one device and dtype are prepared
together and timed in interleaved rounds (``measure_rounds``), so each one's speed-up over the
baseline backend comes from per-round ratios with a confidence interval, untouched by what the
machine did between one backend and the next. Isolation: whatever one case raises becomes that
case's ``failed`` record and the sweep goes on; a case that kills or hangs the process it runs
in is the business of the supervisor that runs this loop in a worker (``executor``).
"""

from __future__ import annotations

import gc
import itertools
import random
import socket
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from convbench import backends
from convbench.backends.base import UnsupportedConfig, conv_input
from convbench.env import device_name
from convbench.inputs import Inputs, make_inputs
from convbench.measure.accuracy import Accuracy, compare
from convbench.measure.allocator import keep_freed_memory
from convbench.measure.cache import regime_sampler, regime_timing
from convbench.measure.memory import allocation
from convbench.measure.timing import (
    Clock,
    Rounds,
    Sampler,
    Timing,
    TimingConfig,
    measure_rounds,
)
from convbench.profiling import TRACES, profile_ready
from convbench.results import Record, case_key
from convbench.spec import ConvSpec
from convbench.suites import Workload

__all__ = [
    "DTYPES",
    "Case",
    "Ready",
    "SweepConfig",
    "estimate_bytes",
    "failed_record",
    "groups",
    "make_ready",
    "pairable",
    "parse_dtype",
    "pending_cases",
    "plan",
    "ready",
    "reference",
    "run_cases",
    "timing_fields",
]

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float64": torch.float64,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
_ALIASES = {
    "fp32": "float32",
    "f32": "float32",
    "float": "float32",
    "fp64": "float64",
    "f64": "float64",
    "double": "float64",
    "fp16": "float16",
    "f16": "float16",
    "half": "float16",
    "bf16": "bfloat16",
}


def parse_dtype(name: str) -> str:
    """The canonical name of a dtype given by name or common alias."""
    key = _ALIASES.get(name.strip().lower(), name.strip().lower())
    if key not in DTYPES:
        raise ValueError(f"unknown dtype {name!r} (known: {', '.join(DTYPES)})")
    return key


@dataclass(frozen=True)
class Case:
    workload: Workload
    backend: str
    device: str
    dtype: str

    @property
    def spec(self) -> ConvSpec:
        return self.workload.spec

    @property
    def key(self) -> tuple[str, str, str, str]:
        return case_key(self.spec.format(), self.backend, self.device, self.dtype)


@dataclass
class SweepConfig:
    backends: list[str]
    devices: list[str] = field(default_factory=lambda: ["cpu"])
    dtypes: list[str] = field(default_factory=lambda: ["float32"])
    threads: int = 1
    timing: TimingConfig = field(default_factory=TimingConfig)
    seed: int = 0
    max_memory: int | None = None
    profile_steps: int = 0  # profile each case for this many steps after timing it (0: no)
    baseline: str = "torch"  # the backend every speed-up is taken over
    cold_cache: bool = False  # time each call after evicting the caches (measure.cache)


def plan(workloads: Iterable[Workload], config: SweepConfig) -> list[Case]:
    return [
        Case(w, b, d, t)
        for w in workloads
        for d in config.devices
        for t in config.dtypes
        for b in config.backends
    ]


def estimate_bytes(spec: ConvSpec, dtype: str) -> int:
    """Memory a case needs at least: its tensors, the float64 inputs and reference, and the
    column buffer of torch's float64 im2col that computes the reference."""
    case = sum(spec.bytes(DTYPES[dtype].itemsize).values())
    ref = sum(spec.bytes(8).values())
    columns = (spec.ic // spec.g) * spec.kh * spec.kw * spec.oh * spec.ow * 8 * spec.g
    return case + ref + columns


def reference(spec: ConvSpec, inputs: Inputs) -> torch.Tensor:
    """The problem in float64 on the CPU, through torch's own im2col path (not oneDNN)."""
    x, padding = conv_input(spec, inputs.x.to(torch.float64))
    with torch.no_grad():
        return F.conv2d(
            x,
            inputs.weight.to(torch.float64),
            None if inputs.bias is None else inputs.bias.to(torch.float64),
            (spec.sh, spec.sw),
            padding,
            (spec.dh, spec.dw),
            spec.g,
        )


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@dataclass
class Ready:
    """One case made ready to call: what ``convbench run``, asv and pytest-benchmark all time.

    Everything a timed call must not include is done before a ``Ready`` exists: the seeded
    inputs, the float64 reference, the backend's ``prepare`` and the accuracy of its first
    output. Calling it runs one convolution and waits for the device, so a timer that reads a
    host clock around the call (asv's, pytest-benchmark's) measures the work, not its launch.
    """

    case: Case
    fn: Callable[[torch.Tensor], torch.Tensor]
    x: torch.Tensor
    prepare_s: float
    accuracy: Accuracy
    tolerance: float
    peak_bytes: int
    prepare_bytes: int

    def run(self) -> torch.Tensor:
        """One convolution, without waiting for the device (for timers that do their own)."""
        return self.fn(self.x)

    def __call__(self) -> None:
        with torch.no_grad():
            self.fn(self.x)
        _sync(self.case.device)

    @property
    def accurate(self) -> bool:
        return self.accuracy.rel_l2_error <= self.tolerance

    @property
    def algorithm(self) -> str:
        return getattr(self.fn, "algorithm", "")

    @property
    def params(self) -> dict[str, Any]:
        return getattr(self.fn, "params", {})


def make_ready(case: Case, inputs: Inputs, ref: torch.Tensor) -> Ready:
    """Prepare ``case`` on ``inputs`` and check its first output against ``ref``.

    For a case the backend ``supports`` (``ready`` and the sweep ask first); ``prepare`` may
    still raise ``UnsupportedConfig``.
    """
    keep_freed_memory()  # before prepare, whose tuning times the candidates
    backend = backends.get(case.backend)
    dtype = DTYPES[case.dtype]
    data = inputs.to(case.device, dtype)
    with torch.no_grad():
        _sync(case.device)
        t0 = time.perf_counter()
        fn = backend.prepare(case.spec, data.weight, data.bias)
        _sync(case.device)
        prepare_s = time.perf_counter() - t0
        # Memory in calls of their own: the profiler that sees CPU allocations slows what it
        # watches, so neither the timed prepare nor any timed call runs under it.
        _, kept = allocation(
            lambda: backend.prepare(case.spec, data.weight, data.bias), case.device
        )
        y, used = allocation(lambda: fn(data.x), case.device)
        acc = compare(y, ref)
    return Ready(
        case,
        fn,
        data.x,
        prepare_s,
        acc,
        backend.tolerance(dtype, case.device),
        peak_bytes=used.peak_bytes,
        prepare_bytes=kept.net_bytes,
    )


def ready(case: Case, seed: int = 0) -> Ready:
    """``make_ready`` with the case's own seeded inputs and float64 reference; raises
    ``UnsupportedConfig`` for a case the backend declines."""
    reason = backends.get(case.backend).supports(case.spec, case.device, DTYPES[case.dtype])
    if reason:  # before the reference, which may be costly, is computed for nothing
        raise UnsupportedConfig(reason)
    inputs = make_inputs(case.spec, case.workload.fill, seed)
    return make_ready(case, inputs, reference(case.spec, inputs))


def timing_fields(t: Timing, flops: int) -> dict[str, Any]:
    """A record's timing fields from a ``Timing``: what ``run`` and ``ab`` both write."""
    return dict(
        median_s=t.median_s,
        iqr_s=t.iqr_s,
        min_s=t.min_s,
        mean_s=t.mean_s,
        repeats=t.repeats,
        number=t.number,
        samples_s=t.samples_s,
        gflops=flops / t.median_s / 1e9 if t.median_s > 0 else None,
        noisy=t.noisy,
        rounds=t.repeats,
    )


def _record(
    r: Ready,
    rounds: Rounds,
    config: SweepConfig,
    base: dict[str, object],
    store: Path,
) -> Record:
    """The record of one timed case, profiled afterwards if asked."""
    case, timing = r.case, rounds.timings[r.case.backend]
    profiled: dict[str, Any] = {}
    notes = []
    if config.profile_steps:
        try:
            p = profile_ready(r, store / TRACES, config.profile_steps)
        except Exception as exc:  # the timing stands; the record says why it has no trace
            notes.append(f"not profiled: {type(exc).__name__}: {exc}")
        else:
            profiled = dict(
                trace=p.trace.relative_to(store).as_posix(), profile_s=p.step_s, stages=p.seconds
            )
    err = r.accuracy.rel_l2_error
    if not r.accurate:
        notes.insert(0, f"relative L2 error {err:.3g} exceeds the tolerance {r.tolerance:.3g}")
    speedup = rounds.speedup(case.backend)
    return Record(
        **base,  # type: ignore[arg-type]
        status="ok" if r.accurate else "inaccurate",
        reason="; ".join(notes),
        **timing_fields(timing, case.spec.flops),
        prepare_s=r.prepare_s,
        peak_bytes=r.peak_bytes,
        prepare_bytes=r.prepare_bytes,
        rel_l2_error=err,
        max_abs_error=r.accuracy.max_abs_error,
        tolerance=r.tolerance,
        algorithm=r.algorithm,
        algorithm_params=r.params,
        baseline=rounds.baseline or "",
        speedup=speedup.value if speedup else None,
        speedup_lo=speedup.lo if speedup else None,
        speedup_hi=speedup.hi if speedup else None,
        **profiled,
    )


def _skip_reason(case: Case, config: SweepConfig) -> str | None:
    backend = backends.get(case.backend)
    reason = backend.supports(case.spec, case.device, DTYPES[case.dtype])
    if reason:
        return reason
    if config.max_memory is not None:
        need = estimate_bytes(case.spec, case.dtype)
        if need > config.max_memory:
            return (
                f"estimated memory {need / 2**20:.1f} MiB exceeds --max-memory "
                f"{config.max_memory / 2**20:.1f} MiB"
            )
    return None


def _base(case: Case, config: SweepConfig, run_id: str) -> dict[str, object]:
    """The fields every record of ``case`` has, whatever its outcome."""
    return dict(
        run_id=run_id,
        spec=case.spec.format(),
        name=case.spec.name,
        backend=case.backend,
        device=case.device,
        dtype=case.dtype,
        fill=case.workload.fill,
        seed=config.seed,
        threads=config.threads,  # run_cases sets torch's threads to it wherever it runs
        flops=case.spec.flops,
        cache="cold" if config.cold_cache else "warm",
        layer_repeat=case.spec.repeat,
        host=socket.gethostname(),
        device_name=device_name(case.device),
    )


def _failure(base: dict[str, object], exc: Exception) -> Record:
    if isinstance(exc, UnsupportedConfig):
        return Record(**base, status="unsupported", reason=str(exc))  # type: ignore[arg-type]
    return Record(**base, status="failed", reason=f"{type(exc).__name__}: {exc}".strip())  # type: ignore[arg-type]


def groups(cases: list[Case]) -> list[list[Case]]:
    """The cases of one problem on one device and dtype: what is timed side by side."""
    key: Callable[[Case], tuple[Workload, str, str]] = lambda c: (c.workload, c.device, c.dtype)  # noqa: E731
    return [list(g) for _, g in itertools.groupby(cases, key)]


def failed_record(case: Case, config: SweepConfig, run_id: str, reason: str) -> Record:
    """A ``failed`` record for a case that never returned one (its worker died or hung)."""
    return Record(**_base(case, config, run_id), status="failed", reason=reason)  # type: ignore[arg-type]


def pairable(records: Iterable[Record], baseline: str) -> set[tuple[str, str, str, str]]:
    """Keys of the baseline cases already recorded that may be timed again beside the rest of
    their problem (a resumed or restarted group): those that ran, not those that failed."""
    return {r.key for r in records if r.backend == baseline and r.status in ("ok", "inaccurate")}


def _marked(sampler: Sampler, mark: Callable[[Case], None], case: Case) -> Sampler:
    """``sampler``, announcing ``case`` before each sample."""

    def sample(number: int) -> float:
        mark(case)
        return sampler(number)

    return sample


def run_cases(
    cases: list[Case],
    config: SweepConfig,
    run_id: str,
    folder: Path,
    emit: Callable[[Case, Record], None],
    *,
    retime: set[tuple[str, str, str, str]] = frozenset(),  # type: ignore[assignment]
    on_start: Callable[[Case], None] | None = None,
    on_call: Callable[[Case], None] | None = None,
) -> None:
    """Run ``cases`` (in plan order), handing each record to ``emit`` as it is made.

    A case in ``retime`` (a baseline already recorded) is prepared and timed beside the others
    of its problem so that their speed-ups stay paired, and emits nothing. ``on_call(case)`` is
    called whenever ``case``'s own code is about to run — its preparation, each timed turn — so
    that a supervisor can tell which case a crash or a hang belongs to.
    """
    torch.set_num_threads(config.threads)
    current: tuple[Workload | None, Inputs | None, torch.Tensor | None] = (None, None, None)
    rng = random.Random(config.seed)
    mark = on_call or (lambda case: None)

    for group in groups(cases):
        readies: dict[str, Ready] = {}
        for case in group:
            if case.key not in retime and on_start:
                on_start(case)
            mark(case)
            base = _base(case, config, run_id)
            try:
                reason = _skip_reason(case, config)
                if reason:
                    raise UnsupportedConfig(reason)
                if current[0] != case.workload:
                    current = (None, None, None)
                    gc.collect()
                    inputs = make_inputs(case.spec, case.workload.fill, config.seed)
                    current = (case.workload, inputs, reference(case.spec, inputs))
                readies[case.backend] = make_ready(case, current[1], current[2])  # type: ignore[arg-type]
            except Exception as exc:  # isolation: any error is this case's record
                if case.key not in retime:
                    emit(case, _failure(base, exc))
        if readies:
            clock = Clock(group[0].device)
            cold = config.cold_cache
            with torch.no_grad():
                rounds = measure_rounds(
                    {
                        b: _marked(regime_sampler(clock, r.run, r.x, cold), mark, r.case)
                        for b, r in readies.items()
                    },
                    regime_timing(config.timing, cold),
                    baseline=config.baseline,
                    rng=rng,
                )
        for backend, r in readies.items():
            case = r.case
            if case.key in retime:
                continue
            mark(case)
            base = _base(case, config, run_id)
            try:
                if backend in rounds.errors:
                    raise rounds.errors[backend]  # type: ignore[misc]
                record = _record(r, rounds, config, base, folder)
            except Exception as exc:
                record = _failure(base, exc)
            emit(case, record)
        readies.clear()
        if group[0].device == "cuda" and torch.cuda.is_available():
            torch.cuda.empty_cache()


def pending_cases(
    workloads: Iterable[Workload], config: SweepConfig, done: Iterable[Record]
) -> tuple[list[Case], set[tuple[str, str, str, str]]]:
    """The cases of the plan that ``done`` lacks, in plan order, each problem's baseline among
    them where it must be timed again (its record kept) for the others' pairing; and the keys of
    those baselines."""
    done = list(done)
    have = {r.key for r in done}
    again = pairable(done, config.baseline)
    cases, retime = [], set()
    for group in groups(plan(workloads, config)):
        todo = [c for c in group if c.key not in have]
        if not todo:
            continue
        cases += todo
        for c in group:
            if c.key in again and c.backend == config.baseline:
                cases.append(c)
                retime.add(c.key)
    return cases, retime
