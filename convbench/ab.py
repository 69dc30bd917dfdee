"""``convbench ab BASE NEW``: two versions timed on this machine in alternating rounds.

A side is a git revision of the checkout the command runs in or a Python environment (an
interpreter, or a virtualenv folder), as :mod:`convbench.sides` finds it. Each side runs in ONE
long-lived worker process of its own (``_ab_worker.py``) that imports that side's convbench and
torch, prepares each case and times calls of it with its own clock. This process only
orchestrates: per case it asks both workers to prepare it, then runs the rounds engine
(``measure_rounds``) over two samplers that each ask their worker for the seconds of a group of
calls. The rounds interleave the two versions in random order, one side working at a time, so a
drift of the machine hits both alike and sample ``i`` of base pairs with sample ``i`` of new:
the verdict comes from the per-round ratios (``verdicts.compare`` with ``paired=True``), which
resolves changes of a few percent that two separate runs on the same machine cannot. What
rounds cannot pair away is the process itself: a worker keeps one memory layout for life, and
two versions lay memory out differently, which can move a call of microseconds by a few percent
from one ``ab`` to the next; a change that small wants a second ``ab`` (fresh processes) before
it is believed.

Results go to ``<out>/ab-<run id>/``, a ``base/`` and a ``new/`` run folder (records,
``environment.json`` naming the side, ``run.json``), each record appended as its case finishes:
an interrupted ``ab`` keeps every case it finished. A worker that dies on a case (a segfault)
makes that case ``failed`` on its side and is restarted for the next.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from convbench.env import fingerprint
from convbench.executor import exit_cause
from convbench.instructions import CaseCount, CountError, count_instructions
from convbench.measure.stats import paired_ratio
from convbench.measure.timing import Sampler, Timing, TimingConfig, measure_rounds
from convbench.report.summary import format_seconds
from convbench.results import Record, RunStore, new_run_id
from convbench.sides import Side, SideError, last_line, resolve
from convbench.spec import parse
from convbench.suites import Workload
from convbench.sweep import Case, SweepConfig, _base, estimate_bytes, plan, timing_fields

__all__ = [
    "AB_BUDGET_S",
    "AB_MIN_ROUNDS",
    "AB_PRECISION",
    "ROLES",
    "Outcome",
    "Side",
    "SideError",
    "run_ab",
]

AB_BUDGET_S = 0.25  # timing per case and side: the gate's suites (~100 cases) in a minute or two
AB_PRECISION = 0.01  # stop once the paired ratio is known to +-1 %: changes of a few % resolve
# At least this many rounds, whatever the budget: 16 identical signs give a Wilcoxon p of 3e-5,
# which survives Holm's correction over 1600 cases; 5 rounds could never reach p < 0.05.
AB_MIN_ROUNDS = 16
ROLES = ("base", "new")
WORKER = Path(__file__).with_name("_ab_worker.py")
LOG = "worker.log"  # in each side's folder: what its worker printed (tracebacks, a crash)
_MEASURED = ("ok", "inaccurate")


OnCount = Callable[[CaseCount, int, int], None]  # told of each counted case: done, total


class WorkerDied(RuntimeError):
    """A worker exited while it was being asked something."""


class CaseError(RuntimeError):
    """A call of the case raised inside the worker: that case fails on that side."""


def shared_cpus(threads: int) -> list[int] | None:
    """The CPUs both sides' workers are pinned to when they use fewer threads than the machine
    has: the same ones for both, so neither side runs on a core the other never sees (on a VM
    whose vCPUs differ in speed, placement alone makes a "version" several % slower). The last
    ones: the first often serves the machine's interrupts. ``None``: every CPU."""
    allowed = sorted(os.sched_getaffinity(0))
    return allowed[-threads:] if threads < len(allowed) else None


class Worker:
    """One side's worker process and the conversation with it: one request, one answer."""

    def __init__(self, side: Side, threads: int, log: Path) -> None:
        self.side, self.threads, self.log = side, threads, log
        self.proc: subprocess.Popen[str] | None = None
        self.hello: dict[str, Any] = {}

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def spawn(self) -> None:
        """Start the process; ``handshake`` then waits until it has imported its side."""
        self.hello = {}
        with open(self.log, "a") as log:
            try:
                # A session of its own: Ctrl-C on the terminal reaches this process only, which
                # stops the workers itself after keeping what finished.
                self.proc = subprocess.Popen(
                    [
                        self.side.python,
                        str(WORKER),
                        json.dumps({"threads": self.threads, "cpus": shared_cpus(self.threads)}),
                    ],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    stderr=log,
                    env=self.side.env,
                    text=True,
                    encoding="utf-8",
                    start_new_session=True,
                )
            except OSError as exc:
                raise WorkerDied(f"cannot run {self.side.python}: {exc.strerror or exc}") from None

    def handshake(self) -> dict[str, Any]:
        """What the started process says it runs; raises ``WorkerDied`` if it cannot."""
        answer = self._read()
        if "error" in answer:
            self.close()
            raise WorkerDied(answer["error"])
        self.hello = answer["hello"]
        return self.hello

    def start(self) -> dict[str, Any]:
        self.spawn()
        return self.handshake()

    def ask(self, **request: Any) -> dict[str, Any]:
        proc = self.proc
        if proc is None or proc.stdin is None:
            raise WorkerDied("the worker is not running")
        try:
            proc.stdin.write(json.dumps(request) + "\n")
            proc.stdin.flush()
        except OSError:
            raise WorkerDied(self._death()) from None
        return self._read()

    def _read(self) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise WorkerDied(self._death())
        return json.loads(line)

    def _death(self) -> str:
        """Why the process is gone: its exit status or signal, and the last line it logged."""
        assert self.proc is not None
        try:
            code = self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            code = self.proc.wait()
        how = exit_cause(code)
        if self.hello:  # it ran: its log holds the traceback (faulthandler's, on a crash)
            return f"its worker died ({how}; its log: {self.log})"
        try:
            tail = last_line(self.log.read_text(errors="replace"))
        except OSError:
            tail = ""
        return f"its worker died ({how})" + (f": {tail}" if tail else "")

    def sampler(self, key: int) -> Sampler:
        def sample(number: int) -> float:
            answer = self.ask(op="time", id=key, number=number)
            if "error" in answer:
                raise CaseError(answer["error"])
            return float(answer["seconds"])

        return sample

    def close(self) -> None:
        """End the process: closing its stdin ends its loop; one that does not end is killed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            assert proc.stdin is not None
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


@dataclass
class Outcome:
    """What an ``ab`` produced: per side its folder, environment and records (case order;
    only cases both sides finished), and whether it stopped early."""

    folder: Path
    sides: dict[str, Side]
    stores: dict[str, RunStore]
    environments: dict[str, dict[str, Any]]
    records: dict[str, list[Record]]
    total: int
    wall_s: float = 0.0
    interrupted: bool = False
    notes: list[str] = field(default_factory=list)  # what did not go as asked, one line each
    uncounted: int = 0  # measured cases whose instructions were asked for and not counted


def _environment(
    machine: Mapping[str, Any], side: Side, hello: Mapping[str, Any]
) -> dict[str, Any]:
    """The side's environment: this machine's fingerprint with the software the side's worker
    reports (another interpreter has its own torch, NumPy, ...) and what the side is."""
    env = dict(machine)
    for key in ("python", "torch", "numpy", "scipy", "torch_cpu_capability", "convbench"):
        env[key] = hello.get(key)
    if hello.get("torch") != torch.__version__:
        env.pop("torch_build", None)  # describes this process's torch, not the side's
    if env.get("gpu"):
        env["gpu"] = {**env["gpu"], "cuda": hello.get("cuda"), "cudnn": hello.get("cudnn")}
    env["git_commit"] = side.commit
    env["side"] = (
        {"revision": side.ref}
        if side.commit
        else {"python": side.python, "convbench_path": hello.get("convbench_path")}
    )
    return env


def _entry(case: Case) -> dict[str, str]:
    return dict(
        spec=case.spec.format(), fill=case.workload.fill, backend=case.backend,
        device=case.device, dtype=case.dtype,
    )  # fmt: skip


def _timed(base: dict[str, object], answer: Mapping[str, Any], t: Timing) -> Record:
    """The record of a case that was timed: ``ok`` or ``inaccurate``, as ``run`` decides."""
    err, tol, accurate = answer["rel_l2_error"], answer["tolerance"], answer["accurate"]
    return Record(
        **base,  # type: ignore[arg-type]
        status="ok" if accurate else "inaccurate",
        reason="" if accurate else f"relative L2 error {err:.3g} exceeds the tolerance {tol:.3g}",
        **timing_fields(t, int(base["flops"])),  # type: ignore[call-overload]
        prepare_s=answer["prepare_s"],
        peak_bytes=answer["peak_bytes"],
        prepare_bytes=answer["prepare_bytes"],
        rel_l2_error=err,
        max_abs_error=answer["max_abs_error"],
        tolerance=tol,
        algorithm=answer["algorithm"],
        algorithm_params=answer.get("params") or {},
    )


def _case(
    key: int,
    case: Case,
    workers: Mapping[str, Worker],
    sweep: SweepConfig,
    rng: random.Random,
    run_ids: Mapping[str, str],
) -> dict[str, Record]:
    """Prepare ``case`` on both sides, time it in alternating rounds, and release it."""
    base = {role: _base(case, sweep, run_ids[role]) for role in ROLES}
    need = estimate_bytes(case.spec, case.dtype)
    if sweep.max_memory is not None and need > sweep.max_memory:
        reason = (
            f"estimated memory {need / 2**20:.1f} MiB exceeds --max-memory "
            f"{sweep.max_memory / 2**20:.1f} MiB"
        )
        return {role: Record(**base[role], status="unsupported", reason=reason) for role in ROLES}  # type: ignore[arg-type]
    records: dict[str, Record] = {}
    prepared: dict[str, dict[str, Any]] = {}
    for role in ROLES:
        try:
            answer = workers[role].ask(op="prepare", id=key, case=_entry(case), seed=sweep.seed)
        except WorkerDied as exc:
            answer = {"status": "failed", "reason": str(exc)}
        if answer["status"] == "ready":
            prepared[role] = answer
        else:
            records[role] = Record(**base[role], status=answer["status"], reason=answer["reason"])  # type: ignore[arg-type]
    if prepared:
        rounds = measure_rounds(
            {role: workers[role].sampler(key) for role in prepared},
            sweep.timing,
            baseline="base",
            rng=rng,
        )
        for role, answer in prepared.items():
            if role in rounds.errors:
                error = rounds.errors[role]
                records[role] = Record(**base[role], status="failed", reason=str(error))  # type: ignore[arg-type]
            else:
                records[role] = _timed(base[role], answer, rounds.timings[role])
    for role in prepared:
        try:
            workers[role].ask(op="release", id=key)
        except WorkerDied:
            pass  # restarted before the next case
    return records


def _progress(case: Case, pair: Mapping[str, Record], i: int, n: int) -> None:
    """One line per finished case on stderr: both medians and the paired change with its 95 %
    interval (what the verdict rests on), or the statuses and why."""
    b, w = pair["base"], pair["new"]
    if b.median_s and w.median_s and len(b.samples_s) == len(w.samples_s):
        ratio = paired_ratio(w.samples_s, b.samples_s)
        lo, hi = 100 * (ratio.lo - 1), 100 * (ratio.hi - 1)
        what = (
            f"{format_seconds(b.median_s):>9} -> {format_seconds(w.median_s):>9} "
            f"{100 * (ratio.value - 1):+6.1f} % [{lo:+.1f}, {hi:+.1f}]"
        )
    else:
        what = f"{b.status} -> {w.status}"
    reason = next((r.reason for r in (w, b) if r.status != "ok" and r.reason), "")
    if reason:
        what += f" ({reason})"
    print(
        f"[{i + 1:{len(str(n))}}/{n}] {case.backend:<14} {case.device:<4} {case.dtype:<8} "
        f"{what}  {case.spec.name or case.spec}",
        file=sys.stderr,
        flush=True,
    )


@contextmanager
def _workers(outcome: Outcome, threads: int) -> Iterator[dict[str, Worker]]:
    """Both sides' workers, started, each logging into its side's folder, with the side's
    environment written once it has said what it runs; stopped however the block ends. A side
    that does not start is a ``SideError``."""
    sides = outcome.sides
    workers = {
        role: Worker(side, threads, outcome.stores[role].path / LOG) for role, side in sides.items()
    }
    try:
        for role, w in workers.items():
            try:
                w.spawn()  # both at once: importing torch takes seconds; no timing runs yet
            except WorkerDied as exc:
                raise SideError(f"{role} {sides[role].label} does not start: {exc}") from None
        for role, w in workers.items():
            side = sides[role]
            try:
                hello = w.handshake()
            except WorkerDied as exc:
                raise SideError(f"{role} {side.label} does not start: {exc}") from None
            where = Path(hello["convbench_path"]).resolve()
            if side.tree is not None and not where.is_relative_to(side.tree.resolve()):
                raise SideError(
                    f"{role} {side.label} imported convbench from {where}, not from the "
                    "revision's tree: is convbench/ at the top of the repository?"
                )
            env = outcome.environments[role] = _environment(outcome.environments[role], side, hello)
            outcome.stores[role].write_json(RunStore.ENVIRONMENT, env)
        yield workers
    finally:
        for w in workers.values():
            w.close()
            if w.log.exists() and not w.log.stat().st_size:
                w.log.unlink()  # nothing to read there


def _count(outcome: Outcome, cases: list[Case], seed: int, on_count: OnCount | None) -> None:
    """Count the instructions per call of every case a side measured, in one valgrind process
    per side (its own interpreter and environment), after all timing. The counts go to the
    side's instructions file, which reading its records merges in; its records file stays
    append-only."""
    for role, side in outcome.sides.items():
        store = outcome.stores[role]
        measured = {r.key for r in outcome.records[role] if r.status in _MEASURED}
        print(f"ab: counting the instructions of {role} {side.label}", file=sys.stderr, flush=True)
        try:
            counted = count_instructions(
                [c for c in cases if c.key in measured], seed=seed, python=side.python,
                env=side.env, workdir=store.path / "callgrind", on_case=on_count,
            )  # fmt: skip
        except CountError as exc:
            outcome.notes.append(f"instructions of {role} not counted: {exc}")
            outcome.uncounted += len(measured)
            continue
        store.write_json(RunStore.INSTRUCTIONS, counted.to_json())
        keys = {r.key for r in outcome.records[role]}
        outcome.records[role] = [r for r in store.records() if r.key in keys]
        for c in counted.failures:
            outcome.notes.append(
                f"instructions of {role}: {c.backend} {c.name or c.spec}: {c.reason}"
            )
        outcome.uncounted += len(counted.failures)


def run_ab(
    base: str,
    new: str,
    config: Mapping[str, Any],
    *,
    out: Path,
    budget_s: float = AB_BUDGET_S,
    instructions: bool = False,
    on_count: OnCount | None = None,
) -> Outcome:
    """Time every case of ``config`` (``run``'s resolved selection) on both versions.

    Raises ``SideError``, leaving nothing on disk, when a side cannot be found or does not
    start. Ctrl-C ends the timing: what finished stays on disk and in the outcome.
    """
    workloads = [Workload(parse(w["spec"]), w["fill"]) for w in config["workloads"]]
    sweep = SweepConfig(
        backends=list(config["backends"]),
        devices=list(config["devices"]),
        dtypes=list(config["dtypes"]),
        threads=config["threads"],
        seed=config["seed"],
        max_memory=config["max_memory"],
        # One sample a turn, no warm-up calls: both sides run the same backend, so the wake one
        # leaves the other is alike either way and cancels in the paired test (the false-alarm
        # and detection figures of the README were measured so).
        timing=TimingConfig(
            budget_s=budget_s,
            rel_precision=AB_PRECISION,
            min_samples=AB_MIN_ROUNDS,
            turn_samples=1,
            turn_warmup_s=0.0,
        ),
    )
    cases = plan(workloads, sweep)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="convbench-ab-") as tmp:
        sides = {
            role: resolve(role, ref, Path(tmp))
            for role, ref in zip(ROLES, (base, new), strict=True)
        }
        fresh = not Path(out).exists()
        outcome = _open(out, sides, config, budget_s, len(cases))
        try:
            with _workers(outcome, sweep.threads) as workers:
                _time(outcome, cases, workers, sweep)
        except (SideError, KeyboardInterrupt):  # while starting: nothing was measured yet
            shutil.rmtree(outcome.folder, ignore_errors=True)
            if fresh:
                shutil.rmtree(out, ignore_errors=True)  # made for this ab, and empty
            raise
        if instructions and not outcome.interrupted:
            try:
                _count(outcome, cases, sweep.seed, on_count)
            except KeyboardInterrupt:
                outcome.interrupted = True
                outcome.notes.append("instructions not counted: interrupted")
    outcome.wall_s = time.perf_counter() - t0
    return outcome


def _open(
    out: Path, sides: Mapping[str, Side], config: Mapping[str, Any], budget_s: float, total: int
) -> Outcome:
    """The ab folder and its two run folders with their selections; each side's environment
    starts as this machine's fingerprint, measured before any worker runs."""
    folder = Path(out) / f"ab-{new_run_id()}"
    try:
        folder.mkdir(parents=True)
    except OSError as exc:
        raise SideError(f"cannot create {folder}: {exc.strerror or exc}") from None
    machine = fingerprint(config["threads"], list(config["devices"]))
    stores = {}
    for role, side in sides.items():
        store = stores[role] = RunStore.create(folder, role)
        ab = {
            "role": role, "ref": side.ref, "commit": side.commit, "python": side.python,
            "budget_s": budget_s, "rel_precision": AB_PRECISION, "min_rounds": AB_MIN_ROUNDS,
            "cpus": shared_cpus(config["threads"]),
        }  # fmt: skip
        store.write_json(RunStore.CONFIG, {**config, "ab": ab})
    environments = {role: dict(machine) for role in sides}
    return Outcome(folder, dict(sides), stores, environments, {r: [] for r in ROLES}, total)


def _time(
    outcome: Outcome, cases: list[Case], workers: Mapping[str, Worker], sweep: SweepConfig
) -> None:
    """Every case in turn, each pair of records written as it finishes. A worker that died is
    restarted for the next case; one that cannot be ends the run, keeping what finished."""
    rng = random.Random(sweep.seed)
    run_ids = {role: store.run_id for role, store in outcome.stores.items()}
    try:
        for i, case in enumerate(cases):
            pair = _case(i, case, workers, sweep, rng, run_ids)
            for role in ROLES:
                outcome.stores[role].append(pair[role])
            for role in ROLES:
                outcome.records[role].append(pair[role])
            _progress(case, pair, i, len(cases))
            for role, w in workers.items():
                if not w.alive:
                    w.close()
                    try:
                        w.start()
                    except WorkerDied as exc:
                        outcome.notes.append(
                            f"stopped after {i + 1} of {len(cases)} cases: the {role} worker "
                            f"does not restart: {exc}"
                        )
                        return
    except KeyboardInterrupt:
        outcome.interrupted = True
        # A Ctrl-C can land after a case's records are written (a record is on disk once
        # flushed, before its fsync returns) and before they are counted: the cases both
        # sides have on disk are what finished.
        written = {role: store.records() for role, store in outcome.stores.items()}
        keys = set.intersection(*({r.key for r in rs} for rs in written.values()))
        outcome.records = {role: [r for r in rs if r.key in keys] for role, rs in written.items()}
