"""Instruction counts under callgrind: a metric of a case that does not move with the machine.

Wall time on a shared machine drifts by tens of percent between identical runs; the number of
instructions one call executes hardly moves: the 48 smoke cases counted in three separate runs
here agreed to 0.05 % (median) and 0.26 % (worst). So a CI gate can judge counts against a
committed baseline with a margin of 2 %, where timings need 1.8x.

Counting is a second pass, after any timing: valgrind slows code 50-100x, so ONE valgrind
process (``_count_child.py``) counts every case of a pass, with collection switched on only
around each case's calls and a dump after them. Valgrind runs one thread at a time, so a pass
may be split into contiguous parts, one process each, run at once (``count_in_parts``): the
gate's 48 cases in two. Three things keep a count from depending on
what ran before it: warm-up calls (Python's adaptive interpreter specialises a function after
some 8 calls), no garbage collection around the counted calls, and leaving glibc's allocator
out of the count (its searches depend on the heap's whole history: ``read_dump``).

What a count cannot see is recorded beside it (``CountRun.info``): valgrind runs one thread at a
time and emulates no AVX-512, so the counted code path can differ from the timed one — the ISA
oneDNN and ATen dispatch to under valgrind and outside it are both probed and kept.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from convbench import backends
from convbench.env import cpu_model
from convbench.results import Record, RunStore, case_key
from convbench.spec import parse
from convbench.suites import Workload, get_suite
from convbench.sweep import DTYPES, Case

__all__ = [
    "CALLS",
    "GATE_PARTS",
    "GATE_SUITES",
    "CaseCount",
    "CountError",
    "CountRun",
    "baseline_differences",
    "count_in_parts",
    "count_instructions",
    "count_run",
    "gate_cases",
    "gate_counts",
    "gate_key",
    "make_baseline",
    "read_baseline",
    "read_dump",
    "valgrind_reason",
]

CALLS = 1  # counted calls per case, after the uncounted warm-up calls
WARMUP, WARMUP_FLOPS = 10, 1e8  # warm-up calls of a case under WARMUP_FLOPS (else one)
CHILD = Path(__file__).with_name("_count_child.py")
GATE_SUITES = ("smoke",)  # what ``gate --instructions`` counts (see gate_cases)
GATE_PARTS = 2  # valgrind processes it counts them in, at once; fixed, as the counts depend on it
_SWITCHES = ("_valgrind_supported_platform", "_valgrind_toggle", "_valgrind_toggle_and_dump_stats")
# LLVM's haswell (AVX2, FMA, BMI): what valgrind executes, as Numba's feature string.
HASWELL_FEATURES = (
    "+64bit,+avx,+avx2,+bmi,+bmi2,+cmov,+crc32,+cx16,+cx8,+f16c,+fma,+fsgsbase,+fxsr,+invpcid,"
    "+lzcnt,+mmx,+movbe,+pclmul,+popcnt,+rdrnd,+sahf,+sse,+sse2,+sse3,+sse4.1,+sse4.2,+ssse3,"
    "+xsave,+xsaveopt"
)
_OUT = "callgrind.out"  # callgrind names the n-th dump callgrind.out.n
_ALLOCATOR = ("/malloc/malloc.c", "/malloc/arena.c")  # glibc's malloc, free, memalign, ...


class CountError(RuntimeError):
    """The counting process as a whole failed (not one case of it): says why in one line."""


def valgrind_reason() -> str | None:
    """Why instructions cannot be counted here, in one line; ``None`` when they can."""
    if not sys.platform.startswith("linux"):
        return f"instruction counts need valgrind on Linux, not {sys.platform}"
    if shutil.which("valgrind") is None:
        return "valgrind is not on PATH (install it: apt-get install valgrind)"
    switches = all(hasattr(torch._C, s) for s in _SWITCHES)
    if not switches or not torch._C._valgrind_supported_platform():
        return f"torch {torch.__version__} was built without valgrind's collection switches"
    return None


@dataclass(frozen=True)
class CaseCount:
    """One case's instructions per call (``status`` ``ok``), or why it has none."""

    spec: str
    name: str
    backend: str
    device: str
    dtype: str
    status: str  # "ok", "unsupported" or "failed"
    reason: str = ""
    instructions: float | None = None  # callgrind's Ir per call, glibc's allocator left out
    # per call: the other events callgrind counted (cache misses with cache_sim), and
    # Ir_malloc, the instructions glibc's allocator ran, which depend on the heap's history
    events: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> tuple[str, str, str, str]:
        return case_key(self.spec, self.backend, self.device, self.dtype)


@dataclass
class CountRun:
    """What one valgrind pass counted, and what the counts cannot show by themselves."""

    counts: list[CaseCount]
    info: dict[str, Any]  # calls, threads, cache_sim, valgrind, the ISA counted and timed, wall_s

    @property
    def failures(self) -> list[CaseCount]:
        return [c for c in self.counts if c.status == "failed"]

    def to_json(self) -> dict[str, Any]:
        return {"info": self.info, "cases": [asdict(c) for c in self.counts]}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CountRun:
        return cls([CaseCount(**c) for c in data["cases"]], dict(data["info"]))


def _name(table: dict[str, str], value: str) -> str:
    """A name of callgrind's compressed form: ``(7) name`` defines id 7, ``(7)`` reuses it."""
    value = value.strip()
    if not value.startswith("("):
        return value
    close = value.index(")")
    ref, name = value[1:close], value[close + 1 :].strip()
    if name:
        table[ref] = name
    return table.get(ref, "")


def read_dump(path: Path) -> tuple[dict[str, int], int]:
    """Callgrind's totals of one dump by event name (its ``events:`` line names them, its
    ``totals:`` line, or ``summary:``, holds them), and the instructions of that total that
    glibc's allocator executed: the self cost of the functions of ``malloc/malloc.c`` and
    ``malloc/arena.c``, which libc's debug symbols name (Debian's valgrind depends on them).

    The allocator's instructions depend on the state of the heap, which differs with
    everything the process did before, down to the digits of a timing printed by a library:
    they moved the count of one small case by up to 1.6 % between identical runs here.
    """
    events: list[str] = []
    positions = 1
    values: list[int] | None = None
    files: dict[str, str] = {}
    file, allocator, call_cost, alloc = "", False, False, 0
    with open(path) as fh:
        for line in fh:
            head = line[:1]
            if head.isdigit() or head in "+-*":  # a cost line: positions, then the events
                if call_cost:  # the inclusive cost of the call just named, not a self cost
                    call_cost = False
                elif allocator:
                    fields = line.split()
                    ir = positions + events.index("Ir")
                    alloc += int(fields[ir]) if len(fields) > ir else 0
                continue
            key, _, value = line.partition("=")
            if key in ("fl", "fi", "fe", "cfl", "cfi"):
                name = _name(files, value)
                file = name if key == "fl" else file
            elif key == "fn":
                allocator = file.endswith(_ALLOCATOR)
            elif key == "calls":
                call_cost = True
            elif line.startswith("positions:"):
                positions = len(line.split()) - 1
            elif line.startswith("events:"):
                events = line.split()[1:]
            elif line.startswith(("totals:", "summary:")) and (values is None or head == "t"):
                values = [int(v) for v in line.split()[1:]]
    if not events or values is None:
        raise CountError(f"{path} is not a callgrind dump (no events: and totals: lines)")
    totals = dict(zip(events, values + [0] * (len(events) - len(values)), strict=True))
    return totals, alloc


def _tail(path: Path) -> str:
    """The last non-empty line of a log: what a one-line error can quote."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return lines[-1].strip() if lines else ""


def _valgrind_version() -> str:
    out = subprocess.run(["valgrind", "--version"], capture_output=True, text=True, check=False)
    return out.stdout.strip()


def _base(c: Case) -> dict[str, str]:
    """The fields that name a case in its count."""
    return dict(
        spec=c.spec.format(), name=c.spec.name, backend=c.backend, device=c.device, dtype=c.dtype
    )


def _warmup(c: Case) -> int:
    """Uncounted calls before the counted ones. Python's adaptive interpreter specialises a
    function's code after some 8 calls, and until then the same call runs up to 1.3 % more
    instructions on a small case, so small cases are warmed up over that; on a large one the
    difference is lost in the arithmetic and each call under valgrind is costly."""
    return WARMUP if c.spec.flops < WARMUP_FLOPS else 1


def _count_of(case: Case, line: Mapping[str, Any], workdir: Path, calls: int) -> CaseCount:
    """A case's count from the child's line about it and the dump that line names."""
    base = _base(case)
    if line["status"] != "ok":
        return CaseCount(**base, status=line["status"], reason=line.get("reason", ""))
    totals, alloc = read_dump(workdir / f"{_OUT}.{line['dump']}")
    events = {k: v / calls for k, v in totals.items() if k != "Ir"}
    events["Ir_malloc"] = alloc / calls
    instructions = (totals["Ir"] - alloc) / calls
    return CaseCount(**base, status="ok", instructions=instructions, events=events)


def count_instructions(
    cases: Sequence[Case],
    *,
    seed: int = 0,
    calls: int = CALLS,
    cache_sim: bool = False,
    python: str = sys.executable,
    env: Mapping[str, str] | None = None,
    workdir: Path,
    on_case: Callable[[CaseCount, int, int], None] | None = None,
) -> CountRun:
    """Count the instructions per call of every CPU case in ONE valgrind process.

    ``python`` and ``env`` choose the interpreter and environment that run the cases (another
    virtualenv; ``PYTHONPATH`` at another revision's tree; ``CONVBENCH_PLUGINS``): the child
    imports whichever convbench they provide. ``cache_sim`` adds callgrind's cache simulation
    (``D1mr``, ``DLmr``, ... per call). ``workdir`` receives the job, the logs and one dump per
    counted case (``callgrind_annotate workdir/callgrind.out.N`` shows where they went).
    ``on_case(count, done, total)`` is told of each case as it ends.

    A case whose preparation or call raises is that case's ``failed`` count, and a case on
    another device than the CPU is ``unsupported``; the others still count. Should valgrind
    die part-way, the case it was counting fails and the cases after it are left out.
    """
    if calls < 1:
        raise ValueError(f"calls must be at least 1, got {calls}")
    if reason := valgrind_reason():
        raise CountError(reason)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    result, probe = workdir / "result.jsonl", workdir / "probe.jsonl"
    for stale in [*workdir.glob(f"{_OUT}*"), result, probe]:  # an earlier pass's
        stale.unlink(missing_ok=True)
    counts: list[CaseCount] = []

    def tell(count: CaseCount) -> None:
        counts.append(count)
        if on_case:
            on_case(count, len(counts), len(cases))

    for c in cases:
        if c.device != "cpu":
            tell(
                CaseCount(**_base(c), status="unsupported", reason="callgrind counts CPU code only")
            )
    cpu = [c for c in cases if c.device == "cpu"]
    job = {
        "cases": [{**_base(c), "fill": c.workload.fill, "warmup": _warmup(c)} for c in cpu],
        "seed": seed,
        "calls": calls,
        "threads": 1,
        "result": str(result),
        "probe": str(probe),
        "vgdb": shutil.which("vgdb"),  # the child switches instrumentation on after its imports
    }
    (workdir / "job.json").write_text(json.dumps(job, indent=1) + "\n")
    child_env = {**(os.environ if env is None else env)}
    child_env.setdefault("PYTHONHASHSEED", "0")  # dict probing the same in every run
    # One thread counts, so no library may start a pool of more: Numba's (the Winograd kernels)
    # would spin beside the counted calls, under valgrind, which runs one thread at a time.
    child_env["NUMBA_NUM_THREADS"] = "1"
    # Numba compiles for the CPU it finds, and under valgrind it finds one without AVX-512: it
    # would compile again there (the counting tests' pass took 440 s so, 90 s without). A
    # fixed target that valgrind runs (AVX2) is compiled once by the probe, natively, and
    # loaded from Numba's cache under it.
    # Numba's cache key holds the CPU's name and its feature string, and without a fixed string
    # it takes the host's: the probe would then compile for haswell *with* the host's AVX-512,
    # and the valgrind pass, whose features differ, would miss the cache and compile again.
    child_env["NUMBA_CPU_NAME"] = "haswell"
    child_env["NUMBA_CPU_FEATURES"] = HASWELL_FEATURES
    command = [python, str(CHILD), str(workdir / "job.json")]
    t0 = time.perf_counter()
    timed = _probe(command, child_env, workdir / "probe.log", probe)
    valgrind = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={workdir / _OUT}",
        f"--instr-atstart={'no' if job['vgdb'] else 'yes'}",
        "--collect-atstart=no",
        f"--cache-sim={'yes' if cache_sim else 'no'}",
        f"--log-file={workdir / 'valgrind.log'}",
    ]
    with open(workdir / "child.log", "wb") as log:
        proc = subprocess.Popen(
            [*valgrind, *command, "--count"], stdout=log, stderr=log, env=child_env
        )
        info = dict.fromkeys(timed, "unknown")  # the child probes it after the cases
        started, reported = False, 0  # the child reports the cases in order
        try:
            for line in _follow(proc, result):
                if "info" in line:
                    info = line["info"]
                elif "started" in line:
                    started = True
                else:
                    tell(_count_of(cpu[line["index"]], line, workdir, calls))
                    reported += 1
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    if proc.returncode and not started:
        raise CountError(
            f"valgrind could not count (exit {proc.returncode}): {_tail(workdir / 'child.log')}"
        )
    if proc.returncode and reported < len(cpu):
        why = _tail(workdir / "child.log") or _tail(workdir / "valgrind.log")
        reason = f"the counting process died (exit {proc.returncode}): {why}"
        tell(CaseCount(**_base(cpu[reported]), status="failed", reason=reason))
    return CountRun(
        counts,
        {
            "calls": calls,
            "warmup": {"calls": WARMUP, "below_flops": WARMUP_FLOPS, "else": 1},
            "threads": 1,
            "seed": seed,
            "cache_sim": cache_sim,
            "valgrind": _valgrind_version(),
            "counted": info,  # what oneDNN and ATen ran under valgrind
            "timed": timed,  # ... and outside it, where cases are timed
            "wall_s": round(time.perf_counter() - t0, 1),
        },
    )


def _probe(command: list[str], env: dict[str, str], log: Path, out: Path) -> dict[str, str]:
    """The ISA oneDNN and ATen choose in ``command``'s interpreter outside valgrind (which also
    calls one case of each backend and dtype there, so that what compiles at its first call
    is compiled natively and cached)."""
    with open(log, "wb") as fh:
        done = subprocess.run(command, stdout=fh, stderr=fh, env=env, check=False)
    if done.returncode:
        raise CountError(f"{command[0]} cannot run the counting script: {_tail(log)}")
    return json.loads(out.read_text().splitlines()[0])["info"]


def _follow(proc: subprocess.Popen[bytes], path: Path) -> Iterable[dict[str, Any]]:
    """The JSON lines the child appends to ``path``, each as soon as it is complete, until the
    child exits."""
    offset = 0
    while True:
        running = proc.poll() is None
        if path.exists():
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1]
            offset += len(complete)
            for line in complete.splitlines():
                yield json.loads(line)
        if not running:
            return
        try:
            proc.wait(timeout=0.5)
        except subprocess.TimeoutExpired:
            pass


def count_in_parts(
    cases: Sequence[Case],
    parts: int,
    *,
    workdir: Path,
    on_case: Callable[[CaseCount, int, int], None] | None = None,
    **options: Any,
) -> CountRun:
    """``count_instructions`` over ``parts`` contiguous slices of ``cases``, each in its own
    valgrind process, all at once (each in ``workdir/part-N``): valgrind runs one thread at a
    time, so on a machine of several cores the pass takes about 1/``parts`` of the time.

    A count does not depend on the other cases of its process but for the first cases of a
    backend there (caches of the interpreter and the libraries still cold: the gate's cases
    in two parts counted within 0.96 % of their counts in one process), so the same cases in
    the same parts count the same. The counts come back part by part, each in
    ``count_instructions``'s order; ``on_case`` is told of each as it ends (in any order); a
    part that cannot count at all raises ``CountError`` after the others have ended."""
    if parts < 1:
        raise ValueError(f"parts must be at least 1, got {parts}")
    size = max(1, math.ceil(len(cases) / parts))
    slices = [cases[i : i + size] for i in range(0, len(cases), size)]
    if len(slices) <= 1:
        return count_instructions(cases, workdir=workdir, on_case=on_case, **options)
    lock, done = threading.Lock(), [0]

    def tell(count: CaseCount, _i: int, _n: int) -> None:
        with lock:
            done[0] += 1
            if on_case is not None:
                on_case(count, done[0], len(cases))

    t0 = time.perf_counter()
    # The pool's ``with`` waits for every part; ``result`` then re-raises a part's error.
    with ThreadPoolExecutor(len(slices)) as pool:
        futures = [
            pool.submit(
                count_instructions,
                part,
                workdir=Path(workdir) / f"part-{i + 1}",
                on_case=tell,
                **options,
            )
            for i, part in enumerate(slices)
        ]
    runs = [f.result() for f in futures]
    info = {**runs[0].info, "parts": len(slices), "wall_s": round(time.perf_counter() - t0, 1)}
    return CountRun([c for r in runs for c in r.counts], info)


def count_run(
    store: RunStore,
    records: Iterable[Record],
    *,
    seed: int = 0,
    cache_sim: bool = False,
    on_case: Callable[[CaseCount, int, int], None] | None = None,
) -> CountRun | None:
    """Count the measured cases of a run that its instructions file lacks (all of them, but on
    ``--resume``), and add them to that file; ``None`` when nothing is left to count.

    The dumps of the pass stay in the run folder's ``callgrind/`` for ``callgrind_annotate``.
    """
    path = store.path / RunStore.INSTRUCTIONS
    before = CountRun.from_json(json.loads(path.read_text())) if path.exists() else None
    done = {c.key for c in before.counts} if before else set()
    cases = [
        Case(Workload(parse(r.spec), r.fill), r.backend, r.device, r.dtype)
        for r in records
        if r.status in ("ok", "inaccurate") and r.key not in done
    ]
    if not cases:
        return None
    run = count_instructions(
        cases, seed=seed, cache_sim=cache_sim, workdir=store.path / "callgrind", on_case=on_case
    )
    kept = before.counts if before else []
    store.write_json(RunStore.INSTRUCTIONS, CountRun(kept + run.counts, run.info).to_json())
    return run


def gate_cases(suites: Sequence[str] = GATE_SUITES) -> list[Case]:
    """The instruction gate's cases: every problem of ``suites`` with every backend that
    supports it on the CPU in float32, as ``tests/perf`` times them."""
    return [
        Case(w, b.name, "cpu", "float32")
        for s in suites
        for w in get_suite(s).workloads()
        for b in backends.all_backends()
        if not b.supports(w.spec, "cpu", DTYPES["float32"])
    ]


def gate_key(c: CaseCount) -> str:
    """``"case | device | dtype | backend"``, as the timing gate names a benchmark."""
    return " | ".join((c.name or c.spec, c.device, c.dtype, c.backend))


def gate_counts(run: CountRun) -> dict[str, float]:
    """The instructions per call of each case counted, by ``gate_key``."""
    return {gate_key(c): c.instructions for c in run.counts if c.instructions is not None}


def _counted_with(run: CountRun) -> dict[str, Any]:
    """What counts depend on besides the code counted: the software that runs it, the CPU
    (oneDNN sizes its blocks by the caches the CPU reports), the ISA under valgrind, and how
    many calls were counted."""
    return {
        "torch": torch.__version__,
        "python": sys.version.split()[0],
        "cpu": cpu_model(),
        **{k: run.info[k] for k in ("valgrind", "counted", "calls")},
    }


def make_baseline(run: CountRun) -> dict[str, Any]:
    """The instruction gate's baseline: the counts and what they were counted with."""
    return {**_counted_with(run), "instructions": gate_counts(run)}


def read_baseline(path: Path) -> dict[str, Any]:
    """A baseline ``write_baseline`` wrote; ``ValueError`` in one line otherwise."""
    try:
        data = json.loads(Path(path).read_text())
        counts = data["instructions"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"cannot read the instruction baseline {path}: {exc}") from None
    if not isinstance(counts, dict):
        raise ValueError(f"{path}: 'instructions' is not a mapping of case to count")
    return data


def baseline_differences(base: Mapping[str, Any], run: CountRun) -> list[str]:
    """What the baseline was counted with that differs now, one line each: counts compare
    exactly only when counted with the same software, CPU and ISA."""
    now = _counted_with(run)
    return [f"{k}: {base.get(k)!r} then, {v!r} now" for k, v in now.items() if base.get(k) != v]
