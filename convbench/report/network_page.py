"""The HTML page of ``convbench model``: the end-to-end result, then each convolution layer's
choice, from the plain dictionary ``NetworkResult.to_dict()`` gives (nothing of torch here)."""

from __future__ import annotations

from typing import Any

from convbench.report.page import Cell, Column, Page, esc, fmt_num
from convbench.report.summary import format_seconds

__all__ = ["render_network"]


def _end_to_end(r: dict[str, Any]) -> str:
    bound = r["max_error"]
    rows = [
        ("input", " × ".join(str(d) for d in r["input_shape"]) + f", {r['threads']} threads"),
        ("torch", format_seconds(r["torch_s"])),
        ("with the table", format_seconds(r["convbench_s"])),
        (
            "speed-up",
            f"{r['speedup']:.2f}x, 95 % interval [{r['speedup_lo']:.2f}-{r['speedup_hi']:.2f}] "
            f"over {r['rounds']} interleaved rounds: {r['verdict']}",
        ),
        ("torch's error vs float64", f"{r['torch_error']:.2e}"),
        ("the table's error vs float64", f"{r['convbench_error']:.2e}"),
        (
            "error bound per layer",
            "each backend's tolerance" + (f", at most {bound:g}" if bound else ""),
        ),
    ]
    if r["tuning"]:
        rows.append(("tuning", ", ".join(f"{k} {v}" for k, v in r["tuning"].items())))
    body = "".join(f"<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>" for k, v in rows)
    return f'<table class="kv">{body}</table>'


def _layers(r: dict[str, Any]) -> str:
    columns = [
        Column("layer"),
        Column("problem"),
        Column("chosen", filter=True),
        Column("ran with", filter=True),
        Column("alone vs torch [95% CI]", numeric=True),
        Column("in the network"),
        Column("rel. error", numeric=True),
        Column("why"),
    ]
    rows = [
        [
            Cell(row["path"]),
            Cell(row["problem"]),
            Cell(row["backend"]),
            Cell(row["run_backend"]),
            Cell(row["speedup"], sort=_leading_number(row["speedup"])),
            Cell(row["network"] or "-"),
            Cell(fmt_num(row["rel_l2_error"], ".1e"), sort=row["rel_l2_error"]),
            Cell(row["why"]),
        ]
        for row in r["layers"]
    ]
    return Page.table("layers", columns, rows)


def _leading_number(text: str) -> float | None:
    try:
        return float(text.split("x")[0])
    except ValueError:
        return None


def render_network(result: dict[str, Any]) -> str:
    """A self-contained page (no network access needed to read it)."""
    page = Page(f"convbench model: {result['name']}")
    page.section(
        "End to end",
        _end_to_end(result),
        note="The whole network timed with torch and with the tuning table's backends in "
        "interleaved rounds; the speed-up is the median of the per-round ratios.",
    )
    page.section(
        "Layers",
        _layers(result),
        note="Each convolution's problem and the table's choice: the fastest backend within its "
        "error bound whose speed-up interval clears the noise margin, else torch. A settled "
        "table keeps a choice only where it is faster by the same rule in the network too: "
        "the layer and the torch operators after it, up to the next converted layer, timed "
        "against the same stretch of the torch network.",
    )
    return page.render(subtitle=result["source"])
