"""One self-contained HTML page: the pieces the report and the comparison share.

Everything the page needs is inside it: the style, a small script for sorting and filtering
tables, plotly.js (the copy bundled in the ``plotly`` package) and the charts' data, so it opens
from a file on a machine with no network and asks no host for anything.

Whatever comes from input files (problem names, backend names, error texts) reaches the page in
one of two ways only: as text escaped by ``html.escape``, or inside the JSON data block, where
``<``, ``>`` and ``&`` are written as ``\\u003c``-style escapes, so no input can close a tag or
open a script. The page's own script puts data into the document only through ``textContent``
and plotly, never through ``innerHTML``.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

__all__ = ["Cell", "Column", "Page", "esc", "fmt_num", "hline", "plot_text"]


def esc(value: object) -> str:
    """Text and attribute values, escaped for HTML."""
    return html.escape(str(value), quote=True)


def plot_text(value: object) -> str:
    """Text for plotly, which reads ``<a href>``, ``<b>``, ``<span style>`` in labels as markup:
    escaped, plotly shows the characters as they are (it decodes ``&lt;``, ``&gt;``, ``&amp;``
    back to text, but not ``&quot;``, hence ``quote=False``)."""
    return html.escape(str(value), quote=False)


def fmt_num(value: float | None, spec: str = ".3g", suffix: str = "") -> str:
    if value is None:
        return "-"
    if not math.isfinite(value):
        return str(value)  # inf, nan: a real outcome (an overflow), not a missing value
    return f"{value:{spec}}{suffix}"


def _finite(data: Any) -> Any:
    """``data`` with every infinite or NaN number as ``None``, which JSON has and plotly skips."""
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {k: _finite(v) for k, v in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(v) for v in data]
    return data


def hline(y: float, color: str = "#444", dash: str = "dash") -> dict[str, Any]:
    """A plotly shape: a horizontal line across the whole chart at ``y``."""
    return {
        "type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": y, "y1": y,
        "line": {"dash": dash, "color": color},
    }  # fmt: skip


def _json_for_script(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element whatever strings it holds."""
    text = json.dumps(_finite(data), allow_nan=False, separators=(",", ":"))
    return text.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def _asset(name: str) -> str:
    return resources.files("convbench.report").joinpath("assets", name).read_text()


def _plotly_js() -> str:
    """plotly.js as shipped inside the ``plotly`` package; ``</script`` cannot end it early."""
    from plotly.offline import get_plotlyjs

    return get_plotlyjs().replace("</script", "<\\/script")


@dataclass(frozen=True)
class Column:
    label: str
    numeric: bool = False
    filter: bool = False  # offer a drop-down of this column's values
    title: str = ""


@dataclass(frozen=True)
class Cell:
    """A table cell: its text, the value it sorts by, an optional link and CSS class."""

    text: str
    sort: float | str | None = None
    href: str | None = None
    cls: str = ""
    title: str = ""

    def render(self) -> str:
        attrs = ""
        if self.sort is not None:
            value = self.sort
            if isinstance(value, float) and not math.isfinite(value):
                value = ""
            attrs += f' data-sort="{esc(value)}"'
        if self.cls:
            attrs += f' class="{esc(self.cls)}"'
        if self.title:
            attrs += f' title="{esc(self.title)}"'
        body = esc(self.text)
        if self.href:
            body = f'<a href="{esc(self.href)}">{body}</a>'
        return f"<td{attrs}>{body}</td>"


class Page:
    """Sections of HTML and charts, rendered into one document."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []
        self.charts: dict[str, dict[str, Any]] = {}

    def section(self, heading: str, html_body: str, note: str = "") -> None:
        """A section whose body is already HTML (its text already escaped by ``esc``)."""
        lead = f'<p class="note">{esc(note)}</p>' if note else ""
        self.parts.append(f"<section><h2>{esc(heading)}</h2>{lead}{html_body}</section>")

    def chart(self, key: str, data: list[dict[str, Any]], layout: dict[str, Any]) -> str:
        """A plotly chart's placeholder; its data travel in the page's JSON block."""
        self.charts[key] = {"data": data, "layout": layout}
        return f'<div class="chart" id="chart-{esc(key)}" data-chart="{esc(key)}"></div>'

    @staticmethod
    def table(
        table_id: str,
        columns: Sequence[Column],
        rows: Iterable[Sequence[Cell]],
        *,
        search: bool = True,
        row_classes: Iterable[str] | None = None,
    ) -> str:
        """A table that sorts by a click on its headers and filters by text and drop-downs."""
        rows = list(rows)
        classes = list(row_classes) if row_classes is not None else [""] * len(rows)
        controls = ""
        if search:
            controls += (
                f'<input type="search" class="filter-text" data-table="{esc(table_id)}" '
                'placeholder="filter rows: any text" aria-label="filter rows">'
            )
        for i, col in enumerate(columns):
            if not col.filter:
                continue
            values = sorted({r[i].text for r in rows})
            options = "".join(f'<option value="{esc(v)}">{esc(v)}</option>' for v in values)
            controls += (
                f'<label>{esc(col.label)} <select class="filter-col" data-table="{esc(table_id)}"'
                f' data-col="{i}"><option value="">all</option>{options}</select></label>'
            )
        head = "".join(
            f'<th data-type="{"num" if c.numeric else "text"}"'
            + (f' title="{esc(c.title)}"' if c.title else "")
            + f">{esc(c.label)}</th>"
            for c in columns
        )
        body = "".join(
            f'<tr class="{esc(cls)}">' + "".join(cell.render() for cell in row) + "</tr>"
            for row, cls in zip(rows, classes, strict=True)
        )
        count = f'<p class="count" data-table="{esc(table_id)}">{len(rows)} rows</p>'
        return (
            f'<div class="controls">{controls}</div>{count}<div class="scroll">'
            f'<table class="data" id="{esc(table_id)}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>"
        )

    def render(self, subtitle: str = "") -> str:
        sub = f'<p class="subtitle">{esc(subtitle)}</p>' if subtitle else ""
        return (
            "<!DOCTYPE html>\n"
            '<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(self.title)}</title><style>{_asset('report.css')}</style></head>"
            f"<body><header><h1>{esc(self.title)}</h1>{sub}</header><main>"
            + "".join(self.parts)
            + "</main>"
            f'<script type="application/json" id="chart-data">{_json_for_script(self.charts)}'
            "</script>"
            f"<script>{_plotly_js()}</script>"
            f"<script>{_asset('report.js')}</script>"
            "</body></html>\n"
        )
