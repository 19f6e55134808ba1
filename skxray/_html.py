"""The look of skxray's HTML pages, defined once.

The report (:class:`skxray.report.Report`) and the audit's own page
(:meth:`skxray.audit.AuditReport.to_html`) are both drawn with these helpers:
the page's stylesheet, the verdict badge and its colours, escaping, and the
conversion of a figure or a table to HTML. A fragment that is shown without
the page's stylesheet (the audit in Jupyter) gets the same look from inline
styles built from the same declarations.

No module takes another's HTML apart: a module that renders part of a page
hands it over as :class:`Fragment` pieces, and the page lays them out.
This module imports nothing from skxray but :mod:`skxray._utils`.
"""

import base64
import html
import string
import struct
from dataclasses import dataclass

import pandas as pd
from matplotlib.figure import Figure

from skxray._utils import format_value, png_base64

__all__ = [
    "BADGE_COLOURS",
    "CSS",
    "Fragment",
    "badge",
    "esc",
    "figure_html",
    "img_html",
    "inline_table",
    "page",
    "table_html",
]

#: Colours of the verdict badges: green, amber, red and grey.
BADGE_COLOURS = {"ok": "#1a7f37", "warning": "#9a6700", "fail": "#cf222e", "info": "#57606a"}

#: A badge's look (its colour aside), inline so that it holds in any page.
_BADGE_STYLE = (
    "color:#fff;padding:1px 7px;border-radius:4px;font-weight:700;font-size:.8rem;"
    "letter-spacing:.02em"
)
#: A table cell's border and padding: in the page's stylesheet, and inline in
#: the tables of a fragment that may be shown without it.
_CELL_STYLE = "border:1px solid #d0d7de;padding:.22rem .5rem"

_CSS_TEMPLATE = string.Template("""
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 0;
       color: #1f2328; background: #fff; line-height: 1.45; }
header, main { max-width: 1120px; margin: 0 auto; padding: 0 1.5rem; box-sizing: border-box; }
header { padding-top: 1.2rem; }
h1 { margin: 0 0 .2rem 0; font-size: 1.6rem; }
h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .2rem; margin: 1.6rem 0 .6rem 0;
     font-size: 1.3rem; }
h3 { margin: .8rem 0 .4rem 0; font-size: 1.05rem; }
.meta { color: #57606a; font-size: .88rem; margin: 0 0 .5rem 0; }
.note { background: #fff8c5; border: 1px solid #d4a72c; border-radius: 6px;
        padding: .45rem .8rem; margin: .5rem 0; }
.skipped { background: #f6f8fa; border-left: 4px solid #8c959f; padding: .4rem .8rem; }
nav { font-size: .9rem; margin: .4rem 0 0 0; padding-bottom: .4rem;
      border-bottom: 1px solid #d0d7de; }
nav a { color: #0969da; text-decoration: none; margin-right: 1rem; }
#summary { border: 1px solid #d0d7de; border-radius: 8px; padding: .3rem 1.1rem .6rem 1.1rem;
           background: #f6f8fa; }
#summary h2 { border: 0; margin-top: .5rem; }
#summary dl { display: grid; grid-template-columns: 9.5rem 1fr; gap: .25rem .8rem; margin: 0; }
#summary dt { font-weight: 600; color: #57606a; }
#summary dd { margin: 0; }
.headline { font-size: 1.12rem; margin: .2rem 0 .6rem 0; }
.caveat { color: #57606a; font-size: .9rem; margin: .6rem 0 0 0; }
table { border-collapse: collapse; margin: .4rem 0 .8rem 0; font-size: .86rem; }
th, td { $cell; text-align: right; }
th { background: #f6f8fa; }
td.text, th.text { text-align: left; }
table.comparison td { white-space: nowrap; }
table.comparison th { vertical-align: bottom; }
td.best { font-weight: 700; background: #dafbe1; }
.legend { color: #57606a; font-size: .85rem; margin: 0 0 .6rem 0; }
figure { margin: .3rem 0 .8rem 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eaeef2; }
figcaption { color: #57606a; font-size: .85rem; }
.row { display: grid; grid-template-columns: repeat(auto-fit, minmax(320px, 1fr));
       gap: .8rem 1.2rem; align-items: start; }
.row figure { margin: 0; }
.row.wide { grid-template-columns: repeat(auto-fit, minmax(480px, 1fr)); }
table.comparison th.text { white-space: nowrap; }
code, pre { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
            font-size: .85rem; }
pre { background: #f6f8fa; padding: .6rem; overflow-x: auto; }
.table-wrap { overflow-x: auto; max-width: 100%; }
details { border: 1px solid #d0d7de; border-radius: 6px; margin: .4rem 0; padding: 0 .8rem; }
details > summary { cursor: pointer; padding: .35rem 0; }
details > summary h2, details > summary h3 { display: inline; border: 0; font-size: 1rem;
                                              margin: 0; }
details[open] > summary { border-bottom: 1px solid #d0d7de; margin-bottom: .5rem; }
#appendix-title { margin: 2rem 0 .3rem 0; font-size: 1.3rem; font-weight: 600;
                  border-bottom: 1px solid #d0d7de; }
main { padding-bottom: 2rem; }
""")

#: The stylesheet of a whole page (the report's ``<style>``).
CSS = _CSS_TEMPLATE.substitute(cell=_CELL_STYLE)


@dataclass(frozen=True)
class Fragment:
    """A titled piece of HTML that a page lays out as it sees fit.

    What :meth:`skxray.audit.AuditReport.html_sections` returns: the page
    that shows it decides where each piece goes (the report folds the
    ``detail`` pieces away) without reading the HTML.

    Attributes
    ----------
    title : str
        What the piece is about, as plain text.
    html : str
        The piece, escaped and self-contained (it may carry its own heading).
    detail : bool, default=False
        True for detail that a page may fold away; False for what stays in view.
    """

    title: str
    html: str
    detail: bool = False


def esc(value):
    """``str(value)`` escaped for HTML text and attribute values."""
    return html.escape(str(value), quote=True)


def page(title, header, main):
    """A complete HTML5 document with the stylesheet; ``header`` and ``main`` are HTML."""
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{esc(title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
        f"<header>\n{header}\n</header>\n"
        f"<main>\n{main}\n</main>\n</body>\n</html>\n"
    )


def badge(verdict, label=None):
    """A coloured verdict badge: green "OK", amber "WARNING", red "FAIL", grey otherwise.

    Its look is inline, so it is the same in the report and in a fragment
    shown alone; ``class="badge badge-<verdict>"`` names it.
    """
    verdict = str(verdict).lower()
    colour = BADGE_COLOURS.get(verdict, BADGE_COLOURS["info"])
    text = label if label is not None else verdict.upper()
    return (
        f'<span class="badge badge-{esc(verdict)}" style="background:{colour};{_BADGE_STYLE}">'
        f"{esc(text)}</span>"
    )


def img_html(png, alt, *, size=None, max_width="100%"):
    """An ``<img>`` of a PNG given as base64 text (a ``data:`` URI, nothing fetched).

    ``size`` is its ``(width, height)`` in pixels, if known; ``max_width`` a
    CSS width it may not exceed (None: no limit).
    """
    dims = f' width="{int(size[0])}" height="{int(size[1])}"' if size else ""
    style = f' style="max-width:{max_width}"' if max_width else ""
    return f'<img src="data:image/png;base64,{png}" alt="{esc(alt)}"{dims}{style}>'


def figure_html(fig, alt, caption=None, *, width=None):
    """``fig`` as an embedded PNG ``<figure>``; the figure is closed afterwards.

    The image keeps its pixel size (100 dpi) up to ``width`` CSS pixels (or
    the width of its container) and scales down with the page.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure; got {type(fig).__name__}.")
    png = png_base64(fig, dpi=100, close=True)
    size = struct.unpack(">II", base64.b64decode(png[:32])[16:24])  # the IHDR chunk
    cap = f"<figcaption>{esc(caption)}</figcaption>" if caption else ""
    limit = f"min(100%, {int(width)}px)" if width else None
    return f"<figure>{img_html(png, alt, size=size, max_width=limit)}{cap}</figure>"


def table_html(df, *, index=True, spec=".4g"):
    """A DataFrame as an escaped HTML table, floats formatted with ``spec``.

    Missing values read "n/a". A named index heads its own column (pandas
    would give it a header row of its own) unless the columns have a name.
    """
    shown = df.copy()
    for column in shown.columns:
        if pd.api.types.is_float_dtype(shown[column]) or shown[column].dtype == object:
            shown[column] = shown[column].map(lambda v: format_value(v, spec))
    if (index and shown.index.name is not None and shown.columns.nlevels == 1
            and shown.columns.name is None):
        shown.columns.name, shown.index.name = shown.index.name, None
    body = shown.to_html(escape=True, index=index, border=0, na_rep="n/a", classes="data")
    return f'<div class="table-wrap">{body}</div>'


def inline_table(rows, *, head=None):
    """A small table styled inline, for a fragment shown without the page's stylesheet.

    ``rows`` (and ``head``) are lists of cells that are already HTML: escape
    text with :func:`esc`.
    """
    cell = f'style="{_CELL_STYLE};vertical-align:top;text-align:left"'
    thead = "".join(f"<th {cell}>{h}</th>" for h in head or ())
    thead = f"<thead><tr>{thead}</tr></thead>" if thead else ""
    tbody = "".join("<tr>" + "".join(f"<td {cell}>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table style="border-collapse:collapse">{thead}<tbody>{tbody}</tbody></table>'
