"""MkDocs hooks (``hooks:`` in mkdocs.yml): render the Sphinx roles of the docstrings as plain code.

The docstrings cross-reference with Sphinx roles (``:class:`~flclient.DeviceConfig```), which mkdocstrings passes
through as text; this shows them as the code they name (``~`` keeps only the last part, as Sphinx does).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj):<code>(~?)([^<]*)</code>")


def _name(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"<code>{target.rsplit('.', 1)[-1] if tilde else target}</code>"


def on_page_content(html: str, **kwargs: Any) -> str:
    """Replace each role in the rendered page by the code it names."""
    return _ROLE.sub(_name, html)
