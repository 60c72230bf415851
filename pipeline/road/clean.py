"""Cleaning rules, each drop counted under a reason so that rows in = rows out + rows dropped."""

from __future__ import annotations

import numpy as np
import polars as pl

from pipeline.common.accounting import RowAccount
from pipeline.common.text import leaked, normalised, text_keys

# The drops this stage makes (mining reuses the two label ones; other stages keep their own vocabularies).
DROPS = {
    "empty_text": "text is missing, empty or whitespace only",
    "missing_label": "label is missing",
    "ambiguous_label": "the same (normalised) text appears under two or more labels",
    "duplicate_text": "a repeat of an earlier row's (normalised) text under the same label",
    "single_member_label": "its label has one member, so no positive exists",
    "no_other_label": "the task has a single label, so no negative exists",
    "label_noise": "with clean.drop_label_noise: its nearest neighbours overwhelmingly carry one other label "
                   "(pipeline.road.label_noise)",
    "query_equals_pos_or_neg": "MEDI row whose query equals its positive or negative (normalised)",
    "duplicate_row": "MEDI row repeating an earlier (query, pos, neg, task_name)",
}


def _blank(col: str) -> pl.Expr:
    return pl.col(col).is_null() | (pl.col(col).str.strip_chars() == "")


def _drop_leaks(df: pl.DataFrame, acc: RowAccount, columns: list[str], test_keys: np.ndarray | None) -> pl.DataFrame:
    if test_keys is None or not len(test_keys) or df.height == 0:
        return df
    mask = np.zeros(df.height, dtype=bool)
    for c in columns:
        mask |= leaked(df.get_column(c), test_keys)
    acc.drop("test_leak", int(mask.sum()))
    return df.filter(pl.Series(~mask))


def clean_labelled(df: pl.DataFrame, source: str, test_keys: np.ndarray | None = None) -> tuple[pl.DataFrame, RowAccount]:
    """Rows fit for label-based mining: non-empty, not a test text, unambiguous, unique, with a positive and a
    negative."""
    acc = RowAccount(source=source, rows_in=df.height)
    df = df.with_row_index("row")

    blank = df.filter(_blank("text"))
    acc.drop("empty_text", blank.height)
    df = df.filter(~_blank("text"))
    df = _drop_leaks(df, acc, ["text"], test_keys)

    acc.drop("missing_label", df.filter(pl.col("label").is_null()).height)
    df = df.filter(pl.col("label").is_not_null()).with_columns(key=normalised(pl.col("text")))

    ambiguous = df.group_by("key").agg(pl.col("label").n_unique().alias("n")).filter(pl.col("n") > 1)
    before = df.height
    df = df.join(ambiguous.select("key"), on="key", how="anti")
    acc.drop("ambiguous_label", before - df.height)

    before = df.height
    df = df.sort("row").unique(subset=["key"], keep="first", maintain_order=True)
    acc.drop("duplicate_text", before - df.height)

    sizes = df.group_by("label").len()
    single = sizes.filter(pl.col("len") == 1).select("label")
    before = df.height
    df = df.join(single, on="label", how="anti")
    acc.drop("single_member_label", before - df.height)

    if df.get_column("label").n_unique() < 2:
        acc.drop("no_other_label", df.height)
        df = df.clear()

    df = df.sort("row").select("row", "text", "label", "label_text")
    acc.rows_out = df.height
    return df, acc.check()


def first_of_each(df: pl.DataFrame, subset: list[str]) -> np.ndarray:
    """Mask of each distinct `subset` row's first occurrence: exactly `unique(keep="first")`, without the
    row-encoded copy of every text it makes (3 GB for MEDI). Rows are grouped by a 64-bit hash, and only
    rows whose hash repeats (the repeats, and any collision) are compared exactly."""
    hashes = df.select(pl.struct(subset).hash(seed=0)).to_series()
    candidates = np.flatnonzero(hashes.is_duplicated().to_numpy())
    keep = np.ones(df.height, dtype=bool)
    if len(candidates):
        rows = df[candidates].select(subset).with_columns(_row=pl.Series(candidates))
        keep[candidates] = False
        keep[rows.unique(subset=subset, keep="first", maintain_order=True).get_column("_row").to_numpy()] = True
    return keep


def clean_medi(df: pl.DataFrame, source: str, test_keys: np.ndarray | None = None) -> tuple[pl.DataFrame, RowAccount]:
    """MEDI rows kept as published, minus empty, test-leaking, degenerate and exact-repeat triplets."""
    acc = RowAccount(source=source, rows_in=df.height)
    empty = _blank("query") | _blank("pos") | _blank("neg")
    acc.drop("empty_text", df.filter(empty).height)
    df = df.filter(~empty)

    # one 64-bit key per normalised text (8 bytes a row, not a normalised copy of 1.4M long texts): the
    # leak check and the degenerate check both compare keys
    q, p, n = (text_keys(df.get_column(c)) for c in ("query", "pos", "neg"))
    leak = np.zeros(df.height, dtype=bool)
    if test_keys is not None and len(test_keys):
        leak = np.isin(q, test_keys) | np.isin(p, test_keys) | np.isin(n, test_keys)
        acc.drop("test_leak", int(leak.sum()))
    degenerate = ~leak & ((q == p) | (q == n))
    acc.drop("query_equals_pos_or_neg", int(degenerate.sum()))
    df = df.filter(pl.Series(~(leak | degenerate)))

    repeat = ~first_of_each(df, ["query", "pos", "neg", "task_name"])
    acc.drop("duplicate_row", int(repeat.sum()))
    df = df.filter(pl.Series(~repeat))

    df = df.with_columns(pl.col(c).fill_null("") for c in ("query_instruct", "pos_instruct", "neg_instruct", "task_name"))
    acc.rows_out = df.height
    return df, acc.check()
