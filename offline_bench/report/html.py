"""A self-contained HTML page: the leaderboard (sortable by clicking a column header), its notes, and the learning
curves embedded as base64 PNG. No external CSS, scripts or fonts, so the file opens offline and can be mailed.
"""
from __future__ import annotations

import base64
import html

from offline_bench.report.table import Leaderboard

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table.leaderboard { border-collapse: collapse; margin: 1em 0; }
table.leaderboard th, table.leaderboard td { border-bottom: 1px solid #ccc; padding: 0.3em 0.8em; text-align: left; }
table.leaderboard thead th { cursor: pointer; user-select: none; border-bottom: 2px solid #444; }
table.leaderboard thead th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.leaderboard thead th[aria-sort="descending"]::after { content: " \\25BC"; }
ul.notes { color: #444; font-size: 0.9em; max-width: 60em; }
figure { display: inline-block; margin: 0.5em; }
"""

# Click a header: sort the body rows by that column (numbers by their leading value, cells without one last).
# A link can ask for a sorted table: leaderboard.html#sort=omar:desc (a column header's text, asc or desc).
_SCRIPT = """
document.querySelectorAll("table.leaderboard").forEach(function (table) {
  var headers = Array.prototype.slice.call(table.querySelectorAll("thead th"));
  function key(row, col) {  // "12.3 ± 4.5", "12.3 (2/5 seeds)" -> 12.3; "0/5 seeds", "not run" -> no number
    var text = row.cells[col].textContent.trim();
    var m = /^-?\\d+(\\.\\d+)?(?= ±| \\(|$)/.exec(text);
    return {n: m ? parseFloat(m[0]) : null, t: text};
  }
  function sortBy(col, asc) {
    headers.forEach(function (h) { h.removeAttribute("aria-sort"); });
    headers[col].setAttribute("aria-sort", asc ? "ascending" : "descending");
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a, col), y = key(b, col);
      if (x.n === null || y.n === null) {
        if (x.n !== null) return -1;
        if (y.n !== null) return 1;
        return asc ? x.t.localeCompare(y.t) : y.t.localeCompare(x.t);
      }
      return asc ? x.n - y.n : y.n - x.n;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }
  headers.forEach(function (th, col) {
    th.addEventListener("click", function () { sortBy(col, th.getAttribute("aria-sort") !== "ascending"); });
  });
  var wanted = /^#sort=([^:]+)(?::(asc|desc))?$/.exec(decodeURIComponent(window.location.hash));
  if (wanted) {
    var col = headers.map(function (h) { return h.textContent.trim(); }).indexOf(wanted[1]);
    if (col >= 0) sortBy(col, wanted[2] !== "desc");
  }
});
"""


def to_html(board: Leaderboard, curves: dict[str, bytes] | None = None) -> str:
    """The whole page as one string (pandas Styler renders the table; bold via CSS on the best cells)."""
    text = board.cell_text("plain").reset_index()
    bold = board.best_mask().reset_index(drop=True)
    bold.insert(0, "task", False)
    bold.insert(0, "quality", False)
    css = bold.replace({True: "font-weight: bold", False: ""}).infer_objects(copy=False)
    css.columns = text.columns
    styler = text.style.apply(lambda _: css, axis=None).hide(axis="index")
    # one id per element: the Styler's own (T_leaderboard); the sorting script finds the table by its class
    table = styler.set_uuid("leaderboard").set_table_attributes('class="leaderboard"').to_html(doctype_html=False)
    notes = "\n".join(f"<li>{html.escape(note)}</li>" for note in board.notes)
    figures = ""
    for dataset_id, png in (curves or {}).items():
        data = base64.b64encode(png).decode("ascii")
        figures += (f'<figure><img alt="learning curves {html.escape(dataset_id)}" '
                    f'src="data:image/png;base64,{data}"><figcaption>{html.escape(dataset_id)}</figcaption></figure>\n')
    title = html.escape(board.title)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
<style>{_STYLE}</style>
</head>
<body>
<h1>{title}</h1>
<p>Click a column header to sort (or open the page as <code>…html#sort=COLUMN:desc</code>).</p>
{table}
<ul class="notes">
{notes}
</ul>
{"<h2>Learning curves</h2>" + chr(10) + figures if figures else ""}
<script>{_SCRIPT}</script>
</body>
</html>
"""


__all__ = ["to_html"]
