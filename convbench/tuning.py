"""The tuning table: for each problem, device, dtype and machine, the fastest backend whose error
stays within bound — and why it was chosen and the others were not.

cuDNN's ``benchmark`` mode picks the fastest algorithm whatever its error; here a backend is
chosen only if its relative L2 error against float64 is within its own tolerance (or a stricter
``max_error``) *and* its paired speed-up over torch is beyond noise: the lower end of its 95 %
interval clears ``SPEEDUP_MARGIN`` (what the same code measures against itself between
processes). Where no backend is faster beyond noise, the table keeps torch, so a network tuned
with it is never slower than torch beyond noise.

The table is plain JSON, keyed by the canonical benchdnn descriptor (without a name, so that
every layer of the same shape shares one entry), so it can be shipped with a model::

    {"format": "convbench-table", "version": 1, "max_error": null, "baseline": "torch",
     "machines": {"host": {"cpu": ..., "threads": ..., "torch": ...}},
     "problems": {"g1mb8_ic64ih56iw56_...": [{"device": "cpu", "dtype": "float32",
                  "machine": "host", "backend": "winograd-f4", "speedup": 1.62, ...}]}}

Speed-ups are only comparable within the run that paired them, so a problem measured in several
runs takes its choice from the last run given.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convbench.measure.stats import Ratio
from convbench.report.summary import ratio_text, speedup_of
from convbench.results import Record
from convbench.spec import ConvSpec, parse
from convbench.verdicts import SPEEDUP_MARGIN, speedup_verdict

__all__ = ["FORMAT", "Choice", "Table", "choose", "missing", "problem_key"]

FORMAT = "convbench-table"
VERSION = 1


def problem_key(spec: ConvSpec | str) -> str:
    """The canonical descriptor of a problem, its name dropped: the table's key."""
    s = parse(spec) if isinstance(spec, str) else spec
    return dataclasses.replace(s, name="").format()


@dataclass(frozen=True)
class Choice:
    """What the table holds for one problem on one device, dtype and machine."""

    problem: str
    device: str
    dtype: str
    machine: str
    backend: str
    why: str
    speedup: float | None = None  # torch's time over the chosen backend's (1.0: torch itself)
    speedup_lo: float | None = None
    speedup_hi: float | None = None
    rel_l2_error: float | None = None
    bound: float | None = None  # the error it was held to: its tolerance or max_error
    within: bool = True  # False: no backend met the bound; the most accurate one is kept
    run_id: str = ""
    rounds: int = 0  # paired rounds behind the interval (0: none, as for torch itself)
    others: dict[str, str] = field(default_factory=dict)  # each other backend: why not
    network: str = ""  # its speed-up in the network the table was settled in (convbench.settle)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        del d["problem"]
        return d

    @property
    def speedup_text(self) -> str:
        if self.speedup is None:
            return "-"
        lo, hi = self.speedup_lo or self.speedup, self.speedup_hi or self.speedup
        return ratio_text(Ratio(self.speedup, lo, hi, self.rounds))


def _bound(r: Record, max_error: float | None) -> float | None:
    bounds = [b for b in (r.tolerance, max_error) if b is not None]
    return min(bounds) if bounds else None


def _choose_one(
    problem: str, rs: list[Record], max_error: float | None, baseline: str, margin: float
) -> Choice:
    """One problem's choice from the records of one run."""
    first = rs[0]
    baseline = next((r.baseline for r in rs if r.baseline), baseline)
    base = next((r for r in rs if r.backend == baseline and r.status == "ok"), None)
    others: dict[str, str] = {}
    qualified: list[tuple[float, Record, Any]] = []
    for r in rs:
        bound = _bound(r, max_error)
        if r.status in ("unsupported", "failed"):
            others[r.backend] = f"{r.status}: {r.reason}"
            continue
        if r.rel_l2_error is None:
            others[r.backend] = "no error measured"
            continue
        if bound is not None and r.rel_l2_error > bound:
            others[r.backend] = f"error {r.rel_l2_error:.1e} above its bound {bound:.1e}"
            continue
        if r.backend == baseline:
            continue
        ratio = speedup_of(r, base)
        if ratio is None:
            others[r.backend] = f"no speed-up over {baseline} measured"
            continue
        verdict = speedup_verdict(ratio, margin)
        text = ratio_text(ratio)
        if verdict == "faster":
            qualified.append((ratio.value, r, ratio))
            others[r.backend] = f"faster, {text}"
        else:
            others[r.backend] = f"{verdict}, {text}"
    common = {"problem": problem, "device": first.device, "dtype": first.dtype}
    common |= {"machine": first.host, "run_id": first.run_id}
    if qualified:
        value, r, ratio = max(qualified, key=lambda q: q[0])
        others.pop(r.backend)
        for _, other, _ in qualified:
            if other is not r:
                others[other.backend] += f", but {r.backend} is faster"
        if base is not None:  # the baseline, timed and not chosen, says why too
            others.setdefault(baseline, f"slower: {r.backend} runs {ratio_text(ratio)} over it")
        return Choice(
            **common,
            backend=r.backend,
            why=f"fastest within its error bound: {ratio_text(ratio)} "
            f"over {baseline}, error {r.rel_l2_error:.1e}",
            speedup=value,
            speedup_lo=ratio.lo,
            speedup_hi=ratio.hi,
            rounds=ratio.n,
            rel_l2_error=r.rel_l2_error,
            bound=_bound(r, max_error),
            others=others,
        )
    if base is not None and base.backend not in others:
        return Choice(
            **common,
            backend=baseline,
            why=f"no backend within its error bound is faster than {baseline} beyond noise "
            f"(±{margin:g} %)",
            speedup=1.0,
            rel_l2_error=base.rel_l2_error,
            bound=_bound(base, max_error),
            others=others,
        )
    measured = [r for r in rs if r.status in ("ok", "inaccurate") and r.rel_l2_error is not None]
    if not measured:
        raise ValueError(f"{problem} on {first.device} {first.dtype}: no backend was measured")
    best = min(measured, key=lambda r: r.rel_l2_error)  # type: ignore[arg-type, return-value]
    others.pop(best.backend, None)
    ratio = speedup_of(best, base)
    return Choice(
        **common,
        backend=best.backend,
        why=f"no backend meets the error bound; {best.backend} is the most accurate",
        speedup=ratio.value if ratio else None,
        speedup_lo=ratio.lo if ratio else None,
        speedup_hi=ratio.hi if ratio else None,
        rounds=ratio.n if ratio else 0,
        rel_l2_error=best.rel_l2_error,
        bound=_bound(best, max_error),
        within=False,
        others=others,
    )


def choose(
    records: Iterable[Record],
    max_error: float | None = None,
    baseline: str = "torch",
    margin: float = SPEEDUP_MARGIN,
) -> list[Choice]:
    """A choice per problem, device, dtype and machine, from records of one or more runs (in
    the order given: a later run's measurement of a problem replaces an earlier one's). Speed-ups
    are over the baseline each run paired its rounds with (``baseline`` for records without)."""
    if max_error is not None and not max_error > 0:
        raise ValueError(f"max_error must be above 0, got {max_error}")
    by_problem: dict[tuple[str, str, str, str], dict[str, list[Record]]] = {}
    for r in records:
        where = (problem_key(r.spec), r.device, r.dtype, r.host)
        by_problem.setdefault(where, {}).setdefault(r.run_id, []).append(r)
    out = []
    for (problem, *_), runs in by_problem.items():
        rs = list(runs.values())[-1]
        latest = {r.backend: r for r in rs}  # a resumed run's retried record replaces the old
        out.append(_choose_one(problem, list(latest.values()), max_error, baseline, margin))
    return out


def missing(
    specs: Iterable[ConvSpec], records: Iterable[Record], devices: list[str], dtypes: list[str]
) -> list[ConvSpec]:
    """The problems among ``specs`` that no record measured on this machine for some device and
    dtype: what ``tune`` must measure (each once, however many layers share it)."""
    host = socket.gethostname()
    have = {(problem_key(r.spec), r.device, r.dtype) for r in records if r.host == host}
    out: dict[str, ConvSpec] = {}
    for s in specs:
        key = problem_key(s)
        if any((key, d, t) not in have for d in devices for t in dtypes):
            out.setdefault(key, s)
    return list(out.values())


@dataclass
class Table:
    """Choices by problem; ``lookup`` prefers this machine's entry, else another machine's."""

    choices: list[Choice]
    max_error: float | None = None
    baseline: str = "torch"
    machines: dict[str, dict[str, Any]] = field(default_factory=dict)
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    network: str = ""  # what the network it was settled in measured (convbench.settle)

    def __post_init__(self) -> None:
        self._index: dict[tuple[str, str, str], list[Choice]] = {}
        for c in self.choices:
            self._index.setdefault((c.problem, c.device, c.dtype), []).append(c)

    def lookup(
        self, spec: ConvSpec | str, device: str, dtype: str, machine: str | None = None
    ) -> Choice | None:
        found = self._index.get((problem_key(spec), device, dtype), [])
        host = machine or socket.gethostname()
        return next((c for c in found if c.machine == host), found[0] if found else None)

    def to_dict(self) -> dict[str, Any]:
        problems: dict[str, list[dict[str, Any]]] = {}
        for c in self.choices:
            problems.setdefault(c.problem, []).append(c.to_dict())
        return {
            "format": FORMAT,
            "version": VERSION,
            "created": self.created,
            "max_error": self.max_error,
            "baseline": self.baseline,
            "machines": self.machines,
            "network": self.network,
            "problems": problems,
        }

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Table:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise ValueError("not a convbench tuning table (no 'format': 'convbench-table')")
        if data.get("version") != VERSION:
            raise ValueError(f"tuning table version {data.get('version')!r}; this reads {VERSION}")
        known = {f.name for f in dataclasses.fields(Choice)}
        try:
            choices = [
                Choice(problem=problem_key(p), **{k: v for k, v in c.items() if k in known})
                for p, cs in data["problems"].items()
                for c in cs
            ]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            raise ValueError(f"malformed tuning table: {exc}") from None
        return cls(
            choices,
            data.get("max_error"),
            data.get("baseline", "torch"),
            data.get("machines", {}),
            data.get("created", ""),
            data.get("network", ""),
        )

    @classmethod
    def load(cls, path: str | Path) -> Table:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"cannot read tuning table {path}: {exc.strerror or exc}") from None
        except json.JSONDecodeError as exc:
            raise ValueError(f"tuning table {path} is not JSON: {exc}") from None
        return cls.from_dict(data)
