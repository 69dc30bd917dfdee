"""Do the paired speed-ups of several runs of the same selection agree?

    python scripts/speedup_stability.py results/RUN1 results/RUN2 ...

For every (problem, backend, device, dtype) with a paired speed-up, prints its verdict in each
run (``+`` significantly faster than the baseline, ``-`` significantly slower, ``.`` not
significant) and lists the flips: a backend significantly faster in one run and significantly
slower in another. Exit 1 if there is a flip. Also prints how precisely each run knew its
speed-ups (half the 95 % interval, relative).
"""

from __future__ import annotations

import statistics
import sys

from convbench.results import RunStore
from convbench.verdicts import record_speedup, speedup_verdict

SIGN = {"faster": "+", "slower": "-", "not significant": "."}


def main(paths: list[str]) -> int:
    runs = [RunStore.find(p) for p in paths]
    table: dict[tuple[str, str, str, str], list[str]] = {}
    for i, store in enumerate(runs):
        precisions = []
        for r in store.records():
            ratio = record_speedup(r)
            if ratio is None:
                continue
            precisions.append(ratio.precision)
            row = table.setdefault(
                (r.name or r.spec, r.backend, r.device, r.dtype), ["?"] * len(runs)
            )
            row[i] = SIGN[speedup_verdict(ratio)]
        print(
            f"{store.run_id}: {len(precisions)} speed-ups, median precision "
            f"±{100 * statistics.median(precisions):.1f} %, worst ±{100 * max(precisions):.1f} %"
        )
    flips = [k for k, v in table.items() if "+" in v and "-" in v]
    for key, signs in table.items():
        print(f"{' '.join(signs)}  {' | '.join(key)}")
    counts = {s: sum(v.count(s) for v in table.values()) for s in "+-."}
    print(
        f"{len(table)} backend-cases x {len(runs)} runs: {counts['+']} faster, "
        f"{counts['-']} slower, {counts['.']} not significant; {len(flips)} flips"
    )
    for key in flips:
        print("FLIP:", " | ".join(key), " ".join(table[key]))
    return 1 if flips else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
