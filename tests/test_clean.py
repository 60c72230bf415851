import polars as pl

import numpy as np

from pipeline.road.clean import clean_labelled, clean_medi, first_of_each


def test_labelled_cleaning_counts_every_drop_with_a_reason():
    df = pl.DataFrame({
        "text": ["a card", "A  Card ", "top up", "top up", "rate", "rate?", "", None, "lonely", "x", "y", "clash",
                 "CLASH", "card lost"],
        "label": ["0", "0", "1", "1", "2", "2", "0", "1", "3", "1", None, "0", "1", "0"],
        "label_text": ["c"] * 14,
    })
    out, acc = clean_labelled(df, "t")
    assert acc.rows_in == 14 and acc.balanced
    assert acc.drops == {"empty_text": 2, "missing_label": 1, "ambiguous_label": 2, "duplicate_text": 2,
                         "single_member_label": 1}
    assert out["text"].to_list() == ["a card", "top up", "rate", "rate?", "x", "card lost"]
    assert out.group_by("label").len()["len"].min() >= 2


def test_single_label_task_has_no_negatives():
    df = pl.DataFrame({"text": ["a", "b", "c"], "label": ["0"] * 3, "label_text": ["z"] * 3})
    out, acc = clean_labelled(df, "t")
    assert out.height == 0 and acc.drops == {"no_other_label": 3} and acc.balanced


def test_medi_cleaning():
    df = pl.DataFrame({
        "query": ["q", "q", "same", "", "q2"], "pos": ["p", "p", "Same", "p", "p2"], "neg": ["n", "n", "n", "n", "n2"],
        "task_name": ["t"] * 5, "query_instruct": ["i"] * 5, "pos_instruct": ["i"] * 5, "neg_instruct": [None] * 5,
    })
    out, acc = clean_medi(df, "medi")
    assert acc.drops == {"empty_text": 1, "query_equals_pos_or_neg": 1, "duplicate_row": 1}
    assert acc.balanced and out.height == 2 and out["neg_instruct"].to_list() == ["", ""]


def test_first_of_each_is_exactly_unique_keep_first(monkeypatch):
    """The hash-grouped dedupe keeps what `unique(keep="first", maintain_order=True)` keeps, nulls included, and
    stays exact when every row's hash collides (the exact comparison then decides alone)."""
    rng = np.random.default_rng(0)
    n = 5_000
    words = np.array(["a", "b", "c", None], dtype=object)
    df = pl.DataFrame({c: words[rng.integers(0, 4, n)].tolist() for c in ("query", "pos", "neg", "task_name")},
                      schema={c: pl.String for c in ("query", "pos", "neg", "task_name")})
    subset = ["query", "pos", "neg", "task_name"]
    expected = df.with_row_index().unique(subset=subset, keep="first", maintain_order=True)["index"].to_list()
    assert np.flatnonzero(first_of_each(df, subset)).tolist() == expected
    assert len(expected) < n  # there were repeats to drop

    real_hash = pl.Expr.hash
    monkeypatch.setattr(pl.Expr, "hash", lambda self, seed=0: real_hash(self, seed) * 0)  # every hash collides
    assert np.flatnonzero(first_of_each(df, subset)).tolist() == expected
