"""The HTML the server sends: a page shell per section, and error pages people understand.

The shell holds no numbers: it lists the section's cards, each with its title, a CSV link
and a placeholder, and the script fills every card from its own JSON endpoint in parallel.
All links are relative to ``<base href>`` (the mount prefix), so the kit works under any
prefix.

>>> page = shell(base="/analytics/", name="Stats", section="audience", scope="all creators",
...              owner=True)
>>> 'data-card="top_countries"' in page and '<base href="/analytics/">' in page
True
>>> "403" in error_page(403, "Not allowed", "Ask the owner.", base="/a/").body.decode()
True
"""

from __future__ import annotations

import hashlib
import html
from pathlib import Path

from edgemetrics.dashboard_kit.cards import SECTIONS, section_cards
from starlette.responses import HTMLResponse

_e = html.escape
STATIC = Path(__file__).parent / "static"
# The assets' content hash: their URLs change when they do, so browsers may keep them.
ASSET_VERSION = hashlib.sha256(
    b"".join((STATIC / name).read_bytes() for name in ("dashboard.css", "dashboard.js"))
).hexdigest()[:12]


def _nav(section: str, owner: bool) -> str:
    links = []
    for key, label in SECTIONS.items():
        if key == "health" and not owner:
            continue
        href = "./" if key == "overview" else key
        current = ' aria-current="page"' if key == section else ""
        links.append(f'<a href="{href}" data-nav="{key}"{current}>{_e(label)}</a>')
    return '<nav aria-label="Sections">' + "".join(links) + "</nav>"


_FILTERS = """
<form id="filters" class="filters" role="search" aria-label="Filters">
  <label>Period <select name="period">
    <option value="today">Today</option><option value="7d">Last 7 days</option>
    <option value="30d" selected>Last 30 days</option><option value="90d">Last 90 days</option>
    <option value="all">All time</option><option value="custom">Custom range</option>
  </select></label>
  <span class="custom"><label>From <input type="date" name="from"></label>
  <label>To <input type="date" name="to"></label></span>
  <span class="audience"><label>Type <select name="content_type"><option value="">All</option>
    <option value="video">Video</option><option value="audio">Audio</option>
    <option value="post">Post</option></select></label>
  <label>Country <input name="country" size="3" maxlength="2" placeholder="all"
    pattern="[A-Za-z]{2}" title="Two-letter country code, e.g. FR"></label>
  <label>Device <select name="device"><option value="">All</option>
    <option value="desktop">Desktop</option><option value="mobile">Mobile</option>
    <option value="tablet">Tablet</option><option value="tv">TV</option>
    <option value="console">Console</option><option value="other">Other</option></select></label>
  <label>Viewers <select name="authenticated"><option value="">All</option>
    <option value="authenticated">Signed in</option>
    <option value="anonymous">Anonymous</option></select></label></span>
  {hint}
  <button type="submit">Apply</button>
</form>"""


def shell(
    *,
    base: str,
    name: str,
    section: str,
    scope: str,
    owner: bool,
    item: str | None = None,
    item_title: str | None = None,
) -> str:
    """The page for ``section`` (``item`` for one content item's page)."""
    cards = section_cards("item" if item else section)
    hint = (
        '<span class="hint">Platform health follows the period; audience filters do not apply.'
        "</span>"
        if section == "health"
        else ""
    )
    heading = f"{SECTIONS[section]}: {item_title or item}" if item else SECTIONS[section]
    articles = []
    for c in cards:
        wide = " wide" if c.wide else ""
        desc = f'<p class="desc">{_e(c.description)}</p>' if c.description else ""
        articles.append(
            f'<article class="card kind-{c.kind}{wide}" data-card="{c.id}" data-kind="{c.kind}" '
            f'data-state="loading" aria-labelledby="t-{c.id}" aria-busy="true">'
            f'<header><h3 id="t-{c.id}">{_e(c.title)}</h3>'
            f'<a class="csv" href="export/{c.id}.csv" data-export="{c.id}">CSV</a></header>'
            f'{desc}<div class="body"><p class="placeholder">Loading…</p></div></article>'
        )
    item_attr = f' data-item="{_e(item)}"' if item else ""
    zip_href = f"export/{'item' if item else section}.zip"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<base href="{_e(base)}">
<title>{_e(name)} · {_e(heading)}</title>
<link rel="stylesheet" href="static/dashboard.css?v={ASSET_VERSION}">
<script src="static/dashboard.js?v={ASSET_VERSION}" defer></script>
</head>
<body data-section="{section}"{item_attr}>
<a class="skip" href="#main">Skip to the figures</a>
<header class="top">
  <h1>{_e(name)}</h1>
  <p class="scope">Showing: <strong>{_e(scope)}</strong></p>
  {_nav(section, owner)}
  {_FILTERS.replace("{hint}", hint)}
</header>
<main id="main">
  <div class="title-row"><h2>{_e(heading)}</h2>
  <p class="exports"><a href="{zip_href}" data-export-zip>Download every table here (ZIP)</a>
  · <a href="export/all.zip" data-export-zip>everything (ZIP)</a></p></div>
  <p id="status" role="status" aria-live="polite"></p>
  <div class="grid">
  {"".join(articles)}
  </div>
</main>
</body>
</html>"""


def error_page(status: int, title: str, message: str, *, base: str) -> HTMLResponse:
    """A page that says what went wrong and what to do, with the right HTTP status."""
    body = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<base href="{_e(base)}"><title>{_e(title)}</title>
<link rel="stylesheet" href="static/dashboard.css?v={ASSET_VERSION}"></head>
<body><main class="error" id="main"><h1>{_e(title)}</h1><p>{_e(message)}</p>
<p class="code">HTTP {status}</p><p><a href="./">Back to the overview</a></p></main>
</body></html>"""
    return HTMLResponse(body, status_code=status)
