"""The parts of the HTML report that know nothing of sweeps: the page's style and script, HTML tables,
Markdown and CSV rendered as HTML, and SVG made safe to inline. Everything is written into the page itself:
no remote script, style, font or image, so the file opens from disk without a server.

Each piece is written on one line (a table, a figure, a block of Markdown but for a code block's own lines; the
style and the script too), so that a page is a line per section and two pages never repeat each other line by
line:

    >>> html = markdown_html("# Claims\\n\\n| claim | verdict |\\n|---|---:|\\n| `copy` at 64 | **holds** |")
    >>> html[:html.index("<tbody>")]
    '<h3>Claims</h3><div class="scroll"><table class="sortable"><thead><tr><th>claim</th><th class="num">verdict...'
    >>> html[html.index("<tbody>"):]
    '<tbody><tr><td><code>copy</code> at 64</td><td class="num"><strong>holds</strong></td></tr></tbody></table></div>'

The script does two things: a click on the header of a `table.sortable` sorts its rows by that column
(numbers as numbers, a cell's `data-sort` value where it has one, empty cells last; a second click reverses),
and a link to `#curves-N` opens a panel drawing the training curves of group N from the page's
`<script type="application/json" id="curve-data">` (see html_report.curve_data).
"""

from __future__ import annotations

import html
import io
import re

import pandas as pd

FOLD_ROWS = 30  # a Markdown table with more rows is folded (a click shows it)
MAX_CSV_ROWS = 300  # a CSV shown generically: its first rows, and a note saying how many there are

# The style and the script are kept readable here and written into the page on one line each (one_line). The
# script is written so that joining its lines changes nothing: every line ends a statement with ";" or ends in
# "{", "}", ",", "(" or "=>", no string spans two lines, and there is no comment (test_report.py holds it to that).
CSS = """
:root { --ink: #1f2328; --muted: #59636e; --line: #d1d9e0; --soft: #f6f8fa; --accent: #1f6feb;
        --bad: #cf222e; --warn: #9a6700; }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.5 system-ui, -apple-system, "Segoe UI", "DejaVu Sans", sans-serif; color: var(--ink); }
header { background: #0d1117; color: #f0f6fc; padding: 18px 32px 14px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #9198a1; }
nav { position: sticky; top: 0; z-index: 2; background: #fff; border-bottom: 1px solid var(--line); padding: 6px 32px;
      white-space: nowrap; overflow-x: auto; }
nav a { margin-right: 16px; color: var(--accent); text-decoration: none; font-size: 13px; }
main { padding: 8px 32px 48px; max-width: 1500px; }
section { margin-top: 28px; }
h2 { font-size: 19px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 16px; margin-top: 22px; }
h4, h5, h6 { font-size: 14px; }
p.note, .note { color: var(--muted); max-width: 1100px; }
dl.meta { display: grid; grid-template-columns: max-content 1fr; gap: 3px 18px; margin: 8px 0; }
dl.meta dt { color: var(--muted); }
dl.meta dd { margin: 0; }
code, pre { font-family: ui-monospace, "DejaVu Sans Mono", monospace; font-size: 12.5px; }
pre { background: var(--soft); border: 1px solid var(--line); border-radius: 6px; padding: 8px 12px; overflow-x: auto; }
.scroll { overflow-x: auto; max-width: 100%; }
table { border-collapse: collapse; margin: 8px 0; font-size: 13px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; vertical-align: top; white-space: nowrap; }
th { background: var(--soft); text-align: left; font-weight: 600; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #b0b8c1; font-weight: normal; }
table.sortable th[aria-sort=ascending]::after { content: " \\2191"; color: var(--ink); }
table.sortable th[aria-sort=descending]::after { content: " \\2193"; color: var(--ink); }
td a { color: inherit; text-decoration: none; border-bottom: 1px dotted var(--muted); }
td a:hover { color: var(--accent); }
.ci { color: var(--muted); font-size: 11.5px; }
.hz { display: block; color: var(--muted); font-size: 11px; }
.mark { font-weight: 700; margin-left: 2px; }
.mark.failed, .mark.missing { color: var(--bad); }
.mark.timeout, .mark.under { color: var(--warn); }
td.failed, td.missing { box-shadow: inset 0 -3px 0 var(--bad); }
td.under, td.timeout { box-shadow: inset 0 -3px 0 #d4a72c; }
figure { margin: 10px 0; }
figure svg, figure img { max-width: 100%; height: auto; }
details > summary { cursor: pointer; color: var(--accent); margin: 6px 0; }
.legend span { margin-right: 14px; white-space: nowrap; }
#curve-panel { position: fixed; right: 24px; bottom: 24px; z-index: 3; width: 640px; max-width: calc(100% - 48px);
               background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px;
               box-shadow: 0 8px 24px rgba(31, 35, 40, 0.2); }
#curve-panel h4 { margin: 0 24px 4px 0; }
#curve-panel .close { position: absolute; right: 12px; top: 6px; font-size: 18px; color: var(--muted);
                      text-decoration: none; }
#curve-panel svg text { font-size: 11px; fill: var(--muted); }
"""

SCRIPT = r"""
"use strict";
function sortKey(cell) {
  const raw = (cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent).trim();
  const number = Number(raw.replace(/,/g, ""));
  return raw === "" ? null : (Number.isFinite(number) ? number : raw.toLowerCase());
}
function sortBy(table, th) {
  const column = Array.from(th.parentNode.children).indexOf(th);
  const body = table.tBodies[0];
  const descending = th.getAttribute("aria-sort") === "ascending";
  const rows = Array.from(body.rows).map(row => [sortKey(row.cells[column]), row]);
  const numeric = rows.every(([key]) => key === null || typeof key === "number");
  rows.sort(([a], [b]) => {
    if (a === null || b === null) return (a === null) - (b === null);
    const order = numeric ? a - b : String(a).localeCompare(String(b));
    return descending ? -order : order;
  });
  for (const other of th.parentNode.children) other.removeAttribute("aria-sort");
  th.setAttribute("aria-sort", descending ? "descending" : "ascending");
  for (const [, row] of rows) body.appendChild(row);
}
document.querySelectorAll("table.sortable thead th").forEach(th =>
  th.addEventListener("click", () => sortBy(th.closest("table"), th)));

const SVG = "http://www.w3.org/2000/svg";
const COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"];
const dataNode = document.getElementById("curve-data");
const curves = dataNode ? JSON.parse(dataNode.textContent) : null;
function element(name, attributes, text) {
  const node = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}
function shortCount(value) {
  for (const [size, suffix] of [[1e9, "B"], [1e6, "M"], [1e3, "k"]]) {
    if (Math.abs(value) >= size) return +(value / size).toPrecision(3) + suffix;
  }
  return String(+value.toPrecision(3));
}
function drawCurves(index) {
  const panel = document.getElementById("curve-panel");
  const group = curves && curves.groups[index];
  if (!group) { panel.hidden = true; return; }
  panel.querySelector("h4").textContent = group.title;
  const [width, height, left, bottom] = [600, 260, 40, 28];
  const svg = element("svg", {viewBox: `0 0 ${width} ${height}`, width: "100%", role: "img"});
  const trials = group.trials.map(id => curves.trials[id]).filter(Boolean);
  const most = Math.max(1, ...trials.map(t => t.x.length ? Math.max(...t.x) : 0));
  const x = v => left + (width - left - 10) * v / most;
  const y = v => 8 + (height - bottom - 8) * (1 - v);
  for (const tick of [0, 0.25, 0.5, 0.75, 1]) {
    svg.appendChild(element("line", {x1: left, x2: width - 10, y1: y(tick), y2: y(tick), stroke: "#e6e9ed"}));
    svg.appendChild(element("text", {x: left - 6, y: y(tick) + 4, "text-anchor": "end"}, tick.toFixed(2)));
  }
  [0, most].forEach((tick, i) => svg.appendChild(element("text",
    {x: x(tick), y: height - 8, "text-anchor": i ? "end" : "start"}, shortCount(tick))));
  svg.appendChild(element("text", {x: (left + width) / 2, y: height - 8, "text-anchor": "middle"},
                          "training tokens"));
  svg.appendChild(element("line", {x1: left, x2: width - 10, y1: y(curves.threshold), y2: y(curves.threshold),
                                   stroke: "#888", "stroke-dasharray": "4 3"}));
  const legend = panel.querySelector(".legend");
  legend.textContent = "";
  trials.forEach((trial, i) => {
    const colour = COLOURS[i % COLOURS.length];
    const points = trial.x.map((v, j) => `${x(v).toFixed(1)},${y(trial.y[j]).toFixed(1)}`).join(" ");
    svg.appendChild(element("polyline", {points, fill: "none", stroke: colour, "stroke-width": 1.8}));
    trial.x.forEach((v, j) => svg.appendChild(element("circle", {cx: x(v), cy: y(trial.y[j]), r: 3,
                                                                  fill: colour})));
    const key = document.createElement("span");
    key.innerHTML = `<b style="color:${colour}">&#9644;</b> `;
    key.appendChild(document.createTextNode(trial.label));
    legend.appendChild(key);
  });
  if (!trials.length) legend.textContent = "no evaluations recorded for these trials (curves.csv)";
  panel.querySelector(".plot").replaceChildren(svg);
  panel.hidden = false;
}
function showFromHash() {
  const match = /^#curves-(\d+)$/.exec(location.hash);
  const panel = document.getElementById("curve-panel");
  if (match) drawCurves(Number(match[1])); else if (panel) panel.hidden = true;
}
window.addEventListener("hashchange", showFromHash);
document.addEventListener("keydown", event => { if (event.key === "Escape") location.hash = ""; });
showFromHash();
"""

CURVE_PANEL = ('<div id="curve-panel" hidden><a class="close" href="#" title="close (Esc)">&times;</a><h4></h4>'
               '<div class="plot"></div><div class="legend note"></div><div class="note">evaluation accuracy '
               'against training tokens (curves.csv); dashed: the horizon threshold</div></div>')


def page(title: str, subtitle: str, nav: list[tuple[str, str]], body: str) -> str:
    """The whole document: `body` (HTML, a line per section) under a header and a bar of links to its sections
    (anchor, label). The head with its style is one line, the header and links another, the panel and the
    script the last.

    >>> html = page("T", "S", [("run", "The run")], '<section id="run">...</section>')
    >>> print(html.replace(CSS_LINE, "CSS").replace(SCRIPT_LINE, "SCRIPT"), end="")
    <!DOCTYPE html>
    <html lang="en"><head><meta charset="utf-8"><meta name="viewport" ...><title>T</title><style>CSS</style></head>
    <body><header><h1>T</h1><p>S</p></header><nav><a href="#run">The run</a></nav><main>
    <section id="run">...</section>
    </main><div id="curve-panel" hidden>...</div><script>SCRIPT</script></body></html>
    """
    links = "".join(f'<a href="#{anchor}">{esc(label)}</a>' for anchor, label in nav)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><title>{esc(title)}</title>'
            f'<style>{CSS_LINE}</style></head>\n'
            f'<body><header><h1>{esc(title)}</h1><p>{esc(subtitle)}</p></header><nav>{links}</nav><main>\n'
            f'{body}\n</main>{CURVE_PANEL}<script>{SCRIPT_LINE}</script></body></html>\n')


def one_line(text: str) -> str:
    """`text` on one line: each line stripped of its indentation and trailing space, blank lines dropped, the
    rest joined by one space (what a line break is to CSS, to SVG outside its text, and to a script written as
    the one above).

    >>> one_line("a {\\n  color: red;\\n}\\n\\nb { }\\n")
    'a { color: red; } b { }'
    """
    return " ".join(line.strip() for line in text.splitlines() if line.strip())


CSS_LINE, SCRIPT_LINE = one_line(CSS), one_line(SCRIPT)


def esc(text: object) -> str:
    """Text made safe for HTML (quotes too, so it can go into an attribute)."""
    return html.escape(str(text), quote=True)


def html_table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset(),
               sortable: bool = True) -> str:
    """A table of ready-made cell HTML; the columns whose indices are in `numeric` are right-aligned. A cell
    given as (html, attributes) gets those attributes (`data-sort`, `class`, `title`)."""
    def cell(tag: str, i: int, value) -> str:
        content, attributes = value if isinstance(value, tuple) else (value, {})
        attributes = dict(attributes)
        if i in numeric:
            attributes["class"] = ("num " + attributes.get("class", "")).strip()
        extra = "".join(f' {key}="{esc(v)}"' for key, v in sorted(attributes.items()))
        return f"<{tag}{extra}>{content}</{tag}>"

    head = "".join(cell("th", i, h) for i, h in enumerate(header))
    body = "".join("<tr>" + "".join(cell("td", i, c) for i, c in enumerate(row)) + "</tr>" for row in rows)
    kind = ' class="sortable"' if sortable else ""
    return f"<table{kind}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# --- Markdown and CSV, rendered generically -------------------------------------------------------------
_INLINE = [
    (re.compile(r"\*\*(.+?)\*\*"), r"<strong>\1</strong>"),
    (re.compile(r"\[([^\]]+)\]\(([^)\s]+)\)"), r'<a href="\2">\1</a>'),
]


def inline_html(text: str) -> str:
    """One line of Markdown: `code`, **bold** and [links](target); everything else escaped."""
    parts = text.split("`")
    out = []
    for i, part in enumerate(parts):
        if i % 2 and i < len(parts) - 1:
            out.append(f"<code>{esc(part)}</code>")
            continue
        part = esc(part if i % 2 == 0 else "`" + part)
        for pattern, replacement in _INLINE:
            part = pattern.sub(replacement, part)
        out.append(part)
    return "".join(out)


def _table_html(lines: list[str]) -> str:
    def cells(line: str) -> list[str]:
        return [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]

    header = cells(lines[0])
    aligns = cells(lines[1]) if len(lines) > 1 and set(lines[1]) <= set("|-: ") else []
    rows = [cells(line) for line in lines[2 if aligns else 1:]]
    numeric = {i for i, a in enumerate(aligns) if a.endswith(":")}
    return html_table([inline_html(h) for h in header], [[inline_html(c) for c in row] for row in rows], numeric)


def markdown_html(text: str, shift: int = 2) -> str:
    """The Markdown of the reports and READMEs as HTML: headings (deepened by `shift` levels), paragraphs,
    lists, code blocks (fenced or indented) and tables (sortable). Raw HTML is shown as text."""
    out: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        if not line.strip():
            i += 1
        elif line.startswith("```"):
            end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), len(lines))
            out.append(f"<pre>{esc(chr(10).join(lines[i + 1:end]))}</pre>")
            i = end + 1
        elif line.startswith("    "):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            code = "\n".join(x[4:] for x in lines[i:end]).strip("\n")
            out.append(f"<pre>{esc(code)}</pre>")
            i = end
        elif heading := re.match(r"(#{1,6})\s+(.*)", line):
            level = min(6, len(heading.group(1)) + shift)
            out.append(f"<h{level}>{inline_html(heading.group(2))}</h{level}>")
            i += 1
        elif line.lstrip().startswith("|"):
            end = i
            while end < len(lines) and lines[end].lstrip().startswith("|"):
                end += 1
            table = f'<div class="scroll">{_table_html(lines[i:end])}</div>'
            rows = end - i - 2
            out.append(table if rows <= FOLD_ROWS else f"<details><summary>{rows} rows</summary>{table}</details>")
            i = end
        elif re.match(r"\s*([-*]|\d+\.)\s", line):
            items, i = _list_items(lines, i)
            tag = "ol" if re.match(r"\s*\d+\.", line) else "ul"
            out.append(f"<{tag}>" + "".join(f"<li>{inline_html(item)}</li>" for item in items) + f"</{tag}>")
        else:
            end = i
            while end < len(lines) and lines[end].strip() and not re.match(r"(#|\||```|\s*([-*]|\d+\.)\s)",
                                                                            lines[end]):
                end += 1
            out.append(f"<p>{inline_html(' '.join(x.strip() for x in lines[i:end]))}</p>")
            i = end
    return "".join(out)


def _list_items(lines: list[str], i: int) -> tuple[list[str], int]:
    """The items of the list starting at line i (continuation lines joined to their item), and the next line."""
    items: list[str] = []
    while i < len(lines) and lines[i].strip():
        marker = re.match(r"\s*([-*]|\d+\.)\s+(.*)", lines[i])
        if marker:
            items.append(marker.group(2).strip())
        else:
            items[-1] += " " + lines[i].strip()
        i += 1
    return items, i


def csv_html(text: str, name: str) -> str:
    """A CSV file as a sortable table: its first MAX_CSV_ROWS rows, numbers right-aligned."""
    table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    shown = table.head(MAX_CSV_ROWS)
    numeric = {i for i, column in enumerate(shown.columns)
               if len(shown) and pd.to_numeric(shown[column].replace("", None), errors="coerce").notna().sum()
               == (shown[column] != "").sum()}
    rows = [[esc(v) for v in row] for row in shown.itertuples(index=False)]
    note = (f'<p class="note">The first {MAX_CSV_ROWS} of {len(table)} rows; all of them are in {esc(name)}.</p>'
            if len(table) > MAX_CSV_ROWS else "")
    return f'<div class="scroll">{html_table([esc(c) for c in table.columns], rows, numeric)}</div>{note}'


# --- SVG ------------------------------------------------------------------------------------------------
_ID = re.compile(r'(\bid="|url\(#|href="#)')


def inline_svg(svg: str, prefix: str) -> str:
    """An SVG document made into an element of the page, on one line: the XML prologue dropped, its ids
    prefixed with `prefix` so that two figures' ids cannot meet.

    >>> inline_svg('<?xml version="1.0"?>\\n<svg>\\n <path id="p1" d="M 0 0 \\nL 1 1 \\nz\\n"/>\\n'
    ...            ' <use href="#p1"/>\\n</svg>', "f2-")
    '<svg> <path id="f2-p1" d="M 0 0 L 1 1 z "/> <use href="#f2-p1"/> </svg>'
    """
    svg = svg[svg.index("<svg"):]
    return one_line(_ID.sub(lambda m: m.group(1) + prefix, svg))


def shade(accuracy: float) -> str:
    """A cell's background for an accuracy in [0, 1]: the deeper the blue, the higher (text stays readable).

    >>> shade(1.0)
    'background: rgba(31, 111, 235, 0.45)'
    """
    return f"background: rgba(31, 111, 235, {0.05 + 0.4 * accuracy:.2f})"
