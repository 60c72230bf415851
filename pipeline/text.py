"""Text normalisation shared by deduplication, ambiguity checks and (later) decontamination."""

from __future__ import annotations

import hashlib
import re
import unicodedata

import polars as pl

_WS = re.compile(r"\s+")


def normalise(text: str) -> str:
    """NFKC, case-fold, collapse whitespace: two texts equal under this are the same text."""
    return _WS.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def normalised(expr: pl.Expr) -> pl.Expr:
    """`normalise` as a polars expression (vectorised over a batch)."""
    return expr.map_batches(
        lambda s: pl.Series([None if t is None else normalise(t) for t in s.to_list()], dtype=pl.String),
        return_dtype=pl.String,
    )


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def slug(name: str) -> str:
    """`ChatterbotTopics` -> `chatterbot_topics`, `MTOPDomain` -> `mtop_domain`."""
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower() if ch.isalnum() else "_")
    return re.sub("_+", "_", "".join(out)).strip("_")
