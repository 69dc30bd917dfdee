"""The process ``convbench ab`` runs for one side of an A/B: prepares cases and times calls.

Run as a file (``python _ab_worker.py CONFIG``), never as ``-m convbench...``: the side it
serves may be another revision's tree on ``PYTHONPATH`` or another virtualenv, and that
convbench may lack this module. So it drops its own folder from ``sys.path`` (that folder is
the *current* ``convbench/``; the convbench it imports is whichever the side provides) and
uses only the long-stable API: ``spec.parse``, ``suites.Workload``, ``sweep.Case``,
``sweep.ready`` (a ``Ready`` with ``run()``, ``accuracy``, ``tolerance``, ``accurate``,
``prepare_s``, ``peak_bytes``, ``prepare_bytes``, ``algorithm``) and
``backends.base.UnsupportedConfig``.

It speaks JSON lines: requests on stdin, one answer per request on the process's original
stdout. Libraries print on fd 1 too (oneDNN's verbose mode, warnings from C++), so that
descriptor is duplicated for the protocol first of all and fd 1 pointed at stderr: nothing a
library prints can corrupt an answer. On start it answers ``hello`` (its versions) or
``error`` (why its convbench does not import); then

- ``{"op": "prepare", "id": K, "case": {...}, "seed": S}``: ``ready`` the case and keep it as
  ``K``; answers its status (``ready``, ``unsupported``, ``failed``) and accuracy fields;
- ``{"op": "time", "id": K, "number": N}``: ``N`` back-to-back calls, the device synchronised
  before and after, timed with this process's own ``perf_counter``; answers ``seconds``, or
  ``error`` when a call raises;
- ``{"op": "release", "id": K}``: drops the case and its memory.

The parent times nothing itself: the pipe's latency stays outside every sample. It exits when
stdin closes (the parent finished, or died).
"""

from __future__ import annotations

import faulthandler
import gc
import json
import os
import sys
import threading
import time
import traceback
from typing import Any

_PROTOCOL = os.fdopen(os.dup(1), "w", encoding="utf-8")
os.dup2(2, 1)

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]
faulthandler.enable()  # a crash in native code leaves its Python traceback in the log


def send(message: dict[str, Any]) -> None:
    _PROTOCOL.write(json.dumps(message) + "\n")
    _PROTOCOL.flush()


def one_line(exc: BaseException) -> str:
    """An exception as one line: its type and its message's last line."""
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[-1]}" if text else type(exc).__name__


def versions(torch: Any, convbench: Any) -> dict[str, Any]:
    """What this side runs: the software half of its environment, and its backends."""
    out: dict[str, Any] = {
        "python": sys.version.split()[0],
        "executable": sys.executable,
        "torch": torch.__version__,
        "torch_cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "convbench": getattr(convbench, "__version__", "unknown"),
        "convbench_path": os.path.dirname(os.path.abspath(convbench.__file__)),
        "threads": torch.get_num_threads(),
    }
    for name in ("numpy", "scipy"):
        try:
            out[name] = __import__(name).__version__
        except ImportError:
            out[name] = None
    # Loading the registry imports the CONVBENCH_PLUGINS modules: a plugin that does not
    # import is a side that cannot start, not a failure of every case.
    from convbench import backends

    names = getattr(backends, "names", None)
    out["backends"] = list(names()) if callable(names) else None
    return out


QUIESCE_S = 0.25
"""The longest a worker waits for its threads to fall asleep before it answers anyway."""


def quiesce(limit: float = QUIESCE_S) -> bool:
    """Return once every thread of this process but the caller's sleeps (True), or after
    ``limit`` (False: some thread does not sleep, and waiting for it again would be wasted).

    OpenMP's threads (torch's, Numba's) spin for a while after each parallel region before
    they sleep: 5-9 ms after a 512² matmul here. A worker that answered at once left them
    spinning on the cores the other side's worker was about to time its calls on. With 2
    threads on 2 cores, two ``ab`` of one revision against itself timed fft-torch on
    mb1ic128ih28oc128oh28kh3ph1 at 3.6-4.1 ms a call and on mb8ic64ih56oc64oh56kh1ph0 at
    15.4-17.8 ms; two with the wait, at 2.5-2.8 and 10.3-13.5 ms. So a worker waits, untimed,
    until Linux lists none of its other threads as running (``R`` in
    ``/proc/self/task/*/stat``); where there is no ``/proc``, it does not wait."""
    me = str(threading.get_native_id())
    try:
        tasks = [t for t in os.listdir("/proc/self/task") if t != me]
    except OSError:
        return False
    deadline = time.perf_counter() + limit
    while time.perf_counter() < deadline:
        if not any(_running(t) for t in tasks):
            return True
        time.sleep(2e-4)
    return False


def _running(task: str) -> bool:
    """Whether thread ``task`` of this process is running or runnable (a thread that has
    ended is not)."""
    try:
        with open(f"/proc/self/task/{task}/stat", encoding="ascii") as f:
            stat = f.read()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] == "R"


def serve(config: dict[str, Any]) -> int:
    if config.get("cpus"):  # before torch starts its threads, which inherit the affinity
        os.sched_setaffinity(0, config["cpus"])
    try:
        import torch

        import convbench
        from convbench.backends.base import UnsupportedConfig
        from convbench.spec import parse
        from convbench.suites import Workload
        from convbench.sweep import Case, ready

        torch.set_num_threads(config["threads"])
        torch.set_grad_enabled(False)
        hello = versions(torch, convbench)
    except Exception as exc:
        traceback.print_exc()
        send({"error": one_line(exc)})
        return 1
    send({"hello": hello})
    known = hello["backends"]
    readies: dict[int, Any] = {}
    quiet = True  # whether this process's threads fell asleep the last time they were awaited
    for line in sys.stdin:
        request = json.loads(line)
        op, key = request["op"], request["id"]
        if op == "prepare":
            c = request["case"]
            if known is not None and c["backend"] not in known:
                why = f"this version has no backend {c['backend']!r}"
                send({"status": "unsupported", "reason": why})
                continue
            try:
                case = Case(Workload(parse(c["spec"]), c["fill"]), c["backend"], c["device"],
                            c["dtype"])  # fmt: skip
                r = ready(case, request["seed"])
            except UnsupportedConfig as exc:
                send({"status": "unsupported", "reason": str(exc)})
                continue
            except Exception as exc:  # isolation: one case's error is that case's failure
                traceback.print_exc()
                send({"status": "failed", "reason": f"{type(exc).__name__}: {exc}".strip()})
                continue
            readies[key] = r
            send({
                "status": "ready",
                "accurate": bool(r.accurate),
                "rel_l2_error": r.accuracy.rel_l2_error,
                "max_abs_error": r.accuracy.max_abs_error,
                "tolerance": r.tolerance,
                "prepare_s": r.prepare_s,
                "peak_bytes": r.peak_bytes,
                "prepare_bytes": r.prepare_bytes,
                "algorithm": r.algorithm,
                "params": getattr(r, "params", {}),
            })  # fmt: skip
        elif op == "time":
            r = readies[key]
            cuda = r.case.device.startswith("cuda")
            try:
                if cuda:
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                for _ in range(request["number"]):
                    r.run()
                if cuda:
                    torch.cuda.synchronize()
                seconds = time.perf_counter() - t0
                quiet = quiet and quiesce()
            except Exception as exc:
                traceback.print_exc()
                send({"error": f"{type(exc).__name__}: {exc}".strip()})
                continue
            send({"seconds": seconds})
        elif op == "release":
            cuda = key in readies and readies[key].case.device.startswith("cuda")
            readies.pop(key, None)
            gc.collect()
            if cuda:
                torch.cuda.empty_cache()
            send({"released": key})
    return 0


if __name__ == "__main__":
    sys.exit(serve(json.loads(sys.argv[1])))
