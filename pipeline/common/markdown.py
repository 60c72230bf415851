"""Markdown tables and inline text, for the dataset card, the model card and Dagster metadata.

Much of what lands in a card comes from outside gistforge's control: a source card's licence string, MEDI
`task_name`s, local file and task names, repo names. Every such string is passed through `escape`, which makes
it inert wherever it lands on a line: it cannot open a link, an image, an HTML tag or a code span, cannot split
a table cell, and cannot start a new line (so no heading, list or table row). Markup gistforge writes itself
is wrapped in `Markdown` (or built with `code`) and passes as it is.
"""

from __future__ import annotations

import re

# Characters that could open markup, as HTML character references: a renderer shows the character itself, and
# no parser (CommonMark, GFM tables and autolinks, Python-Markdown) reads it as syntax.
_ENTITIES = {"|": "&#124;", "<": "&lt;", ">": "&gt;", "[": "&#91;", "]": "&#93;", "`": "&#96;"}
_SPECIAL = re.compile(r"[|<>\[\]`]|&(?=#?\w+;)|\\|//|(?<=www)\.", re.IGNORECASE)
_LINE_BREAKS = re.compile(r"[\r\n\v\f\x1c-\x1e\x85\u2028\u2029]+")
_CODE_SAFE = re.compile(r"[\w.\-/:@+=~^,()' ]*")


class Markdown(str):
    """Markup written by gistforge itself: passed through as it is (only line breaks become spaces in a table)."""


def escape(text: object) -> str:
    """`text` as inert inline markdown on one line: it renders as the same characters (line breaks as spaces)."""
    if isinstance(text, Markdown):
        return str(text)
    s = _LINE_BREAKS.sub(" ", "" if text is None else str(text))

    def one(m: re.Match) -> str:
        c = m.group(0)
        if c == "&":
            return "&amp;"  # `&lt;` in a source string stays those four characters
        if c == "\\":
            return "\\\\"
        if c == "//":
            return "&#47;&#47;"  # `https://...` is not autolinked (GFM's extended autolinks), wherever it starts
        if c == ".":
            return "&#46;"  # nor `www.`
        return _ENTITIES[c]

    return _SPECIAL.sub(one, s)


def code(text: object) -> Markdown:
    """`text` as a code span when it is plain (a revision, a commit, a model or config name), else as escaped
    text: a code span shows its content raw, so anything that could close it or split a table cell is not put in one."""
    s = "" if text is None else str(text)
    if s and _CODE_SAFE.fullmatch(s):
        return Markdown(f"`{s}`")
    return Markdown(escape(s))


def _cell(v: object) -> str:
    if isinstance(v, Markdown):
        return _LINE_BREAKS.sub(" ", v)
    return escape(v)


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A GFM table; every cell is escaped (see `escape`) unless it is `Markdown`, so each row has exactly
    `len(headers)` cells whatever the strings hold."""
    out = ["| " + " | ".join(_cell(h) for h in headers) + " |", "|" + "---|" * len(headers)]
    out += ["| " + " | ".join(_cell(v) for v in row) + " |" for row in rows]
    return "\n".join(out)
