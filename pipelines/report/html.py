"""Report stage: the page layout, CSS and paginated tables of the static site (Jinja2, autoescaped).

Shared by `gunshot report` and `gunshot search`, so their pages look alike. A site is a flat folder of
HTML pages plus a `media/` folder of PNG and WAV files beside them; pages link to each other and to
their media by relative paths and carry their CSS inline, so the site opens from `file://` with no
server and no network (no CDN, no script, no external font). Long tables are split into pages of
`PER_PAGE` rows (`events.html`, `events-2.html`, ...) and `write_page` refuses any page over
`MAX_PAGE_BYTES`, so no page grows with the size of a run.

    site = Site("out/report", title="gunshot report")
    rows = [{"rank": 1, "source": Link("rec.wav", "event-0001.html"), "score": 0.93}]
    names = site.write_table_pages("events", "Top events", COLUMNS, rows, intro=Markup("<p>...</p>"))
    site.write("index.html", "Summary", [section("Runs", kv_table(pairs)), figure("media/h.png", "...")])
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Sequence

import jinja2
from markupsafe import Markup, escape

#: No page may be larger than this (the issue's limit); tables are paginated far below it.
MAX_PAGE_BYTES = 5 * 1024 * 1024
#: Rows per table page.
PER_PAGE = 100
#: Folder (relative to the site) for images and audio.
MEDIA_DIR = "media"

CSS = """
:root { --fg:#1d2327; --muted:#5f6b73; --line:#d8dee4; --bg:#fff; --band:#f5f7f9; --accent:#b71c1c; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;
       color:var(--fg); background:var(--bg); }
header { background:#263238; color:#fff; padding:10px 20px; display:flex; gap:24px; align-items:baseline;
         flex-wrap:wrap; }
header h1 { font-size:17px; margin:0; font-weight:600; }
header nav a { color:#cfd8dc; margin-right:14px; text-decoration:none; }
header nav a:hover { color:#fff; text-decoration:underline; }
main { padding:14px 20px 40px; max-width:1200px; }
h2 { font-size:15px; margin:26px 0 8px; border-bottom:1px solid var(--line); padding-bottom:4px; }
h3 { font-size:14px; margin:16px 0 6px; }
p.note, .muted { color:var(--muted); }
table { border-collapse:collapse; margin:6px 0 10px; font-size:13px; }
th, td { border-bottom:1px solid var(--line); padding:4px 10px 4px 0; text-align:left; vertical-align:top; }
th { font-weight:600; white-space:nowrap; }
tbody tr:nth-child(even) { background:var(--band); }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; padding-left:10px; }
td.mono, code, pre { font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; font-size:12px; }
td.wrap { word-break:break-all; max-width:520px; }
pre { background:var(--band); padding:8px; overflow-x:auto; white-space:pre; }
figure { margin:8px 0 14px; }
figure img { display:block; max-width:100%; height:auto; border:1px solid var(--line); }
figcaption { color:var(--muted); font-size:12px; }
.grid { display:grid; grid-template-columns:repeat(auto-fit,minmax(480px,1fr)); gap:10px 18px; }
.pager { margin:8px 0; }
.pager a, .pager span { margin-right:8px; }
.pager span.current { font-weight:700; }
.problem { border-left:4px solid var(--accent); background:#fdecea; padding:8px 12px; margin:10px 0; }
a { color:#0b57d0; }
audio { width:min(100%,640px); margin:6px 0; }
"""

_LAYOUT = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{ title }} - {{ site_title }}</title>
<style>{{ css }}</style>
</head>
<body>
<header><h1>{{ site_title }}</h1><nav>{% for text, href in nav %}<a href="{{ href }}">{{ text }}</a>{% endfor %}</nav></header>
<main>
<h2 style="border:0;margin-top:4px;font-size:18px">{{ title }}</h2>
{% for part in parts %}{{ part }}
{% endfor %}
</main>
</body>
</html>
"""

_TABLE = """<table{% if id %} id="{{ id }}"{% endif %}>
<thead><tr>{% for c in columns %}<th{% if c.css %} class="{{ c.css }}"{% endif %}>{{ c.label }}</th>{% endfor %}</tr></thead>
<tbody>
{% for row in rows %}<tr>{% for c in columns %}{% set v = row.get(c.key) %}<td{% if c.css %} class="{{ c.css }}"{% endif %}>{{ cell(v, c) }}</td>{% endfor %}</tr>
{% endfor %}</tbody>
</table>
"""

_PAGER = """<div class="pager">page {% for i in range(1, count + 1) %}{% if i == current %}<span class="current">{{ i }}</span>{% else %}<a href="{{ name(i) }}">{{ i }}</a>{% endif %}{% endfor %}
 <span class="muted">({{ total }} rows)</span></div>
"""


@dataclasses.dataclass(frozen=True)
class Column:
    """A table column: the row key it shows, its heading, a CSS class (num, mono, wrap) and, for
    floats, a format such as '.3f'."""

    key: str
    label: str
    css: str = ""
    fmt: str = ""


@dataclasses.dataclass(frozen=True)
class Link:
    """A table cell (or any text) that links to `href` (relative to the page)."""

    text: str
    href: str


def format_value(value, fmt: str = "") -> str:
    """Text of a table cell: '' for None/NaN, `fmt` for numbers, thousands separators for ints."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if fmt and isinstance(value, int | float):
        return format(value, fmt)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _cell(value, column: Column) -> Markup:
    if isinstance(value, Markup):
        return value
    if isinstance(value, Link):
        return Markup('<a href="{}">{}</a>').format(value.href, value.text)
    return escape(format_value(value, column.fmt))


_ENV = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined, keep_trailing_newline=True)
_ENV.globals["cell"] = _cell
_LAYOUT_T = _ENV.from_string(_LAYOUT)
_TABLE_T = _ENV.from_string(_TABLE)
_PAGER_T = _ENV.from_string(_PAGER)


def table(columns: Sequence[Column], rows: Sequence[dict], *, id: str | None = None) -> Markup:  # noqa: A002
    """An HTML table; `rows` are dicts keyed by Column.key (values: text, numbers, Link or Markup)."""
    return Markup(_TABLE_T.render(columns=columns, rows=rows, id=id))


def kv_table(pairs: Sequence[tuple[str, object]], *, id: str | None = None) -> Markup:
    """A two-column table of (name, value) pairs."""
    columns = [Column("k", ""), Column("v", "", "wrap")]
    return table(columns, [{"k": k, "v": v} for k, v in pairs], id=id)


def section(heading: str, *parts: Markup | str, id: str | None = None) -> Markup:  # noqa: A002
    """<h2> plus content; plain strings become escaped paragraphs."""
    body = Markup("").join(p if isinstance(p, Markup) else Markup("<p>{}</p>").format(p) for p in parts)
    anchor = Markup(' id="{}"').format(id) if id else Markup("")
    return Markup("<section{}><h2>{}</h2>{}</section>").format(anchor, heading, body)


def figure(src: str, alt: str, caption: str = "") -> Markup:
    """An <img> (relative `src`) with an optional caption."""
    cap = Markup("<figcaption>{}</figcaption>").format(caption) if caption else Markup("")
    return Markup('<figure><img src="{}" alt="{}" loading="eager">{}</figure>').format(src, alt, cap)


def audio(src: str) -> Markup:
    """An <audio controls> player for a relative WAV path (metadata preloaded, so its duration shows)."""
    return Markup('<audio controls preload="metadata" src="{}"></audio>').format(src)


def problem(text: str) -> Markup:
    """A highlighted box saying what could not be shown and why."""
    return Markup('<div class="problem">{}</div>').format(text)


def pre(text: str) -> Markup:
    return Markup("<pre>{}</pre>").format(text)


def page_name(stem: str, number: int) -> str:
    """File name of page `number` (1-based) of a paginated table: stem.html, stem-2.html, ..."""
    return f"{stem}.html" if number == 1 else f"{stem}-{number}.html"


def pager(stem: str, current: int, count: int, total: int) -> Markup:
    """Links to every page of a paginated table (empty when it fits on one page)."""
    if count <= 1:
        return Markup("")
    return Markup(
        _PAGER_T.render(count=count, current=current, total=total, name=lambda i: page_name(stem, i))
    )


class PageTooLarge(ValueError):
    """A page would exceed MAX_PAGE_BYTES (a bug: every long table must be paginated)."""


class Site:
    """A folder of pages sharing a title and a navigation bar.

    Args:
      directory: local folder of the site (created with its media/ folder).
      title: shown in every page's header.
      nav: [(text, href)] links in every page's header.
    """

    def __init__(self, directory: str | os.PathLike, title: str, nav: Sequence[tuple[str, str]] = ()):
        self.directory = os.fspath(directory)
        self.title = title
        self.nav = list(nav)
        os.makedirs(os.path.join(self.directory, MEDIA_DIR), exist_ok=True)

    def path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def render(self, title: str, parts: Sequence[Markup | str]) -> str:
        return _LAYOUT_T.render(
            site_title=self.title, title=title, css=Markup(CSS), nav=self.nav, parts=parts
        )

    def write(self, name: str, title: str, parts: Sequence[Markup | str]) -> str:
        """Renders and writes one page (atomically); returns its file name.

        Raises:
          PageTooLarge: the page would be over MAX_PAGE_BYTES.
        """
        data = self.render(title, parts).encode("utf-8")
        if len(data) > MAX_PAGE_BYTES:
            raise PageTooLarge(f"{name}: {len(data)} bytes is over the {MAX_PAGE_BYTES}-byte page limit")
        path = self.path(name)
        with open(path + ".part", "wb") as f:
            f.write(data)
        os.replace(path + ".part", path)
        return name

    def write_table_pages(
        self,
        stem: str,
        title: str,
        columns: Sequence[Column],
        rows: Sequence[dict],
        *,
        intro: Sequence[Markup | str] = (),
        per_page: int = PER_PAGE,
        table_id: str | None = None,
        empty: str = "none",
    ) -> list[str]:
        """Writes a table split into pages of `per_page` rows, each with links to all pages.

        Returns:
          the page file names, first page first (`stem.html`).
        """
        count = max(1, math.ceil(len(rows) / per_page))
        names = []
        for number in range(1, count + 1):
            chunk = rows[(number - 1) * per_page : number * per_page]
            nav = pager(stem, number, count, len(rows))
            body = (
                table(columns, chunk, id=table_id)
                if chunk
                else Markup("<p class='note'>{}</p>").format(empty)
            )
            names.append(self.write(page_name(stem, number), title, [*intro, nav, body, nav]))
        return names
