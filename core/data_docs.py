"""Data Docs that open without internet.

GX 1.x writes pages that load Bootstrap, jQuery, bootstrap-table, Vega and Font Awesome from public CDNs:
on a utility's closed network (or this machine) the validation pages render unstyled and the index page
renders nothing at all (its tables are built by bootstrap-table's JavaScript). The content itself is plain
HTML in the pages, so we remove every remote asset, give each page one local stylesheet, and give the index
a plain list of its pages. Nothing is fetched, nothing is executed: the pages read the same on any network.
"""

from __future__ import annotations

import html
import os
import re
from pathlib import Path

STYLESHEET = "static/styles/potable-offline.css"
CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:1.5rem auto;max-width:75rem;
  padding:0 1rem;line-height:1.4;color:#222}
table{border-collapse:collapse;margin:.5rem 0 1rem}td,th{border:1px solid #ccc;padding:.25rem .5rem;
  vertical-align:top;text-align:left}th{background:#f3f3f3}
.text-danger,.alert-danger{color:#b00020}.text-success{color:#1b7f3b}
img[alt]{display:none}ol.breadcrumb{list-style:none;padding:0}ol.breadcrumb li{display:inline;margin-right:.5rem}
button{display:none}code,pre{background:#f6f6f6;padding:0 .2rem}
.potable-pages{border:1px solid #ccc;padding:.75rem 1.5rem}
"""
# Any tag whose src/href points off this machine: scripts (with their bodies), stylesheets, icons, images.
REMOTE_SCRIPT = re.compile(r"<script[^>]*\bsrc=[\"']https?://[^>]*>\s*</script>", re.IGNORECASE)
REMOTE_LINK = re.compile(r"<link[^>]*\bhref=[\"']https?://[^>]*/?>", re.IGNORECASE)
REMOTE_IMAGE = re.compile(r"<img[^>]*\bsrc=[\"']https?://[^>]*/?>", re.IGNORECASE)
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>.*?</script>", re.IGNORECASE | re.DOTALL)


def offline_page(text: str, stylesheet_href: str) -> str:
    """One page without remote assets (and without the inline scripts that only drive them)."""
    for pattern in (REMOTE_SCRIPT, REMOTE_LINK, REMOTE_IMAGE, INLINE_SCRIPT):
        text = pattern.sub("", text)
    link = f'<link rel="stylesheet" href="{html.escape(stylesheet_href)}">'
    return text.replace("</head>", f"{link}</head>", 1) if "</head>" in text else link + text


def page_list(docs_dir: Path, pages: list[Path]) -> str:
    items = "".join(
        f'<li><a href="{html.escape(p.relative_to(docs_dir).as_posix())}">'
        f"{html.escape(p.relative_to(docs_dir).with_suffix('').as_posix())}</a></li>"
        for p in pages
        if p.name != "index.html"
    )
    return f'<section class="potable-pages"><h3>Pages</h3><ul>{items}</ul></section>'


def make_offline(docs_dir: Path) -> None:
    """Rewrite every page under `docs_dir` (a Data Docs site) to use only local files."""
    (docs_dir / STYLESHEET).parent.mkdir(parents=True, exist_ok=True)
    (docs_dir / STYLESHEET).write_text(CSS, encoding="utf-8")
    pages = sorted(docs_dir.rglob("*.html"))
    for page in pages:
        href = os.path.relpath(docs_dir / STYLESHEET, page.parent)
        text = offline_page(page.read_text(encoding="utf-8"), Path(href).as_posix())
        if page == docs_dir / "index.html":
            text = text.replace("</body>", page_list(docs_dir, pages) + "</body>", 1)
        page.write_text(text, encoding="utf-8")
