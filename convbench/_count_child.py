"""The process ``convbench.instructions`` runs under callgrind: counts the instructions of cases.

Run as a file (``python _count_child.py JOB.json``), never as ``-m convbench...``: ``convbench
ab`` runs it against another revision's tree on ``PYTHONPATH``, which may lack this module.
So it drops its own folder from ``sys.path`` (that folder is one revision's ``convbench/``; the
convbench it imports is whichever ``PYTHONPATH`` and the environment provide) and uses only
the long-stable public API: ``spec.parse``, ``suites.Workload``, ``sweep.Case``,
``sweep.ready`` and ``backends.base.UnsupportedConfig``.

Importing torch under valgrind takes a minute or more, so one process counts every case of a
job, and it is started with callgrind's instrumentation off (``--instr-atstart=no``) where
``vgdb`` can switch it on after the imports: they then take some 20 s. Collection starts off
too; per case the child makes it ready, calls it ``warmup`` times uncounted (first-call
allocations, lazy initialisation, Python's specialisation of the code it runs), then switches
collection on around ``calls`` calls and dumps: dump ``n`` holds exactly those calls. Nothing
else runs inside that region — no printing, no writing, no garbage collection.

It writes a line when it has started, then one JSON line per case to the job's ``result`` file
as each case ends, so a process that dies part-way still tells which cases it finished; then
the ISA it ran. Without ``--count`` (not under valgrind) it only probes the ISA, which is how
the parent learns what the timing process runs.
"""

from __future__ import annotations

import gc
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any

if sys.path and os.path.abspath(sys.path[0] or ".") == os.path.dirname(os.path.abspath(__file__)):
    del sys.path[0]

# The backends that time their candidates in prepare take their model's first choice instead:
# a count must measure the same computation every run.
os.environ["CONVBENCH_TUNING"] = "off"

import torch
import torch.nn.functional as F


def probe_isa() -> dict[str, str]:
    """What oneDNN and ATen dispatch to in this process: oneDNN's ``isa:`` line and the
    implementation its convolution takes (e.g. ``jit:avx2``), from oneDNN's verbose output
    around one uncounted call, and ATen's CPU capability."""
    x, w = torch.randn(1, 32, 28, 28), torch.randn(32, 32, 3, 3)
    with tempfile.TemporaryFile(mode="w+") as log:
        sys.stdout.flush()
        saved = os.dup(1)
        os.dup2(log.fileno(), 1)
        try:
            with torch.no_grad(), torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON):
                F.conv2d(x, w, padding=1)
        finally:
            os.dup2(saved, 1)
            os.close(saved)
        log.seek(0)
        text = log.read()
    isa = re.search(r"onednn_verbose,.*?,info,cpu,isa:(.*)", text)
    impl = re.search(r"onednn_verbose,.*?,primitive,exec,cpu,convolution,([^,]*)", text)
    return {
        "onednn_isa": isa.group(1).strip() if isa else "unknown",
        "onednn_conv": impl.group(1) if impl else "unknown",
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
    }


def instrument(vgdb: str, timeout_s: float = 300.0) -> None:
    """Switch callgrind's instrumentation on, which the parent starts off when ``vgdb`` is at
    hand: importing torch then runs about four times faster. vgdb hands the command over when
    valgrind next polls for one, which it does while code runs, so code keeps running here
    (polling vgdb) until vgdb is done; no ptrace is needed."""
    proc = subprocess.Popen(
        [vgdb, f"--pid={os.getpid()}", "instrumentation", "on"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    gc.disable()  # however long the loop runs, it must leave no trace in the heap
    while proc.poll() is None:
        if time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"{vgdb} did not switch callgrind's instrumentation on")
    gc.enable()
    if proc.returncode:
        raise SystemExit(f"{vgdb} failed to switch callgrind's instrumentation on")


def count(job: dict[str, Any], out: Any) -> None:
    """Count every case of ``job``, writing one JSON line per case to ``out``."""
    from convbench.backends.base import UnsupportedConfig
    from convbench.spec import parse
    from convbench.suites import Workload
    from convbench.sweep import Case, ready

    if job["vgdb"]:  # after every import
        instrument(job["vgdb"])
    out.write(json.dumps({"started": True}) + "\n")
    out.flush()
    toggle, toggle_and_dump = torch._C._valgrind_toggle, torch._C._valgrind_toggle_and_dump_stats
    calls = range(job["calls"])
    dumps = 0
    for i, c in enumerate(job["cases"]):
        line: dict[str, Any] = {"index": i}
        try:
            workload = Workload(parse(c["spec"]), c["fill"])
            r = ready(Case(workload, c["backend"], c["device"], c["dtype"]), job["seed"])
            gc.collect()  # before the warm-up, whose heap state the counted calls then find
            gc.disable()
            for _ in range(c["warmup"]):  # uncounted
                r()
            toggle()
            try:
                for _ in calls:
                    r()
            finally:  # a call that raises still closes its region: one dump per region
                toggle_and_dump()
                dumps += 1
            line.update(status="ok", dump=dumps)
        except UnsupportedConfig as exc:
            line.update(status="unsupported", reason=str(exc))
        except Exception as exc:  # isolation: one case's error is that case's failure
            line.update(status="failed", reason=f"{type(exc).__name__}: {exc}".strip())
        finally:
            gc.enable()
        out.write(json.dumps(line) + "\n")
        out.flush()


def warm(job: dict[str, Any]) -> None:
    """Outside valgrind: call the smallest case of each backend and dtype once, so that code a
    backend compiles at its first call (Numba's kernels) is compiled here, natively, and found
    in its cache under valgrind. A case that fails here fails again where it is counted."""
    from convbench.spec import parse
    from convbench.suites import Workload
    from convbench.sweep import Case, ready

    smallest: dict[tuple[str, str, str], tuple[float, dict[str, Any]]] = {}
    for c in job["cases"]:
        key, flops = (c["backend"], c["device"], c["dtype"]), parse(c["spec"]).flops
        if key not in smallest or flops < smallest[key][0]:
            smallest[key] = (flops, c)
    for _, c in smallest.values():
        try:
            workload = Workload(parse(c["spec"]), c["fill"])
            ready(Case(workload, c["backend"], c["device"], c["dtype"]), job["seed"])()
        except Exception:  # it fails again where it is counted, and is reported there
            continue


def main(argv: list[str]) -> int:
    with open(argv[1]) as fh:
        job = json.load(fh)
    torch.set_num_threads(job["threads"])
    if "--count" not in argv:
        with open(job["probe"], "w") as out:
            out.write(json.dumps({"info": probe_isa()}) + "\n")
        warm(job)
        return 0
    if not torch._C._valgrind_supported_platform():
        raise SystemExit("this torch was built without the valgrind client requests")
    with open(job["result"], "w") as out:
        count(job, out)
        # The ISA last: oneDNN's verbose lines carry timings, whose lengths vary from run to
        # run, and so would the heap that the counted calls find after them.
        out.write(json.dumps({"info": probe_isa()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
