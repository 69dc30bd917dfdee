// Sorting and filtering of the tables, and the charts. Data reach the page through
// textContent and plotly only: nothing here writes HTML.
"use strict";

function cellValue(row, index, numeric) {
  const cell = row.cells[index];
  const raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent;
  if (!numeric) return raw.toLowerCase();
  const value = parseFloat(raw);
  return Number.isNaN(value) ? null : value;
}

function sortBy(table, th) {
  const index = Array.prototype.indexOf.call(th.parentNode.children, th);
  const numeric = th.getAttribute("data-type") === "num";
  const ascending = th.getAttribute("aria-sort") !== "ascending";
  for (const other of th.parentNode.children) other.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", ascending ? "ascending" : "descending");
  const body = table.tBodies[0];
  const rows = Array.from(body.rows);
  rows.sort((a, b) => {
    const x = cellValue(a, index, numeric);
    const y = cellValue(b, index, numeric);
    if (x === y) return 0;
    if (x === null) return 1; // empty values last, either way
    if (y === null) return -1;
    return (x < y ? -1 : 1) * (ascending ? 1 : -1);
  });
  for (const row of rows) body.appendChild(row);
}

function applyFilters(tableId) {
  const table = document.getElementById(tableId);
  const text = document.querySelector(`.filter-text[data-table="${tableId}"]`);
  const needle = text ? text.value.trim().toLowerCase() : "";
  const selects = document.querySelectorAll(`.filter-col[data-table="${tableId}"]`);
  let shown = 0;
  for (const row of table.tBodies[0].rows) {
    let visible = !needle || row.textContent.toLowerCase().includes(needle);
    for (const select of selects) {
      const col = parseInt(select.getAttribute("data-col"), 10);
      if (select.value && row.cells[col].textContent !== select.value) visible = false;
    }
    row.hidden = !visible;
    if (visible) shown += 1;
  }
  const count = document.querySelector(`.count[data-table="${tableId}"]`);
  if (count) count.textContent = `${shown} of ${table.tBodies[0].rows.length} rows`;
}

for (const table of document.querySelectorAll("table.data")) {
  for (const th of table.tHead.rows[0].cells) {
    th.addEventListener("click", () => sortBy(table, th));
  }
}
for (const control of document.querySelectorAll(".filter-text, .filter-col")) {
  const tableId = control.getAttribute("data-table");
  control.addEventListener("input", () => applyFilters(tableId));
  control.addEventListener("change", () => applyFilters(tableId));
}

const charts = JSON.parse(document.getElementById("chart-data").textContent);
for (const div of document.querySelectorAll("div.chart")) {
  const spec = charts[div.getAttribute("data-chart")];
  Plotly.newPlot(div, spec.data, spec.layout, {
    responsive: true, displaylogo: false, typesetMath: false,
  });
}
