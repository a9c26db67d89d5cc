"""``report.html``: one self-contained page (tables as HTML, plots inlined as base64 PNG)."""

from __future__ import annotations

import base64
import html
from typing import Sequence

from oracle.report.plots import Plot
from oracle.report.tables import Table, to_html

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; margin: 2rem auto; max-width: 1280px;
       padding: 0 1rem; color: #222; }
body.with-scenario { max-width: 1720px; }
.layout { display: grid; grid-template-columns: minmax(280px, 400px) minmax(0, 1fr); gap: 2rem; align-items: start; }
.layout > aside { position: sticky; top: 1rem; max-height: calc(100vh - 2rem); overflow: auto; }
aside pre { font-size: 0.78rem; background: #f7f7f7; border: 1px solid #e3e3e3; padding: 0.6rem; white-space: pre-wrap;
            word-break: break-word; }
@media (max-width: 1000px) { .layout { grid-template-columns: minmax(0, 1fr); } .layout > aside { position: static; } }
h1 { font-size: 1.6rem; margin-bottom: 0.2rem; }
h2 { font-size: 1.2rem; margin-top: 2rem; border-bottom: 1px solid #ddd; padding-bottom: 0.2rem; }
p.meta { color: #555; margin-top: 0; }
table { border-collapse: collapse; margin: 1rem 0 0.2rem; font-size: 0.9rem; }
caption { text-align: left; font-weight: 600; padding-bottom: 0.3rem; }
th, td { padding: 0.25rem 0.7rem; border-bottom: 1px solid #eee; text-align: left; white-space: nowrap; }
th { background: #f5f5f5; border-bottom: 1px solid #ccc; }
td.num, th.num { text-align: right; font-variant-numeric: tabular-nums; }
tr.section-end td { border-bottom: 1px solid #aaa; }
td.good { color: #1a7f37; } td.bad { color: #cf222e; } td.strong { font-weight: 600; }
p.note { color: #666; font-size: 0.85rem; margin: 0 0 1rem; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #444; font-size: 0.9rem; }
"""


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def render_page(title: str, meta: Sequence[str], tables: Sequence[Table], plots: Sequence[Plot],
                scenario_text: str | None = None) -> str:
    """The page; with ``scenario_text`` (the run's scenario.toml) it is shown in a column
    beside the tables and plots."""
    body_cls = ' class="with-scenario"' if scenario_text else ""
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             f"<title>{html.escape(title)}</title>", f"<style>{CSS}</style></head><body{body_cls}>",
             f"<h1>{html.escape(title)}</h1>"]
    parts += [f'<p class="meta">{html.escape(m)}</p>' for m in meta]
    if scenario_text:
        parts.append('<div class="layout"><aside id="scenario"><h2>Scenario</h2>'
                     f"<pre>{html.escape(scenario_text)}</pre></aside><main>")
    if tables:
        parts.append("<h2>Tables</h2>")
        parts += [to_html(t) for t in tables]
    if plots:
        parts.append("<h2>Plots</h2>")
        for p in plots:
            alt = html.escape(p.caption, quote=True)
            parts.append(f'<figure id="{html.escape(p.name.removesuffix(".png"), quote=True)}">'
                         f'<img src="{data_uri(p.png)}" alt="{alt}"><figcaption>{alt} '
                         f"<code>{html.escape(p.name)}</code></figcaption></figure>")
    if scenario_text:
        parts.append("</main></div>")
    parts.append("</body></html>\n")
    return "\n".join(parts)
