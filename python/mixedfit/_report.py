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


def _table_html(df: pd.DataFrame, digits: int = 3) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in [df.index.name or ""] + list(df.columns))
    rows = []
    for idx, r in df.iterrows():
        cells = [f"<td>{html.escape(str(idx))}</td>"]
        for v in r:
            if isinstance(v, float):
                s = "" if v != v else f"{v:.{digits}f}"
            else:
                s = str(v)
            cells.append(f"<td>{html.escape(s)}</td>")
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"


def write_report(out_dir, title: str, intro: list[str], comparison: pd.DataFrame,
                 comparison_note: str, sections: list[Section], closing: list[str]) -> Path:
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
        if s.stats is not None:
            stats = pd.DataFrame({"value": s.stats})
            stats.index.name = "shrinkage"
            parts.append("<details><summary>Shrinkage in numbers</summary>"
                         + _table_html(stats) + "</details>")
        parts.append("<details><summary>Model summary</summary>"
                     f"<pre>{esc(s.summary)}</pre></details>")
    parts.append('<h2 id="comparison">Comparing the settings</h2>')
    parts.append(f"<p>{esc(comparison_note)}</p>")
    parts.append(_table_html(comparison))
    parts += [f"<p>{esc(p)}</p>" for p in closing]
    parts.append("</body></html>")
    path = out_dir / "index.html"
    path.write_text("\n".join(parts), encoding="utf-8")
    return path
