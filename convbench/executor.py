"""Where a sweep's cases run: a supervised worker process, so a case that crashes or hangs
costs that case, not the sweep.

The worker is a child process that lives across cases — torch is imported once, inputs and the
float64 reference are still made once per problem — and runs ``sweep.run_cases``, sending each
record back over a pipe as it is made. It never writes the run folder: the process that started
the run is the one writer. Before any code of a case runs (its preparation, each timed turn) the
worker writes the case's index into a shared integer, so when the worker dies (a signal, an
abort, a CUDA error that kills the process) or a case runs past ``case_timeout`` seconds of its
own, the supervisor knows whose fault it was: that case is recorded ``failed`` with the cause
("worker died: SIGSEGV" and the tail of the worker's stderr, or "timed out after N s"), a fresh
worker starts, and the rest of the problem is run again beside its baseline, so every speed-up
stays paired. A case's own time is what the supervisor sees the index point at it, summed; a
healthy case never comes near the default.
"""

from __future__ import annotations

import faulthandler
import multiprocessing
import multiprocessing.connection
import os
import signal
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convbench.results import Record
from convbench.sweep import Case, SweepConfig, failed_record, pairable, run_cases

__all__ = ["CASE_TIMEOUT", "Supervisor", "exit_cause"]

CASE_TIMEOUT = 1800.0
"""Seconds of its own after which a case is ended: far beyond what a healthy case takes (the
slowest backend on the largest suite layer, with its minimum rounds, takes minutes)."""

_POLL_S = 0.05
_TAIL_LINES = 5
_CONTEXT = multiprocessing.get_context("spawn")  # never fork a process that may hold CUDA


def _worker_main(
    conn: multiprocessing.connection.Connection,
    marker: Any,
    config: SweepConfig,
    run_id: str,
    folder: str,
    log: str,
) -> None:
    """The worker's loop: run each job of cases, reporting as it goes."""
    for signum in (signal.SIGINT, signal.SIGTERM):  # sent to the whole process group: the
        signal.signal(signum, signal.SIG_IGN)  # supervisor decides when its worker stops
    with open(log, "a") as fh:
        os.dup2(fh.fileno(), 2)
    faulthandler.enable()  # a crash leaves its Python stack in the log
    threading.Thread(target=_orphaned, args=(os.getppid(),), daemon=True).start()
    while True:
        try:
            job = conn.recv()
        except EOFError:
            return
        _run_job(conn, marker, job["cases"], job["retime"], config, run_id, Path(folder))


def _orphaned(parent: int) -> None:
    """End this worker once its supervisor is gone (killed, or its host's Dask worker lost):
    nobody would read what it sends, and it would hold the machine others time on."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)


def _run_job(
    conn: multiprocessing.connection.Connection,
    marker: Any,
    cases: list[Case],
    retime: set[tuple[str, str, str, str]],
    config: SweepConfig,
    run_id: str,
    folder: Path,
) -> None:
    index = {id(c): i for i, c in enumerate(cases)}

    def mark(case: Case) -> None:
        marker.value = index[id(case)]

    def emit(case: Case, record: Record) -> None:
        conn.send(("record", index[id(case)], record.to_dict()))

    def start(case: Case) -> None:
        conn.send(("start", index[id(case)]))

    run_cases(cases, config, run_id, folder, emit, retime=retime, on_start=start, on_call=mark)
    marker.value = -1
    conn.send(("done",))


def exit_cause(exitcode: int | None) -> str:
    """How a child process ended, from its exit code: ``SIGSEGV``, ``exit status 3``."""
    if exitcode is None:
        return "no exit status"
    if exitcode < 0:
        try:
            return signal.Signals(-exitcode).name
        except ValueError:
            return f"signal {-exitcode}"
    return f"exit status {exitcode}"


def _tail(path: Path) -> str:
    """The end of a dead worker's stderr, in one line: Python's fatal error and the innermost
    frame it names (``faulthandler``'s report), or else its last lines."""
    try:
        lines = [line.strip() for line in path.read_text(errors="replace").splitlines()]
    except OSError:
        return ""
    lines = [line for line in lines if line and not line.startswith("Extension modules:")]
    fatal = [i for i, line in enumerate(lines) if line.startswith("Fatal Python error")]
    if fatal:
        i = fatal[-1]
        # The thread that crashed is "Current thread"; the others are listed too.
        current = next((j for j in range(i, len(lines)) if lines[j].startswith("Current")), i)
        frames = [line for line in lines[current + 1 :] if line.startswith("File ")]
        return " | ".join(lines[i : i + 1] + frames[:1])
    return " | ".join(lines[-_TAIL_LINES:])


@dataclass
class _Worker:
    process: Any
    conn: multiprocessing.connection.Connection
    marker: Any
    log: Path

    def stop(self) -> None:
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.conn.close()


class Supervisor:
    """Runs cases in a worker process, replacing it when a case kills or hangs it."""

    def __init__(
        self,
        config: SweepConfig,
        run_id: str,
        folder: Path,
        case_timeout: float = CASE_TIMEOUT,
    ) -> None:
        self.config = config
        self.run_id = run_id
        self.folder = folder
        self.case_timeout = case_timeout
        self._logs = tempfile.TemporaryDirectory(prefix="convbench-worker-")
        self._worker: _Worker | None = None
        self._started = 0

    def __enter__(self) -> Supervisor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._worker:
            self._worker.stop()
            self._worker = None
        self._logs.cleanup()

    def _spawn(self) -> _Worker:
        self._started += 1
        log = Path(self._logs.name) / f"worker-{self._started}.log"
        parent, child = _CONTEXT.Pipe()
        marker = _CONTEXT.Value("i", -1, lock=False)
        process = _CONTEXT.Process(
            target=_worker_main,
            args=(child, marker, self.config, self.run_id, str(self.folder), str(log)),
            name=f"convbench-worker-{self._started}",
            daemon=True,
        )
        process.start()
        child.close()
        return _Worker(process, parent, marker, log)

    def run(
        self,
        cases: list[Case],
        emit: Callable[[Case, Record], None],
        *,
        retime: set[tuple[str, str, str, str]] = frozenset(),  # type: ignore[assignment]
        on_start: Callable[[Case], None] | None = None,
    ) -> None:
        """Run ``cases`` (as ``sweep.run_cases`` would), each record to ``emit``; a case that
        kills or hangs its worker gets a ``failed`` record and the rest go on."""
        pending, retime = list(cases), set(retime)
        while pending:
            ended = self._job(pending, retime, emit, on_start)
            if ended is None:
                return
            case, reason, finished = ended
            if case.key in retime:  # its record stands; the rest of its problem goes unpaired
                retime.discard(case.key)
            else:
                emit(case, failed_record(case, self.config, self.run_id, reason))
            # The rest again, in a fresh worker, beside the baselines already timed.
            retime |= pairable(finished.values(), self.config.baseline)
            done = set(finished) | {case.key}
            pending = [c for c in pending if c.key in retime or c.key not in done]
            if all(c.key in retime for c in pending):
                return

    def _job(
        self,
        cases: list[Case],
        retime: set[tuple[str, str, str, str]],
        emit: Callable[[Case, Record], None],
        on_start: Callable[[Case], None] | None,
    ) -> tuple[Case, str, dict[tuple[str, str, str, str], Record]] | None:
        """One job in the worker: ``None`` when it finished, else the case that ended it, why,
        and the records it made before it ended."""
        if self._worker is None or not self._worker.process.is_alive():
            if self._worker:
                self._worker.stop()
            self._worker = self._spawn()
        worker = self._worker
        worker.conn.send({"cases": cases, "retime": retime})
        finished: dict[tuple[str, str, str, str], Record] = {}
        own = [0.0] * len(cases)
        last = time.monotonic()

        def receive() -> bool:
            """Handle one message; whether the job is done."""
            message = worker.conn.recv()
            if message[0] == "start":
                if on_start:
                    on_start(cases[message[1]])
            elif message[0] == "record":
                case, record = cases[message[1]], Record.from_dict(message[2])
                finished[case.key] = record
                emit(case, record)
            return message[0] == "done"

        while True:
            try:
                if worker.conn.poll(_POLL_S) and receive():
                    return None
            except (EOFError, OSError):  # the worker is gone; what it sent has been read
                pass
            now = time.monotonic()
            current = worker.marker.value
            if current >= 0:
                own[current] += now - last
            last = now
            if current >= 0 and own[current] > self.case_timeout:
                worker.stop()
                self._worker = None
                return cases[current], f"timed out after {self.case_timeout:g} s", finished
            if not worker.process.is_alive():
                try:
                    while worker.conn.poll() and not receive():
                        pass
                except (EOFError, OSError):
                    pass
                worker.process.join()
                how = exit_cause(worker.process.exitcode)
                tail = _tail(worker.log)
                worker.stop()
                self._worker = None
                reason = f"worker died: {how}" + (f"; {tail}" if tail else "")
                if current < 0:  # it died between cases: blame the first one not recorded
                    current = next(i for i, c in enumerate(cases) if c.key not in finished)
                return cases[current], reason, finished
