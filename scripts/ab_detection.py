"""How often ``convbench ab`` raises a false alarm, and how often it catches a real slowdown.

    python scripts/ab_detection.py --runs 10 --fraction 0 --fraction 0.05 --fraction 0.10 \\
        -- --suite smoke --suite representative --threads 1

Makes a scratch clone of this checkout's HEAD with one extra commit per ``--fraction``, in which
the ``torch`` backend does that much more arithmetic — after each convolution, matrix products
sized to ``fraction`` of the convolution's own time — real extra work, as a regression is, not a
sleep. Then runs ``convbench ab HEAD <that commit>``
``--runs`` times per fraction (fraction 0: HEAD against itself) with the options after ``--``,
and reports per fraction: runs with any alarm (a case or a backend worse), runs in which torch
was caught (its backend verdict, or one of its cases, slower), and alarms on the backends left
alone. Each ab's own folder stays under ``--out``; verdicts use ``ab``'s default thresholds.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from convbench.results import RunStore
from convbench.verdicts import AB_THRESHOLD, BAD, compare

PATCH_AT = '        return Prepared(run, algorithm, {"tf32": tf32} if weight.is_cuda else {})\n'
# After each convolution, multiplications of a 64x64 matrix, as many as make ``fraction`` of
# the convolution's own time (measured in ``prepare``): real arithmetic that instruction counts
# see too, sized to the call so that every case gets the same relative slowdown.
INJECT = """        conv, fraction = run, {fraction!r}
        a = torch.randn(64, 64, dtype=torch.float32, device=weight.device)
        c = torch.empty_like(a)

        def median_s(fn, calls=15):
            times = []
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return sorted(times)[calls // 2]

        x0 = torch.randn(spec.input_shape, dtype=weight.dtype, device=weight.device)
        unit_s = median_s(lambda: torch.mm(a, a, out=c))
        conv_s = median_s(lambda: conv(x0))
        units = round(fraction * conv_s / unit_s)

        def run(x: torch.Tensor) -> torch.Tensor:
            y = conv(x)
            for _ in range(units):
                torch.mm(a, a, out=c)
            return y

        # Products after a convolution run slower than alone (its data left the caches):
        # correct the count once by what the whole call measures.
        if units:
            got = median_s(lambda: run(x0)) / conv_s - 1
            units = max(0, round(units * fraction / got)) if got > 0 else units

"""


def scratch_clone(root: Path, fractions: list[float]) -> tuple[Path, dict[float, str]]:
    """A clone of HEAD with one commit on top of it per fraction; the revision of each."""
    repo = root / "repo"
    subprocess.run(["git", "clone", "-q", str(Path.cwd()), str(repo)], check=True)
    git = ["git", "-C", str(repo), "-c", "user.name=ab", "-c", "user.email=ab@localhost"]

    def out(*cmd: str) -> str:
        return subprocess.run([*git, *cmd], check=True, capture_output=True, text=True).stdout

    head = out("rev-parse", "HEAD").strip()
    target = repo / "convbench/backends/torch_native.py"
    original = target.read_text()
    assert PATCH_AT in original, "torch_native.py changed: update PATCH_AT"
    revs = {}
    for f in fractions:
        revs[f] = head
        if f > 0:
            out("checkout", "-q", "--detach", head)
            patched = original.replace(PATCH_AT, INJECT.format(fraction=f) + PATCH_AT)
            target.write_text(patched.replace("import torch\n", "import time\n\nimport torch\n", 1))
            out("commit", "-q", "-am", f"inject {f:g}")
            revs[f] = out("rev-parse", "HEAD").strip()
    out("checkout", "-q", "--detach", head)
    return repo, revs


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--fraction", type=float, action="append", required=True)
    parser.add_argument("--out", type=Path, default=Path("results/ab-detection"))
    parser.add_argument("ab_args", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    extra = [a for a in args.ab_args if a != "--"]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        repo, revs = scratch_clone(Path(tmp), args.fraction)
        summary = {}
        for f in args.fraction:
            alarms, caught, others, torch_hits, changes = 0, 0, Counter(), Counter(), []
            for i in range(args.runs):
                out = (args.out / f"f{f:g}-{i}").resolve()
                # The console script, not ``-m``: run in the clone, ``-m`` would import the
                # clone's convbench as the orchestrator.
                cmd = [shutil.which("convbench") or "convbench", "ab", "HEAD", revs[f], *extra,
                       "--out", str(out)]  # fmt: skip
                proc = subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
                folder = next(out.glob("ab-*"))
                base = RunStore(folder, "base").records()
                new = RunStore(folder, "new").records()
                c = compare(base, new, paired=True, threshold=AB_THRESHOLD)
                worse = [ch.key[1] for ch in c.changes if ch.verdict in BAD]
                worse += [b.backend for b in c.worse_backends]
                torch_cases = [ch for ch in c.changes if ch.key[1] == "torch"]
                alarms += c.bad
                caught += "torch" in worse
                others.update(b for b in worse if b != "torch")
                torch_hits.update(ch.verdict for ch in torch_cases)
                changes += [
                    f"{b.backend} {100 * (b.ratio.value - 1):+.1f}% {b.verdict}" for b in c.backends
                ]
                ratios = [f"{ch.ratio:.3f}" for ch in torch_cases if ch.ratio]
                tail = re.findall(r"\d+ cases: .*", proc.stdout)
                print(f"fraction {f:g} run {i}: exit {proc.returncode}; "
                      f"{tail[-1] if tail else proc.stderr.strip()[-200:]}; torch ratios "
                      f"{' '.join(ratios)}", flush=True)  # fmt: skip
            summary[f"{f:g}"] = {
                "runs": args.runs, "runs_with_alarm": alarms,
                "runs_catching_torch": caught,
                "alarms_on_other_backends": dict(others),
                "torch_case_verdicts": dict(torch_hits),
                "backend_changes": changes,
            }  # fmt: skip
        print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
