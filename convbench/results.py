"""Records and the run folder: ``results/<run-id>/records.jsonl`` + ``environment.json``.

A record is flat and JSON-serialisable, one per case. The records file is append-only and each
record is flushed to disk as its case finishes, so an interrupted run loses nothing it finished;
a final line cut short by a crash is ignored on reading and dropped on resuming.
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "SCHEMA_VERSION",
    "STATUSES",
    "Record",
    "RunStore",
    "case_key",
    "new_run_id",
    "write_file",
]

SCHEMA_VERSION = 1
STATUSES = ("ok", "unsupported", "failed", "inaccurate")


@dataclass
class Record:
    """One case's outcome. Times are seconds per call; errors are against float64."""

    run_id: str
    spec: str
    name: str
    backend: str
    device: str
    dtype: str
    status: str
    reason: str = ""
    fill: str = "randn"
    seed: int = 0
    threads: int = 1
    median_s: float | None = None
    iqr_s: float | None = None
    min_s: float | None = None
    mean_s: float | None = None
    repeats: int = 0
    number: int = 0
    samples_s: list[float] = field(default_factory=list)
    flops: int = 0
    gflops: float | None = None
    prepare_s: float | None = None
    peak_bytes: int | None = None  # most allocated at once during one call, above before it
    prepare_bytes: int | None = None  # what prepare keeps alive (weight transforms, spectra)
    rel_l2_error: float | None = None
    max_abs_error: float | None = None
    tolerance: float | None = None
    noisy: bool = False
    cache: str = "warm"  # "cold": each call timed after the caches were evicted (measure.cache)
    # Paired timing: the backends of one problem timed in interleaved rounds. ``speedup`` is
    # the baseline backend's time over this one's (median of the per-round ratios), with its
    # 95 % confidence interval; an interval that contains 1 is no verdict either way.
    baseline: str = ""
    rounds: int = 0
    speedup: float | None = None
    speedup_lo: float | None = None
    speedup_hi: float | None = None
    # Instructions of one call counted under callgrind (``run --instructions``), and the other
    # events callgrind counted per call (cache misses with ``--cache-sim``).
    instructions: float | None = None
    callgrind_events: dict[str, float] = field(default_factory=dict)
    algorithm: str = ""
    algorithm_params: dict[str, Any] = field(default_factory=dict)
    trace: str = ""  # the profiler trace, relative to the run folder ("" if not profiled)
    profile_s: float | None = None  # mean wall time of one profiled step (profiler included)
    stages: dict[str, float] = field(default_factory=dict)  # seconds per step by stage
    layer_repeat: int = 1
    host: str = ""  # the machine the case ran on
    device_name: str = ""  # the CPU model, or the GPU's name and UUID
    timestamp: str = ""
    schema_version: int = SCHEMA_VERSION

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {self.status!r}")
        if not self.timestamp:
            self.timestamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")

    @property
    def key(self) -> tuple[str, str, str, str]:
        return case_key(self.spec, self.backend, self.device, self.dtype)

    @property
    def problem(self) -> tuple[str, str, str, str]:
        """What the backends of one problem share: their times are compared only within it,
        never across machines."""
        return (self.spec, self.device, self.dtype, self.host)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in data.items() if k in known})


def case_key(spec: str, backend: str, device: str, dtype: str) -> tuple[str, str, str, str]:
    """What identifies a case across runs and resumes."""
    return (spec, backend, device, dtype)


_REPORTED: set[tuple[Path, int]] = set()  # unreadable lines already reported


def write_file(path: Path, text: str) -> Path:
    """Write a file the run's reader opens (a page, a baseline, a table), or raise ValueError
    with one line saying why it cannot be written: the command reports it without a traceback."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise ValueError(f"cannot write {path}: {exc.strerror or exc}") from None
    return path


def new_run_id() -> str:
    """Sortable by time, unique across concurrent runs: ``20261128-153012-a1b2``."""
    return time.strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(2)


class RunStore:
    """The folder of one run."""

    RECORDS = "records.jsonl"
    ENVIRONMENT = "environment.json"
    CONFIG = "run.json"
    INSTRUCTIONS = "instructions.json"  # counts of a second pass (``run --instructions``)
    HOSTS = "hosts.json"  # the environment of every host of a Dask cluster (``run --dask``)

    def __init__(self, root: str | Path, run_id: str) -> None:
        self.run_id = run_id
        self.path = Path(root) / run_id

    @classmethod
    def create(cls, root: str | Path, run_id: str | None = None) -> RunStore:
        store = cls(root, run_id or new_run_id())
        store.path.mkdir(parents=True, exist_ok=False)
        return store

    @classmethod
    def open(cls, root: str | Path, run_id: str) -> RunStore:
        store = cls(root, run_id)
        if not (store.path / cls.CONFIG).is_file():
            raise FileNotFoundError(f"no run {run_id!r} in {str(root)!r}")
        return store

    @classmethod
    def find(cls, ref: str | Path, root: str | Path = "results") -> RunStore:
        """A run given as its folder (``results/20261128-...``) or as its id under ``root``."""
        path = Path(ref)
        if (path / cls.CONFIG).is_file():
            return cls(path.parent, path.name)
        if (Path(root) / path / cls.CONFIG).is_file():
            return cls(root, str(ref))
        raise FileNotFoundError(
            f"no run folder {str(ref)!r} (nor a run of that id in {str(root)!r})"
        )

    def write_json(self, name: str, data: dict[str, Any]) -> None:
        tmp = self.path / (name + ".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        tmp.replace(self.path / name)

    def read_json(self, name: str) -> dict[str, Any]:
        return json.loads((self.path / name).read_text())

    def append(self, record: Record) -> None:
        """Write one record durably: a crash after this returns cannot lose it."""
        with open(self.path / self.RECORDS, "a") as fh:
            fh.write(json.dumps(record.to_dict(), allow_nan=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())

    def records(self) -> list[Record]:
        """The run's records, one per case: where a case was run again (``--retry-failed``),
        its last record. A line that cannot be read is skipped, and said so on stderr (once per
        process) unless it is the last line, cut short by a crash (``repair`` drops it)."""
        path = self.path / self.RECORDS
        if not path.exists():
            return []
        by_key: dict[tuple[str, str, str, str], Record] = {}
        lines = path.read_text().splitlines()
        for n, line in enumerate(lines, 1):
            try:
                record = Record.from_dict(json.loads(line))
            except (json.JSONDecodeError, TypeError, ValueError, KeyError) as exc:
                if n < len(lines) and (path, n) not in _REPORTED:
                    _REPORTED.add((path, n))
                    print(
                        f"convbench: {path}:{n}: unreadable record skipped ({type(exc).__name__})",
                        file=sys.stderr,
                    )
                continue
            by_key.pop(record.key, None)
            by_key[record.key] = record
        out = list(by_key.values())
        counts = self.path / self.INSTRUCTIONS
        if counts.exists():  # written after the records, so merged into them on reading
            by_key = {
                case_key(c["spec"], c["backend"], c["device"], c["dtype"]): c
                for c in json.loads(counts.read_text())["cases"]
            }
            for r in out:
                if c := by_key.get(r.key):
                    r.instructions, r.callgrind_events = c["instructions"], c["events"]
        return out

    def repair(self) -> None:
        """Drop a final line cut short, so appending starts on a fresh line."""
        path = self.path / self.RECORDS
        if not path.exists():
            return
        data = path.read_bytes()
        if data and not data.endswith(b"\n"):
            path.write_bytes(data[: data.rfind(b"\n") + 1])
