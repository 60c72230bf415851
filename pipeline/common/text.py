"""Text identity: normalisation and 64-bit keys, shared by deduplication, ambiguity checks and decontamination;
label spellings; a card's YAML front matter."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from decimal import Decimal, InvalidOperation

import numpy as np
import polars as pl

_CHUNK = 65_536


def normalise(text: str) -> str:
    """NFKC, case-fold, collapse whitespace: two texts equal under this are the same text.

    `str.split()` splits on exactly the characters `\\s` matches (`str.isspace`), 4x faster than a regex
    substitution on review-length texts."""
    return " ".join(unicodedata.normalize("NFKC", text).casefold().split())


def normalised(expr: pl.Expr) -> pl.Expr:
    """`normalise` as a polars expression (vectorised over a batch)."""
    return expr.map_batches(
        lambda s: pl.Series([None if t is None else normalise(t) for t in s.to_list()], dtype=pl.String),
        return_dtype=pl.String,
    )


def text_keys(texts: pl.Series) -> np.ndarray:
    """64-bit keys of normalised texts (0 for a missing text, which never matches a real key).

    A whole reference set (every test text of every task) fits in memory as one integer array.
    """
    out = np.zeros(len(texts), dtype=np.uint64)
    for start in range(0, len(texts), _CHUNK):  # a chunk of Python strings at a time, not a column's worth
        for i, t in enumerate(texts.slice(start, _CHUNK).to_list(), start):
            if t is not None:
                out[i] = int.from_bytes(hashlib.blake2b(normalise(t).encode(), digest_size=8).digest(), "little") | 1
    return out


def leaked(texts: pl.Series, keys: np.ndarray) -> np.ndarray:
    """Mask of texts that equal (after normalisation) a text of the reference `keys`."""
    return np.isin(text_keys(texts), keys) if len(keys) else np.zeros(len(texts), dtype=bool)


def slug(name: str) -> str:
    """`ChatterbotTopics` -> `chatterbot_topics`, `MTOPDomain` -> `mtop_domain`."""
    out = []
    for i, ch in enumerate(name):
        if ch.isupper() and i and (not name[i - 1].isupper() or (i + 1 < len(name) and name[i + 1].islower())):
            out.append("_")
        out.append(ch.lower() if ch.isalnum() else "_")
    return re.sub("_+", "_", "".join(out)).strip("_")


# A label that reads as a plain decimal number (`1`, ` +1 `, `1.0`, `1e3`): unified by `canonical_label`.
_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_MAX_DIGITS = 30  # beyond this a "number" is an id (or a DoS via 1e999999), kept as spelled


def canonical_label(label: str) -> str:
    """One spelling per class: stripped, and a number in its shortest form (`1.0`, `01`, `+1` -> `1`;
    `0.50` -> `0.5`). CSV keeps `1.0` as text while JSON reads it as the float 1; both must name one class,
    or a "negative" can share its query's real class."""
    label = label.strip()
    if not _NUMBER.fullmatch(label):
        return label
    try:
        d = Decimal(label)
    except InvalidOperation:  # pragma: no cover - the pattern only lets decimals through
        return label
    if d.is_zero():
        return "0"
    if abs(d.adjusted()) > _MAX_DIGITS or len(d.as_tuple().digits) > 2 * _MAX_DIGITS:
        return label
    if d == d.to_integral_value():
        return str(int(d))
    return format(d.normalize(), "f")


def front_matter(text: str) -> str | None:
    """The YAML between a card's opening `---` line and the next line that is exactly `---` (as the Hub reads
    it); None without one. A `---` inside a value (`org/my---data`) ends nothing."""
    lines = text.lstrip("\ufeff").lstrip().splitlines()
    if not lines or lines[0].rstrip() != "---":
        return None
    for i, line in enumerate(lines[1:], 1):
        if line.rstrip() == "---":
            return "\n".join(lines[1:i])
    return None
