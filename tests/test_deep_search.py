"""Negatives that stay hard: the deeper search before any random fallback, and the `ntuple` coverage tally."""

import numpy as np
import polars as pl

from pipeline.config import MiningConfig, TaskSource
from pipeline.road.layout import MinedTables, derived_tables
from pipeline.road.deep_search import deepen, NegativeSources
from pipeline.road.mine import triplet_frame
from pipeline.road.miner import mine_triplets
from tests.conftest import clustered
from tests.test_mine import _check_invariants


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def needs_depth(seed=0, dim=16, crowd=80):
    """Built so that the first 64 candidates all fail the guard: label 0's `crowd` texts sit on one tight
    cluster together with `crowd` texts of label 1 (paraphrases filed under another label), so every label-0
    query's 64 nearest other-label texts score as high as its positive; label 1's other texts and label 2 lie
    elsewhere, past depth 64."""
    rng = np.random.default_rng(seed)
    c = _unit(rng.normal(size=(3, dim)))
    tight = lambda centre, n: centre + rng.normal(size=(n, dim)) * 0.03  # noqa: E731
    loose = lambda centre, n: centre + rng.normal(size=(n, dim)) * 0.4  # noqa: E731
    x = np.concatenate([tight(c[0], crowd), tight(c[0], crowd), loose(c[1], 300), loose(c[2], 200)])
    y = np.r_[np.zeros(crowd), np.ones(crowd + 300), np.full(200, 2)].astype(np.int64)
    return _unit(x), y


def _mine(x, y, **kw):
    cfg = MiningConfig(**kw)
    return mine_triplets(x, y, cfg, seed=0, task="t"), cfg


def test_deeper_search_lowers_the_fallback_share_on_a_fixture_built_to_need_it():
    x, y = needs_depth()
    shallow, cfg = _mine(x, y)
    deep, deep_cfg = _mine(x, y, negative_max_depth=512)
    s, d = shallow.stats.negatives, deep.stats.negatives
    assert s.fallback_share > 0.15, s  # the fixture does need it
    assert d.fallback_share < s.fallback_share / 4, (s, d)
    assert d.deep_searched >= 160 and d.deep_filled >= 150 and d.deepest > 64, d
    # the deeper negatives are retrieved ones: harder than the random fallbacks they replace, and guarded
    assert deep.neg_score.mean() > shallow.neg_score.mean()
    _check_invariants(deep, y, deep_cfg)
    for r in (shallow, deep):
        assert r.stats.negatives.retrieved + r.stats.negatives.fallback == r.stats.triplets
        assert r.stats.fallback_random == r.stats.negatives.fallback


def test_no_max_depth_or_one_at_the_first_depth_is_no_deeper_search():
    x, y = needs_depth(seed=1)
    plain, _ = _mine(x, y)
    same, _ = _mine(x, y, negative_max_depth=64)
    assert np.array_equal(plain.neg, same.neg) and same.stats.negatives.deep_searched == 0


def test_deepen_keeps_the_first_negatives_and_fills_in_chunks():
    """A fake search over one fixed ranking: deeper calls must return the shallower prefix plus more."""
    scores = np.tile(np.linspace(0.99, 0.0, 100, dtype=np.float32), (5, 1))
    ids = np.tile(np.arange(100), (5, 1))
    calls = []

    def search(rows, depth):
        calls.append((len(rows), depth))
        return scores[rows, :depth], ids[rows, :depth]

    def pick(d, i, lim):
        ok = d < lim
        first = np.argmax(ok, axis=1)
        found = ok.any(axis=1)
        return np.where(found, i[np.arange(len(i)), first], -1)[:, None], \
            np.where(found, d[np.arange(len(i)), first], np.nan)[:, None], 0

    limit = np.array([[0.98], [0.5], [0.05], [-1.0], [0.98]], dtype=np.float32)
    neg = np.array([[1], [-1], [-1], [-1], [1]])
    score = np.array([[0.98], [np.nan], [np.nan], [np.nan], [0.98]], dtype=np.float32)
    tally = NegativeSources()
    deepen(search, pick, limit, neg, score, depth=16, max_depth=100, tally=tally, per_call=64)
    assert neg[0, 0] == 1 and neg[4, 0] == 1, "a row that had its negative is not searched again"
    assert neg[1, 0] == 50 and neg[2, 0] == 95 and neg[3, 0] == -1
    assert tally.deep_searched == 3 and tally.deep_filled == 2 and tally.deepest == 100
    assert all(n * depth <= 64 or n == 1 for n, depth in calls), calls


def test_ntuple_coverage_is_the_ntuple_config_and_every_query_is_accounted_for():
    x, y = clustered(900, 6, seed=3, noise=1.2)
    y[:40] = (y[:40] + 1) % 6  # some noisy labels, so that some queries are short of k guarded negatives
    y[-1] = 99  # a label of one member
    src = TaskSource(name="cov", kind="local", path="x.jsonl")
    split = pl.DataFrame({"text": [f"t{i}" for i in range(len(y))], "label_text": [str(v) for v in y]})
    for k in (1, 4):
        mined, _ = _mine(x, y, negatives_per_query=k)
        neg = mined.stats.negatives
        table = derived_tables(MinedTables([triplet_frame(split, mined, src)], k=k))["ntuple"]
        assert neg.ntuple_k == k and neg.ntuple_queries == table.num_rows
        assert neg.ntuple_queries + sum(neg.ntuple_missing.values()) == mined.stats.queries, neg
        assert neg.ntuple_missing.get("single_member_label") == 1
        if k == 4:
            assert neg.ntuple_missing.get("fewer_guarded", 0) + neg.ntuple_missing.get("fallback_only", 0) > 0
    uniform, _ = _mine(x, y, negative_strategy="uniform", negatives_per_query=2)
    assert uniform.stats.negatives.uniform == uniform.stats.triplets and uniform.stats.negatives.fallback == 0


def test_deeper_search_through_the_ivf_keeps_the_invariants():
    x, y = needs_depth(seed=2)
    cfg = MiningConfig(approx_above=100, ivf_nprobe=4, negative_max_depth=512)
    r = mine_triplets(x, y, cfg, seed=0, task="t")
    assert r.stats.search == "ivf" and r.stats.negatives.deep_filled > 0
    _check_invariants(r, y, cfg)
    assert r.stats.negatives.fallback_share < 0.05
