"""The ``convbench`` command: parses arguments and calls the rooms that do the work.

Exit codes: 0 success; 1 some case failed or was inaccurate; 2 bad input (one line on stderr,
no traceback); 130 interrupted (records written so far are kept; ``--resume`` completes them).
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape as esc_rich
from rich.table import Table

from convbench import (
    ab,
    backends,
    execution,
    gating,
    models,
    network,
    tune,
    tuning,
    verdicts,
)
from convbench.arguments import EXIT_USAGE, PROFILE_STEPS, UsageError, build_parser
from convbench.console import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    print_comparison,
    print_stages,
    print_summary,
    run_sweep,
)
from convbench.console import console as make_console
from convbench.counting import count_line, count_pass, require_valgrind
from convbench.env import cpu_count, fingerprint
from convbench.execution import CASE_TIMEOUT, Terminated
from convbench.model_run import run_model
from convbench.profiling import TRACES
from convbench.report.report import REPORT, load, render_report
from convbench.results import Record, RunStore, write_file
from convbench.spec import ConvSpec
from convbench.suites import DEFAULT_SUITE, SUITES, Workload, collect, get_suite
from convbench.sweep import parse_dtype

# --- run --------------------------------------------------------------------------------------

_SOURCES = ("suite", "spec", "batch_file", "grid", "fuzz")  # where problems come from
_SELECTION = (
    "suite",
    "spec",
    "batch_file",
    "grid",
    "fuzz",
    "seed",
    "mb",
    "backend",
    "device",
    "dtype",
    "threads",
    "baseline",
    "quick",
    "cold_cache",
    "max_memory",
    "profile",
    "instructions",
    "cache_sim",
)


def _devices(choice: str | None) -> list[str]:
    import torch

    if choice in (None, "cpu"):
        return ["cpu"]
    if choice == "cuda":
        if not torch.cuda.is_available():
            raise UsageError("--device cuda: CUDA is not available on this machine")
        return ["cuda"]
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def _selection(args: argparse.Namespace) -> dict[str, Any]:
    """Backends, devices, dtypes, threads and timing, in the stored form a resume replays."""
    known = backends.names()
    devices = _devices(args.device)
    chosen = (
        [b.strip() for b in args.backend.split(",")]
        if args.backend
        else backends.available(devices)
    )
    baseline = args.baseline or "torch"
    for b in [*chosen, baseline]:
        if b not in known:
            raise UsageError(f"unknown backend {b!r} (known: {', '.join(known)})")
    try:
        dtypes = [parse_dtype(t) for t in (args.dtype or "float32").split(",")]
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return {
        "backends": list(dict.fromkeys(chosen)),
        "devices": devices,
        "dtypes": list(dict.fromkeys(dtypes)),
        "threads": args.threads or cpu_count(),
        "baseline": baseline,
        "seed": args.seed or 0,
        "quick": bool(args.quick),
        "cold_cache": bool(vars(args).get("cold_cache")),
        "max_memory": args.max_memory,
        "profile_steps": (
            args.steps
            if args.command == "profile"
            else PROFILE_STEPS
            if vars(args).get("profile")
            else 0
        ),
        "instructions": bool(vars(args).get("instructions") or vars(args).get("cache_sim")),
        "cache_sim": bool(vars(args).get("cache_sim")),
        "argv": sys.argv[1:],
    }


def _workloads(args: argparse.Namespace, default: list[str]) -> list[Workload]:
    """The problems of the sources given, or of the ``default`` suites where none is."""
    sources = any(getattr(args, k) for k in _SOURCES)
    return collect(
        suites=args.suite or ([] if sources else default),
        specs=args.spec or [],
        batch_files=args.batch_file or [],
        grids=args.grid or [],
        fuzz_count=args.fuzz or 0,
        fuzz_seed=args.seed or 0,
        mb=args.mb,
    )


def _new_config(args: argparse.Namespace) -> dict[str, Any]:
    """Resolve the problems and the selection into the stored form a resume can replay."""
    selection = _selection(args)
    workloads = _workloads(args, [DEFAULT_SUITE])
    if not workloads:
        raise UsageError("no problems to run")
    return {"workloads": [{"spec": w.spec.format(), "fill": w.fill} for w in workloads]} | selection


def _start(args: argparse.Namespace) -> tuple[RunStore, dict[str, Any]]:
    """A new run folder with the resolved selection and the environment written into it."""
    config = _new_config(args)
    store = RunStore.create(Path(args.out))
    store.write_json(RunStore.CONFIG, config)
    store.write_json(RunStore.ENVIRONMENT, fingerprint(config["threads"], config["devices"]))
    return store, config


def _exit_code(records: list[Record]) -> int:
    bad = any(r.status in ("failed", "inaccurate") for r in records)
    return EXIT_FAILED if bad else EXIT_OK


def cmd_run(args: argparse.Namespace) -> int:
    root = Path(args.out)
    if args.retry_failed and not args.resume:
        raise UsageError("--retry-failed goes with --resume RUN_ID")
    if args.dask and args.profile:
        raise UsageError("--profile writes its traces where the case runs: not with --dask")
    if args.instructions or args.cache_sim:
        require_valgrind()
    if args.resume:
        given = [k for k in _SELECTION if getattr(args, k) not in (None, False)]
        if given:
            raise UsageError(
                f"--resume replays the run as it was started; drop --{given[0].replace('_', '-')}"
            )
        try:
            store = RunStore.open(root, args.resume)
        except FileNotFoundError as exc:
            raise UsageError(str(exc)) from None
        config = store.read_json(RunStore.CONFIG)
        for b in config["backends"]:
            if b not in backends.names():
                raise UsageError(f"run {args.resume} used backend {b!r}, which is not registered")
        if config.get("instructions"):
            require_valgrind()
        store.repair()
    client = execution.connect(args.dask) if args.dask else None  # before a run folder exists
    try:
        if not args.resume:
            store, config = _start(args)
        records, total, wall, interrupted = run_sweep(
            store, config, args.case_timeout, args.retry_failed, client
        )
    finally:
        if client is not None:
            execution.disconnect(client)
    console = make_console()
    counted = EXIT_OK if interrupted else count_pass(console, store, config, records)
    if counted == EXIT_INTERRUPTED:
        interrupted = EXIT_INTERRUPTED
    print_summary(console, records)
    _write_run_report(console, store, records)
    console.print(
        f"wall time {wall:.1f} s; results: {store.path}",
        markup=False,
        highlight=False,
    )
    if interrupted:
        console.print(
            f"interrupted after {len(records)} of {total} cases; complete it with: "
            f"convbench run --resume {store.run_id} --out {root}"
            + (f" --dask {args.dask}" if args.dask else ""),
            markup=False,
            highlight=False,
        )
        return interrupted
    return _exit_code(records) or counted


# --- profile ----------------------------------------------------------------------------------


def cmd_profile(args: argparse.Namespace) -> int:
    if not any(getattr(args, k) for k in _SOURCES):
        raise UsageError("profile needs problems: --spec DESC (or --suite, --batch-file, --grid)")
    args.quick = True
    store, config = _start(args)
    console = make_console()
    records, _, wall, interrupted = run_sweep(store, config, CASE_TIMEOUT, retry_failed=False)
    _write_run_report(console, store, records)
    for r in records:
        if r.trace:
            print_stages(console, store, r)
        else:
            console.print(
                f"{r.name or r.spec} | {r.backend}: {r.status}: {r.reason}",
                markup=False,
                highlight=False,
            )
    console.print(
        f"wall time {wall:.1f} s; view the traces with: tensorboard --logdir {store.path / TRACES}",
        markup=False,
        highlight=False,
    )
    return interrupted or _exit_code(records)


# --- report and compare ------------------------------------------------------------------------


def _find(ref: str, root: str) -> RunStore:
    try:
        return RunStore.find(ref, root)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None


def _write_run_report(console: Console, store: RunStore, records: list[Record]) -> None:
    """The run's own report, written when it finishes. Whatever goes wrong writing it is
    reported in one line and changes neither the records nor the exit code."""
    out = store.path / REPORT
    try:
        path = write_file(out, render_report([load(store, records)], out))
    except Exception as exc:
        console.print(f"report not written: {type(exc).__name__}: {exc}", markup=False)
        return
    console.print(f"report: {path}", markup=False, highlight=False)


def cmd_report(args: argparse.Namespace) -> int:
    stores = [_find(ref, args.root) for ref in args.runs]
    out = args.out or (stores[0].path / REPORT if len(stores) == 1 else Path(REPORT))
    path = write_file(out, render_report([load(s) for s in stores], out))
    print(f"report: {path}")
    return EXIT_OK


def cmd_compare(args: argparse.Namespace) -> int:
    from convbench.report.compare import render_comparison

    base, new = load(_find(args.base, args.root)), load(_find(args.new, args.root))
    c = verdicts.compare(
        base.records,
        new.records,
        base.environment,
        new.environment,
        threshold=args.threshold,
        alpha=args.alpha,
        error_factor=args.error_factor,
        backend_threshold=args.backend_threshold,
    )
    console = make_console()
    console.print(f"compare: base {base.store.path}, new {new.store.path}", markup=False)
    print_comparison(console, c, "compare")
    if args.html:
        write_file(args.html, render_comparison(c, base.run_id, new.run_id))
        console.print(f"html: {args.html}", markup=False)
    return EXIT_FAILED if c.bad else EXIT_OK


def cmd_ab(args: argparse.Namespace) -> int:
    from convbench.report.compare import render_comparison

    if args.instructions:
        require_valgrind()
    config = _new_config(args)
    try:
        o = ab.run_ab(
            args.base,
            args.new,
            config,
            out=Path(args.out),
            budget_s=args.budget,
            instructions=args.instructions,
            on_count=count_line,
        )
    except ab.SideError as exc:
        raise UsageError(str(exc)) from None
    base, new = (o.records[role] for role in ab.ROLES)
    c = verdicts.compare(
        base,
        new,
        o.environments["base"],
        o.environments["new"],
        threshold=args.threshold,
        alpha=args.alpha,
        error_factor=args.error_factor,
        paired=True,
        backend_threshold=args.backend_threshold,
    )
    console = make_console()
    console.print(f"ab: base {o.sides['base'].label}, new {o.sides['new'].label}", markup=False)
    print_comparison(console, c, "ab")
    page = render_comparison(c, o.sides["base"].label, o.sides["new"].label)
    for path in filter(None, (o.folder / REPORT, args.html)):
        console.print(f"report: {write_file(path, page)}", markup=False, highlight=False)
    console.print(f"wall time {o.wall_s:.1f} s; results: {o.folder}", markup=False)
    for note in o.notes:
        console.print(f"[yellow]ab: {esc_rich(note)}[/]")
    if o.interrupted:
        console.print(f"ab: interrupted after {len(new)} of {o.total} cases", markup=False)
        return EXIT_INTERRUPTED
    return EXIT_FAILED if c.bad or o.uncounted else EXIT_OK


# --- list -------------------------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    console = make_console()
    if args.what == "suites":
        table = Table("suite", "cases", "GFLOP", "description")
        for s in SUITES.values():
            ws = s.workloads(args.mb)
            table.add_row(
                s.name, str(len(ws)), f"{sum(w.spec.flops for w in ws) / 1e9:.3g}", s.description
            )
        console.print(table)
    elif args.what == "backends":
        table = Table("backend", "cpu", "cuda", "description")
        for b in backends.all_backends():
            cells = [backends.device_reason(b, d) or "yes" for d in ("cpu", "cuda")]
            table.add_row(b.name, *cells, b.description)
        console.print(table)
    else:
        if not args.suite:
            raise UsageError("list cases needs a suite name, e.g. 'convbench list cases resnet50'")
        for w in get_suite(args.suite).workloads(args.mb):
            print(w.spec.format())
    return EXIT_OK


# --- tune and model ---------------------------------------------------------------------------


def _tuned(
    args: argparse.Namespace, specs: list[ConvSpec], store: RunStore | None = None
) -> tune.Tuned:
    runs = [_find(ref, args.out) for ref in args.runs or []]
    if not specs and not runs:
        raise UsageError(
            "nothing to tune: give problems (--suite, --spec, --model, ...) or --from RUN"
        )
    return tune.tune(
        specs,
        runs,
        _selection(args),
        Path(args.out),
        max_error=args.max_error,
        case_timeout=args.case_timeout,
        store=store,
    )


def cmd_tune(args: argparse.Namespace) -> int:
    specs = [w.spec for w in _workloads(args, [])]
    for name in args.model or []:
        net = models.build(name)
        x = network.example_input(net.input_size, args.mb or 1, args.size, device="meta")
        specs += [spec for _, spec in network.conv_layers(net.module, x)]
    tuned = _tuned(args, specs)
    folder = tuned.store.path if tuned.store else Path(args.out)
    path = tuned.table.save(args.table_out or folder / "table.json")
    console = make_console()
    tune.print_table(console, tuned.table, tuned.layers)
    measured = f"{tuned.measured} measured in run {tuned.store.run_id}" if tuned.store else "none"
    console.print(
        f"tuned {len(tuned.table.choices)} problems in {tuned.wall_s:.1f} s (measured now: "
        f"{measured}); table: {path}",
        markup=False,
        highlight=False,
    )
    return tuned.interrupted or EXIT_OK


def cmd_model(args: argparse.Namespace) -> int:
    if args.table and (args.runs or args.max_error or args.alone):
        raise UsageError("--table is used as it is: --from, --max-error and --alone go with tuning")
    given = (tuning.Table.load(args.table), args.table) if args.table else None
    net = models.build(args.name, args.seed)
    selection = _selection(args)
    if len(selection["devices"]) > 1 or len(selection["dtypes"]) > 1:
        raise UsageError("model runs on one device and one dtype: give --device and --dtype once")
    device, dtype = selection["devices"][0], selection["dtypes"][0]
    x = network.example_input(net.input_size, args.mb, args.size, args.seed, device, dtype)
    return run_model(
        make_console(),
        net,
        x,
        RunStore.create(Path(args.out)),
        given=given,
        tuner=lambda specs, store: _tuned(args, specs, store),
        alone=args.alone,
        max_error=args.max_error,
        threads=selection["threads"],
        budget_s=args.budget,
        seed=args.seed,
        table_out=args.table_out,
    )


# --- asv-machine ------------------------------------------------------------------------------


def cmd_asv_machine(args: argparse.Namespace) -> int:
    from convbench.asv_machine import machine_file, record_machine

    try:
        entry = record_machine(args.machine)
    except RuntimeError as exc:
        raise UsageError(str(exc)) from None
    print(f"{machine_file()}: {entry['machine']}")
    for key in sorted(entry):
        print(f"  {key}: {entry[key]}")
    return EXIT_OK


# --- gate -------------------------------------------------------------------------------------


def cmd_gate(args: argparse.Namespace) -> int:
    console = make_console()
    if args.runs and args.newest:
        raise UsageError("gate takes RUN.json files or --newest, not both")
    if not args.instructions:
        return gating.timing_gate(
            console,
            args.runs,
            args.baseline or gating.BASELINE,
            args.threshold,
            args.backend_threshold,
            args.write_baseline,
            args.newest or 1,
        )
    if args.runs or args.newest:
        raise UsageError("gate --instructions counts its own cases; it takes no runs")
    require_valgrind()
    baseline = args.baseline or gating.INSTRUCTION_BASELINE
    return gating.instruction_gate(console, baseline, args.margin, args.write_baseline)


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "run": cmd_run,
    "profile": cmd_profile,
    "list": cmd_list,
    "report": cmd_report,
    "compare": cmd_compare,
    "ab": cmd_ab,
    "asv-machine": cmd_asv_machine,
    "gate": cmd_gate,
    "tune": cmd_tune,
    "model": cmd_model,
}


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    signal.signal(signal.SIGTERM, _terminate)
    try:
        args = parser.parse_args(argv)
        return COMMANDS[args.command](args)
    except (UsageError, ValueError) as exc:
        print(f"convbench: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        print("convbench: interrupted", file=sys.stderr)
        return exc.code if isinstance(exc, Terminated) else EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
