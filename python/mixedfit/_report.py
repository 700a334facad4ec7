"""The HTML report written by ``mixedfit demo``: one self-contained page tying the pictures together."""

from __future__ import annotations

import html
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

__all__ = ["Section", "write_report"]


@dataclass
class Section:
    slug: str                     # anchor and file-name stem
    title: str
    text: list[str]               # paragraphs (plain text)
    code: str                     # the Python that makes the data and the fit
    summary: str                  # the lme4-layout summary
    stats: pd.Series | None = None
    images: list[tuple[str, str]] = field(default_factory=list)   # (file name, caption)
    files: list[tuple[str, str]] = field(default_factory=list)    # (CSV file name, what it holds)


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif;
       max-width: 980px; margin: 2em auto; padding: 0 1em; color: #222; line-height: 1.45; }
h1 { font-size: 1.7em; margin-bottom: 0.2em; }
h2 { font-size: 1.3em; margin-top: 2.2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 0.85em; line-height: 1.25; }
code { background: #f6f8fa; padding: 0 0.2em; }
table { border-collapse: collapse; font-size: 0.88em; margin: 0.8em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.6em; text-align: right; }
th { background: #f0f3f6; }
td:first-child, th:first-child { text-align: left; }
figure { display: inline-block; margin: 0.6em 0.8em 0.6em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { font-size: 0.85em; color: #555; max-width: 620px; }
nav ul { columns: 2; }
.lead { color: #444; }
details { margin: 0.6em 0; }
"""


# Row labels of shrinkage.describe() and column labels of the demo's comparison table, as a
# reader would write them.
_LABELS = {
    "clusters": "clusters",
    "median_n": "median cluster size",
    "no_estimate": "clusters without their own fit",
    "median_shrinkage": "median shrinkage (all parameters, in SD units)",
    "obs": "observations",
    "median n": "median cluster size",
    "SD int": "SD intercept",
    "SD slope": "SD slope",
    "shrinkage int": "median shrinkage: intercept",
    "shrinkage slope": "median shrinkage: slope",
    "spread lost int": "spread lost: intercept",
    "spread lost slope": "spread lost: slope",
    "no own fit": "clusters without their own fit",
}
_COUNTS = {"clusters", "median_n", "no_estimate", "obs", "median n", "no own fit"}


def readable_label(key: str) -> str:
    """``median_shrinkage_(Intercept)`` -> ``median shrinkage: intercept`` and the like."""
    key = str(key)
    if key in _LABELS:
        return _LABELS[key]
    for prefix, words in (("median_shrinkage_", "median shrinkage"),
                          ("spread_reduction_", "spread lost")):
        if key.startswith(prefix):
            param = key[len(prefix):]
            return f"{words}: {'intercept' if param == '(Intercept)' else 'slope of ' + param}"
    return key.replace("_", " ")


def _cell(v, integer: bool, digits: int) -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "\u2013"
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return f"{v:,.0f}" if integer else f"{v:.{digits}f}"
    return str(v)


def _is_count(name, values) -> bool:
    """A column of counts: known by name, or integers by type."""
    if str(name) in _COUNTS:
        return True
    return all(isinstance(v, (int,)) and not isinstance(v, bool) for v in values)


def _table_html(df: pd.DataFrame, digits: int = 3, count_rows=()) -> str:
    """An HTML table with readable headers; counts without decimals, other numbers with
    ``digits`` decimals, missing values as a dash. ``count_rows`` names rows holding counts."""
    heads = [df.index.name or ""] + [readable_label(c) for c in df.columns]
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in heads)
    counts = {c: _is_count(c, df[c].tolist()) for c in df.columns}
    rows = []
    for idx, r in df.iterrows():
        integer_row = idx in count_rows
        cells = [f"<td>{html.escape(readable_label(idx))}</td>"]
        for c, v in zip(df.columns, r):
            if hasattr(v, "item"):
                v = v.item()
            cells.append(f"<td>{html.escape(_cell(v, counts[c] or integer_row, digits))}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def _files_html(files) -> str:
    links = ", ".join(f'<a href="{html.escape(name)}">{html.escape(name)}</a> ({html.escape(what)})'
                      for name, what in files)
    return f"<p>Data: {links}.</p>"


def write_report(out_dir, title: str, intro: list[str], comparison: pd.DataFrame,
                 comparison_note: str, sections: list[Section], closing: list[str],
                 comparison_files=()) -> Path:
    """Write ``index.html`` into ``out_dir`` (image paths are relative to it); return its path."""
    out_dir = Path(out_dir)
    esc = html.escape
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{esc(title)}</h1>",
    ]
    parts += [f'<p class="lead">{esc(p)}</p>' for p in intro]
    parts.append("<nav><ul>")
    parts += [f'<li><a href="#{esc(s.slug)}">{esc(s.title)}</a></li>' for s in sections]
    parts.append('<li><a href="#comparison">Comparing the settings</a></li></ul></nav>')
    for s in sections:
        parts.append(f'<h2 id="{esc(s.slug)}">{esc(s.title)}</h2>')
        parts += [f"<p>{esc(p)}</p>" for p in s.text]
        parts.append(f"<pre><code>{esc(s.code)}</code></pre>")
        for fname, caption in s.images:
            parts.append(f'<figure><img src="{esc(fname)}" alt="{esc(caption)}" loading="lazy">'
                         f"<figcaption>{esc(caption)}</figcaption></figure>")
        if s.files:
            parts.append(_files_html(s.files))
        if s.stats is not None:
            stats = pd.DataFrame({"value": s.stats.astype(object)})
            stats.index.name = "shrinkage"
            parts.append("<details><summary>Shrinkage in numbers</summary>"
                         + _table_html(stats, count_rows=_COUNTS) + "</details>")
        parts.append("<details><summary>Model summary</summary>"
                     f"<pre>{esc(s.summary)}</pre></details>")
    parts.append('<h2 id="comparison">Comparing the settings</h2>')
    parts.append(f"<p>{esc(comparison_note)}</p>")
    parts.append(_table_html(comparison))
    if comparison_files:
        parts.append(_files_html(comparison_files))
    parts += [f"<p>{esc(p)}</p>" for p in closing]
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
