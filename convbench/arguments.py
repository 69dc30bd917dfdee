"""The grammar of the ``convbench`` command line: its commands, their options, and the types
that check each value as it is read, so that bad input stops at parsing with one line naming
the option (exit code ``EXIT_USAGE``), before any work starts."""

from __future__ import annotations

import argparse
import re
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from convbench import __version__, ab, gating, models, verdicts
from convbench.env import cpu_count
from convbench.execution import CASE_TIMEOUT
from convbench.report.report import REPORT
from convbench.suites import DEFAULT_SUITE

__all__ = ["EXIT_USAGE", "PROFILE_STEPS", "UsageError", "build_parser"]

EXIT_USAGE = 2
PROFILE_STEPS = 5


class UsageError(Exception):
    """Bad input: reported as one line and exit code 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _size(text: str) -> int:
    """Bytes from ``4G``, ``512MiB``, ``1.5g`` or a plain number."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not m:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (try 512M or 4G)")
    scale = 1024 ** " kmgt".index(m.group(2).lower() or " ")
    return int(float(m.group(1)) * scale)


def _int_at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer of at least ``low``."""

    def convert(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return convert


def _number(accept: Callable[[float], bool], expect: str, unit: str = "") -> Callable[[str], float]:
    """An argparse type: a number that ``accept`` allows (``expect`` says which), optionally
    followed by ``unit``."""

    def convert(text: str) -> float:
        try:
            value = float(text.strip().removesuffix(unit) if unit else text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not accept(value):
            raise argparse.ArgumentTypeError(f"must be {expect}, got {text}")
        return value

    return convert


_ratio = _number(lambda v: v > 1, "above 1")  # how many times slower counts as a regression
_percent = _number(lambda v: v >= 0, "0 % or more", "%")
_probability = _number(lambda v: 0 < v < 1, "between 0 and 1")
_seconds = _number(lambda v: v > 0, "above 0", "s")
_positive, _count = _int_at_least(1), _int_at_least(0)


def _add_problems(parser: argparse.ArgumentParser, title: str) -> None:
    """The problem sources of ``run`` and ``profile``."""
    src = parser.add_argument_group(title)
    src.add_argument(
        "--suite",
        action="append",
        default=None,
        metavar="NAME",
        help="a named suite (see 'convbench list suites'); repeatable",
    )
    src.add_argument(
        "--spec",
        action="append",
        default=None,
        metavar="DESC",
        help="a benchdnn descriptor, e.g. mb8ic64ih56oc64oh56kh3ph1; repeatable",
    )
    src.add_argument(
        "--batch-file",
        action="append",
        default=None,
        metavar="FILE",
        help="a benchdnn shape file (3-D lines of more than one plane are skipped); repeatable",
    )
    src.add_argument(
        "--grid",
        action="append",
        default=None,
        metavar="AXES",
        help="a grid over descriptor fields, e.g. 'ic=16,32 oc=32 ih=28 kh=1,3'",
    )
    src.add_argument(
        "--fuzz",
        type=_count,
        default=None,
        metavar="N",
        help="N random valid problems (seeded by --seed)",
    )
    src.add_argument(
        "--seed", type=_count, default=None, help="seed of the fuzzer and of the inputs (default 0)"
    )
    src.add_argument("--mb", type=_positive, default=None, help="override every minibatch")


def _add_selection(
    parser: argparse.ArgumentParser, quick: bool = True, baseline: bool = True
) -> None:
    """Backends, devices, dtypes, threads and budgets of ``run`` and ``profile`` (which always
    times briefly, so offers no ``--quick``); ``ab`` times each backend against its other
    version, so offers no ``--baseline`` either."""
    sel = parser.add_argument_group("what to run them on")
    sel.add_argument(
        "--backend",
        default=None,
        metavar="A,B",
        help="comma-separated backends (default: all; see 'convbench list backends')",
    )
    sel.add_argument(
        "--device",
        choices=["cpu", "cuda", "all"],
        default=None,
        help="cpu (default), cuda, or all available",
    )
    sel.add_argument(
        "--dtype",
        default=None,
        metavar="T,U",
        help="comma-separated dtypes: float32 (default), float64, float16, bfloat16",
    )
    if baseline:
        sel.add_argument(
            "--baseline",
            default=None,
            metavar="NAME",
            help="the backend every speed-up is taken over, paired round by round (default: torch)",
        )
    sel.add_argument(
        "--threads",
        type=_positive,
        default=None,
        help=f"CPU threads (default: all {cpu_count()} cores)",
    )
    if quick:
        sel.add_argument(
            "--quick",
            action="store_true",
            default=None,
            help="a shorter time budget per case, less precise medians",
        )
    sel.add_argument(
        "--max-memory",
        type=_size,
        default=None,
        metavar="SIZE",
        help="record cases estimated to need more than SIZE (e.g. 4G) as unsupported",
    )


def _add_verdict_options(group: argparse._ArgumentGroup) -> None:
    """What ``compare`` and ``ab`` share of their verdicts (each sets its own --threshold)."""
    group.add_argument(
        "--alpha",
        type=_probability,
        default=verdicts.ALPHA,
        help=f"significance level, Holm-corrected over the cases (default: {verdicts.ALPHA:g})",
    )
    group.add_argument(
        "--error-factor",
        type=_ratio,
        default=verdicts.ERROR_FACTOR,
        help="an error that grows by more than this factor is less accurate "
        f"(default: {verdicts.ERROR_FACTOR:g})",
    )
    group.add_argument(
        "--backend-threshold",
        type=_percent,
        default=verdicts.BACKEND_THRESHOLD,
        metavar="PCT",
        help="smallest change of a backend's median case that counts, in %% (default: "
        f"{verdicts.BACKEND_THRESHOLD:g}; tested over its cases, Holm-corrected over backends)",
    )


def _image_size(text: str) -> tuple[int, int]:
    """``224`` or ``224x192``: an input's height and width."""
    parts = text.lower().split("x")
    if len(parts) not in (1, 2) or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"expected H or HxW (positive integers), got {text!r}")
    h, w = int(parts[0]), int(parts[-1])
    return h, w


def _add_tuning(parser: argparse.ArgumentParser) -> None:
    """Where ``tune`` and ``model`` take their measurements from, and the error bound."""
    group = parser.add_argument_group("tuning")
    group.add_argument(
        "--from",
        dest="runs",
        action="append",
        default=None,
        metavar="RUN",
        help="read the records of this run (id or folder) first; repeatable",
    )
    group.add_argument(
        "--max-error",
        type=_number(lambda v: v > 0, "above 0"),
        default=None,
        metavar="ERR",
        help="hold every backend to this relative L2 error as well as to its own tolerance",
    )
    group.add_argument(
        "--table-out",
        type=Path,
        default=None,
        metavar="FILE",
        help="write the table here (default: table.json in the run folder)",
    )


def _add_results(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    group = parser.add_argument_group("results")
    group.add_argument(
        "--out", default="results", metavar="DIR", help="folder of run folders (default: results/)"
    )
    return group


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="convbench",
        description="Benchmark 2-D convolution algorithms: "
        "latency, memory and accuracy against a float64 reference.",
    )
    parser.add_argument("--version", action="version", version=f"convbench {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    run = sub.add_parser(
        "run",
        help="run a sweep and write its records",
        description="Run every backend over the chosen problems. With no "
        f"source, runs the '{DEFAULT_SUITE}' suite on the CPU.",
    )
    _add_problems(run, f"problems (combine freely; default: the {DEFAULT_SUITE} suite)")
    _add_selection(run)
    run.add_argument(
        "--cold-cache",
        action="store_true",
        default=None,
        help="time each call alone after evicting the caches (twice the last-level cache read "
        "first, untimed), its input warm: a layer inside a network, whose weights and "
        "transforms the other layers pushed out",
    )
    run.add_argument(
        "--profile",
        action="store_true",
        default=None,
        help=f"also write a torch.profiler trace of each case ({PROFILE_STEPS} steps) into the "
        "run folder's traces/",
    )
    run.add_argument(
        "--instructions",
        action="store_true",
        default=None,
        help="after timing, count each case's instructions per call under valgrind's callgrind "
        "(one thread, one valgrind process for all cases) into the run folder",
    )
    run.add_argument(
        "--cache-sim",
        action="store_true",
        default=None,
        help="count with callgrind's cache simulation too: D1mr, DLmr, ... per call "
        "(implies --instructions)",
    )
    _add_results(run).add_argument(
        "--resume",
        default=None,
        metavar="RUN_ID",
        help="complete an interrupted run, skipping the cases it finished (those that failed, "
        "crashed or timed out included)",
    )
    run.add_argument(
        "--retry-failed",
        action="store_true",
        help="with --resume: run again the cases recorded 'failed' (their new record replaces "
        "the old)",
    )
    run.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="run the cases on the Dask cluster whose scheduler is at ADDRESS "
        "(tcp://HOST:8786), or on a LocalCluster started here ('local'); this process writes "
        "the records",
    )
    run.add_argument(
        "--case-timeout",
        type=_seconds,
        default=CASE_TIMEOUT,
        metavar="SECONDS",
        help="end a case that has run this long (its own code, summed), record it 'failed' "
        f"and go on in a fresh worker (default: {CASE_TIMEOUT:g})",
    )

    prof = sub.add_parser(
        "profile",
        help="profile cases with torch.profiler: traces for TensorBoard and time per stage",
        description="Time each case briefly, then profile it and write a trace per case and "
        "backend into <run folder>/traces/ (open it with 'tensorboard --logdir', Perfetto "
        "or chrome://tracing); prints the time of each stage.",
    )
    _add_problems(prof, "problems (at least one)")
    _add_selection(prof, quick=False)
    prof.add_argument(
        "--steps",
        type=_positive,
        default=PROFILE_STEPS,
        help=f"profiled calls per case, after one warm-up call (default: {PROFILE_STEPS})",
    )
    _add_results(prof)

    rep = sub.add_parser(
        "report",
        help="one self-contained HTML page of one or more runs",
        description="Environment, summary, winner per case, charts and every record, in one "
        "HTML file that needs no network.",
    )
    rep.add_argument("runs", nargs="+", metavar="RUN", help="a run folder, or a run id in --root")
    rep.add_argument(
        "--out",
        type=Path,
        default=None,
        metavar="FILE",
        help=f"where to write it (default: the run folder's {REPORT}; with several runs, "
        "report.html here)",
    )
    rep.add_argument("--root", default="results", help="where run ids are looked up")

    cmp = sub.add_parser(
        "compare",
        help="what got faster, slower or less accurate between two runs (exit 1 if worse)",
        description="Matches cases by spec, backend, device and dtype. A change of speed counts "
        "when it exceeds --threshold and is significant on the samples (Mann-Whitney U).",
    )
    cmp.add_argument("base", metavar="BASE", help="the earlier run (folder or id)")
    cmp.add_argument("new", metavar="NEW", help="the later run (folder or id)")
    cmp.add_argument(
        "--threshold",
        type=_percent,
        default=verdicts.THRESHOLD,
        metavar="PCT",
        help=f"smallest change of the median that counts, in %% (default: {verdicts.THRESHOLD:g})",
    )
    _add_verdict_options(cmp)  # type: ignore[arg-type]
    cmp.add_argument("--html", type=Path, default=None, metavar="FILE", help="also write a page")
    cmp.add_argument("--root", default="results", help="where run ids are looked up")

    abp = sub.add_parser(
        "ab",
        help="A/B of two versions (git revisions or Python environments) timed in alternating "
        "rounds on this machine (exit 1 if worse)",
        description="Runs each version in a worker process of its own and times every case on "
        "both in rounds of random order, so that a change is judged on per-round ratios "
        "(Wilcoxon signed-rank, Holm-corrected). Problems and backends as for 'run'.",
    )
    abp.add_argument(
        "base",
        metavar="BASE",
        help="a git revision of the checkout here, or a python interpreter or virtualenv folder",
    )
    abp.add_argument("new", metavar="NEW", help="the version to judge, given the same way")
    _add_problems(abp, f"problems (combine freely; default: the {DEFAULT_SUITE} suite)")
    _add_selection(abp, quick=False, baseline=False)
    abt = abp.add_argument_group("timing and verdicts")
    abt.add_argument(
        "--budget",
        type=_seconds,
        default=ab.AB_BUDGET_S,
        metavar="SECONDS",
        help=f"seconds of timing per case and side; every case gets {ab.AB_MIN_ROUNDS} rounds "
        f"whatever it says (default: {ab.AB_BUDGET_S:g})",
    )
    abt.add_argument(
        "--instructions",
        action="store_true",
        help="after the timing, also count each case's instructions per call under callgrind, "
        "one valgrind process per side (slow: a minute or more per side)",
    )
    abt.add_argument(
        "--threshold",
        type=_percent,
        default=verdicts.AB_THRESHOLD,
        metavar="PCT",
        help="smallest change of one case's median ratio that counts, in %% "
        f"(default: {verdicts.AB_THRESHOLD:g}: one process's memory placement alone moves a "
        "case by up to 15 %%)",
    )
    _add_verdict_options(abt)
    abt.add_argument(
        "--html", type=Path, default=None, metavar="FILE", help="also write the page here"
    )
    _add_results(abp)
    abp.set_defaults(quick=False, profile=None, baseline=None)

    tun = sub.add_parser(
        "tune",
        help="a tuning table: per problem, the fastest backend within its error bound",
        description="For each problem, device and dtype, the fastest backend whose relative L2 "
        "error is within its tolerance (or --max-error) and whose speed-up over torch is beyond "
        "noise; torch where none is. Reads the records of --from runs and measures, in a new "
        "run, the problems they lack on this machine.",
    )
    _add_problems(tun, "problems (combine freely; or none, with --from: every problem of those)")
    tun.add_argument(
        "--model",
        action="append",
        default=None,
        metavar="NAME",
        help="the convolutions of a network (see 'convbench model'), at --mb (default 1) and "
        "--size; repeatable",
    )
    tun.add_argument("--size", type=_image_size, default=None, metavar="H[xW]", help="input size")
    _add_tuning(tun)
    _add_selection(tun, baseline=False)
    _add_results(tun)
    tun.add_argument(
        "--case-timeout",
        type=_seconds,
        default=CASE_TIMEOUT,
        metavar="SECONDS",
        help=f"as in 'convbench run' (default: {CASE_TIMEOUT:g})",
    )
    tun.set_defaults(baseline=None, profile=None)

    mod = sub.add_parser(
        "model",
        help="tune a whole network's convolutions, then time it end to end against torch",
        description="Tune the network's convolution layers at the given minibatch and input "
        "size (or take --table), then time the whole network with torch and with the table, "
        "interleaved, and compare both outputs with the network run in float64. Writes "
        "model.json, model.html and table.json into a run folder.",
    )
    mod.add_argument(
        "name",
        help=f"{', '.join(models.NAMES)}, or package.module:callable returning an nn.Module",
    )
    mod.add_argument("--mb", type=_positive, default=1, help="minibatch (default 1)")
    mod.add_argument(
        "--size",
        type=_image_size,
        default=None,
        metavar="H[xW]",
        help="input height and width (default: the network's, 224 for the image classifiers)",
    )
    mod.add_argument(
        "--table", type=Path, default=None, metavar="FILE", help="use this table; tune nothing"
    )
    _add_tuning(mod)
    mod.add_argument(
        "--alone",
        action="store_true",
        help="keep the choices of the layers timed alone: do not settle the table in the "
        "network (where a choice stays only if it is faster in the network too)",
    )
    mod.add_argument(
        "--budget",
        type=_seconds,
        default=10.0,
        metavar="SECONDS",
        help="time budget of each version of the network (default 10)",
    )
    mod.add_argument(
        "--seed", type=_count, default=0, help="seed of the weights and of the input (default 0)"
    )
    _add_selection(mod, baseline=False)
    _add_results(mod)
    mod.set_defaults(baseline=None, profile=None, case_timeout=CASE_TIMEOUT)

    lst = sub.add_parser("list", help="list suites, backends, or the cases of a suite")
    lst.add_argument("what", choices=["suites", "backends", "cases"])
    lst.add_argument("suite", nargs="?", help="the suite whose cases to list")
    lst.add_argument("--mb", type=_positive, default=None, help="override the minibatch")

    machine = sub.add_parser(
        "asv-machine",
        help="'asv machine --yes' with this machine's GPU, CUDA and cuDNN added to its entry",
    )
    machine.add_argument("--machine", default=None, help="the entry's name (default: hostname)")

    gate = sub.add_parser(
        "gate",
        help="judge a pytest-benchmark run of tests/perf against the baseline (exit 1 if slower)",
        description="Each benchmark's time is divided by its case's yardstick (a bare "
        "F.conv2d timed in the same run), and that ratio is compared with the baseline's.",
    )
    gate.add_argument(
        "runs",
        nargs="*",
        type=Path,
        metavar="RUN.json",
        help=f"pytest-benchmark JSON (default: the newest under {gating.BENCHMARK_STORAGE}); "
        "several are combined by their median ratios",
    )
    gate.add_argument(
        "--newest",
        type=_positive,
        default=None,
        metavar="N",
        help=f"judge the N newest runs under {gating.BENCHMARK_STORAGE}, combined by their "
        "median ratios (as CI does when one run fails)",
    )
    gate.add_argument(
        "--baseline",
        type=Path,
        default=None,
        help=f"baseline file (default: {gating.BASELINE}; with --instructions "
        f"{gating.INSTRUCTION_BASELINE})",
    )
    gate.add_argument(
        "--instructions",
        action="store_true",
        help="count the instructions of the tests/perf cases under callgrind instead, and "
        "judge them against their baseline",
    )
    gate.add_argument(
        "--margin",
        type=_percent,
        default=verdicts.COUNT_MARGIN,
        metavar="PCT",
        help="with --instructions: fail when a case runs more than PCT %% more instructions "
        f"than the baseline (default: {verdicts.COUNT_MARGIN:g})",
    )
    gate.add_argument(
        "--threshold",
        type=_ratio,
        default=verdicts.GATE_THRESHOLD,
        help="fail when one benchmark is this many times slower "
        f"(default: {verdicts.GATE_THRESHOLD:g})",
    )
    gate.add_argument(
        "--backend-threshold",
        type=_ratio,
        default=verdicts.GATE_BACKEND_THRESHOLD,
        help="fail when a backend's cases are this many times slower on their geometric mean "
        f"(default: {verdicts.GATE_BACKEND_THRESHOLD:g})",
    )
    gate.add_argument(
        "--write-baseline",
        action="store_true",
        help="write the baseline from RUN.json (with --instructions: from the counts) instead "
        "of judging them",
    )
    return parser
