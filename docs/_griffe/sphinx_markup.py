"""A griffe extension that turns the Sphinx markup of serversync's docstrings into Markdown.

serversync's docstrings use two reStructuredText forms that Markdown does not know:

* roles such as ``:class:`~serversync.ports.Clock``` become links to the API reference
  (``optional`` autorefs: a target that is not in the reference renders as plain code);
* a paragraph ending with ``::`` followed by an indented block becomes a fenced code block.

The source files are not changed; only the text mkdocstrings renders is.
"""

from __future__ import annotations

import contextlib
import re
from typing import Any

import griffe

__all__ = ["SphinxMarkup"]

_ROLE = re.compile(r":(?:class|func|meth|attr|mod|data|exc|obj):`(?P<target>[^`]+)`")


def _link(match: re.Match[str], obj: griffe.Object) -> str:
    target = match["target"].strip()
    short = target.startswith("~")
    path = target.lstrip("~.")
    title = path.rsplit(".", 1)[-1] if short else path
    identifier = path
    if "." not in path:
        # A bare name: look it up as Python would from the docstring's object.
        with contextlib.suppress(griffe.NameResolutionError):
            identifier = obj.resolve(path)
    return f'<autoref identifier="{identifier}" optional><code>{title}</code></autoref>'


def _literal_blocks(text: str) -> str:
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.rstrip()
        if not stripped.endswith("::") or i + 1 >= len(lines) or lines[i + 1].strip():
            out.append(line)
            i += 1
            continue
        indent = len(line) - len(line.lstrip())
        block: list[str] = []
        j = i + 2
        while j < len(lines) and (
            not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) > indent
        ):
            block.append(lines[j])
            j += 1
        while block and not block[-1].strip():
            block.pop()
        if not block:
            out.append(line)
            i += 1
            continue
        lead = stripped[:-2].rstrip()
        if lead.strip():
            out += [lead + ":", ""]
        margin = min(len(b) - len(b.lstrip()) for b in block if b.strip())
        language = "python" if lead.strip() else "text"
        out.append(" " * indent + f"```{language}")
        out += [" " * indent + b[margin:] if b.strip() else "" for b in block]
        out += [" " * indent + "```", ""]
        i = j
    return "\n".join(out)


class SphinxMarkup(griffe.Extension):
    """Rewrite Sphinx roles and literal blocks of every docstring as Markdown."""

    def on_object(self, *, obj: griffe.Object, loader: griffe.GriffeLoader, **kwargs: Any) -> None:
        """Rewrite the object's docstring, if it has one."""
        if obj.docstring is None:
            return
        text = _ROLE.sub(lambda m: _link(m, obj), obj.docstring.value)
        obj.docstring.value = _literal_blocks(text)
