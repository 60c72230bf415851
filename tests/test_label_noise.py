"""Label noise audited from the miner's own neighbours, and dropped before mining when asked."""

import numpy as np
import polars as pl

from pipeline.common.accounting import RowAccount
from pipeline.config import CleanConfig, MiningConfig
from pipeline.road.label_noise import audit, flagged, mine_auditing
from pipeline.road.miner import mine_triplets
from tests.conftest import clustered


def _mine(x, y, **kw):
    return mine_triplets(x, y, MiningConfig(**kw), seed=0, task="t")


def _split(y):
    return pl.DataFrame({"text": [f"text {i}" for i in range(len(y))], "label_text": [f"L{v}" for v in y]})


def test_own_label_share_is_that_of_the_exact_k_nearest_neighbours():
    """Stated independently: the full similarity matrix, self excluded, top k by brute force."""
    x, y = clustered(400, 5, seed=2, noise=1.5)
    for strategy in ("hard", "uniform"):
        v = _mine(x, y, negative_strategy=strategy, label_noise_k=7).votes
        sims = x @ x.T
        np.fill_diagonal(sims, -np.inf)
        top = np.argsort(-sims, axis=1)[:, :7]
        own = (y[top] == y[:, None]).mean(axis=1)
        np.testing.assert_allclose(v.own_share, own, atol=1e-6)
        other = np.where(y[top] != y[:, None], y[top], -1)
        best = np.array([max((np.sum(r == c) for c in set(r) - {-1}), default=0) for r in other]) / 7
        np.testing.assert_allclose(v.other_share, best, atol=1e-6)


def test_flipped_labels_are_flagged_and_reported_with_examples():
    x, y = clustered(1000, 4, seed=5, noise=0.35)
    flip = np.random.default_rng(1).choice(len(y), 30, replace=False)
    noisy = y.copy()
    noisy[flip] = (noisy[flip] + 1) % 4
    v = _mine(x, noisy).votes
    found = np.flatnonzero(flagged(v, 0.8))
    assert np.isin(flip, found).mean() >= 0.9, "most flipped texts are found"
    assert np.isin(found, flip).mean() >= 0.9, "few clean texts are flagged"
    report = audit(v, noisy, _split(noisy), 0.8)
    assert report.flagged == len(found) and report.audited == len(y) and report.k == 10
    assert sum(report.top_pairs.values()) <= report.flagged and len(report.examples) == 5
    ex = report.examples[0]
    row = int(ex.text.split()[-1])
    assert ex.label == f"L{noisy[row]}" and ex.neighbours_label == f"L{y[row]}" and ex.share >= 0.8


def test_drop_label_noise_drops_the_flagged_texts_before_mining_and_counts_them():
    x, y = clustered(600, 3, seed=7, noise=0.35)
    y[:20] = (y[:20] + 1) % 3
    split = _split(y)
    mine = lambda e, c: _mine(e, c)  # noqa: E731
    kept_all, same_split, report = mine_auditing(mine, x, y, split, CleanConfig(), RowAccount(source="t", rows_in=600))
    assert report.flagged >= 18 and report.dropped == 0 and same_split.height == 600
    acc = RowAccount(source="t", rows_in=600)
    mined, cleaned, report = mine_auditing(mine, x, y, split, CleanConfig(drop_label_noise=True), acc)
    assert report.dropped == report.flagged == acc.drops["label_noise"] == 600 - cleaned.height
    flagged_texts = set(split["text"].to_numpy()[flagged(kept_all.votes, 0.8)])
    assert not flagged_texts & set(cleaned["text"]), "a flagged text was mined"
    assert mined.stats.queries == cleaned.height and mined.query.max() < cleaned.height
    acc.rows_out = mined.stats.queries_with_triplet
    for reason, n in mined.stats.drops.items():
        acc.drop(reason, n)
    acc.check()
    assert mined.stats.fallback_random <= kept_all.stats.fallback_random, "noisy texts are what falls back"


def test_no_audit_when_k_is_zero():
    x, y = clustered(100, 3, seed=1)
    assert _mine(x, y, label_noise_k=0).votes is None
