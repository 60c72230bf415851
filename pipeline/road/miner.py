"""Label-based triplet mining with FAISS, guided by embedding similarity: the algorithm (`mine_triplets`).

For every text (the query) of a labelled split, `mine_triplets` picks a same-label positive and one or more
other-label negatives. Texts are sorted by label so each label is one contiguous id range; positives come
from an exact inner-product index over the label's own vectors, negatives from an index over every other
label (exact, or IVF past `approx_above` texts: see `pipeline.road.search`). Memory grows with N·k (the
results), never N² (no similarity matrix). The stage that runs it per task is `pipeline.road.mine`.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel
from tqdm.auto import tqdm

from pipeline.config import MiningConfig
from pipeline.road.deep_search import NegativeSources, Tally, deepen
from pipeline.road.label_noise import NeighbourVotes, votes
from pipeline.road.search import OtherLabelSearch, flat_index, search

log = logging.getLogger(__name__)

LOW_RECALL = 0.9  # below this, the approximate search is said to be missing too many neighbours

DROPS = {"no_negative": "no other-label text passed the margin guard"}


class SimilaritySummary(BaseModel):
    mean: float
    p05: float
    p50: float
    p95: float


class MiningStats(BaseModel):
    """What the miner did with one task's rows; `drops` are the rows that gave no triplet, by reason."""

    queries: int
    search: Literal["exact", "ivf"]
    margin_rejected: int = 0
    fallback_random: int = 0
    drops: dict[str, int] = {}
    triplets: int = 0
    queries_with_triplet: int = 0
    recall_at_10: float | None = None
    pos_sim: SimilaritySummary | None = None
    neg_sim: SimilaritySummary | None = None
    negatives: NegativeSources = NegativeSources()  # retrieved vs fallback, deeper search, `ntuple` coverage


@dataclass
class Candidates:
    """Per mined query (input row ids, sorted): its positive and its top other-label candidates as the guide
    ranked them (best first; -1 / NaN pad a short row), passing the guard or not, so that a trainer can
    apply another margin or sampling rule without the guide. Empty for `uniform` mining (no retrieval)."""

    query: np.ndarray
    pos: np.ndarray
    pos_score: np.ndarray
    ids: np.ndarray  # (queries, N)
    scores: np.ndarray  # (queries, N)

    @classmethod
    def empty(cls, n: int = 0) -> "Candidates":
        ids, scores = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        return cls(ids, ids, scores, np.empty((0, n), dtype=np.int64), np.empty((0, n), dtype=np.float32))


@dataclass
class MinedTriplets:
    """Indices into the input arrays plus guide scores, and what happened on the way."""

    query: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    pos_score: np.ndarray
    neg_score: np.ndarray
    stats: MiningStats
    candidates: Candidates = field(default_factory=Candidates.empty)
    votes: NeighbourVotes | None = None  # the label-noise audit's neighbour votes, per input row

    @classmethod
    def empty(cls, stats: MiningStats, candidates: int = 0) -> "MinedTriplets":
        ids, scores = np.empty(0, dtype=np.int64), np.empty(0, dtype=np.float32)
        return cls(ids, ids, ids, scores, scores, stats, Candidates.empty(candidates))


def task_rng(seed: int, task: str) -> np.random.Generator:
    """A generator that depends only on the seed and the task, not on run order."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(task.encode()).digest()[:8], "little")])


def margin_limit(pos_score: np.ndarray, margin: float, margin_type: str) -> np.ndarray:
    """The guard: a negative must score strictly below this.

    Relative: `pos - |pos| * margin`, which is always at or below the positive's score, also when that
    score is negative (`pos * (1 - margin)` would rise above it there).
    """
    if margin_type == "relative":
        return pos_score - np.abs(pos_score) * margin
    return pos_score - margin


def _other_label(rng: np.random.Generator, a: int, b: int, n_total: int, size) -> np.ndarray:
    """Uniform ids outside [a, b) (the query's own label range)."""
    r = rng.integers(0, n_total - (b - a), size=size)
    return np.where(r < a, r, r + (b - a))


def _sample_positives(queries: np.ndarray, a: int, top_k: int, temperature: float, batch: int,
                      rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """softmax(sim / T) over the top-k same-label neighbours, self excluded (Gumbel-max): (ids, scores, and
    the neighbours' similarities with self at -inf, for the label-noise audit)."""
    size = len(queries)
    k = min(top_k + 1, size)
    d, i = search(flat_index(queries), queries, k, batch)
    i = i + a
    ok = (i >= a) & (i != np.arange(a, a + size)[:, None])
    logits = np.where(ok, d / temperature, -np.inf)
    pick = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
    rows = np.arange(size)
    return i[rows, pick], d[rows, pick], np.where(ok, d, -np.inf)


def _pick_negatives(d: np.ndarray, i: np.ndarray, limit: np.ndarray, strategy: str, per_query: int, top_k: int,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to `per_query` retrieved candidates per row that pass the guard: (ids, scores, rejected); -1 = none."""
    valid = (i >= 0) & (d < limit)
    rejected = int(((i >= 0) & (d >= limit)).sum())
    if strategy == "hard":
        keys = np.where(valid, np.arange(i.shape[1], dtype=np.float64)[None, :], np.inf)
    else:  # topk_random: random order among the first `top_k` that pass
        pool = valid & (np.cumsum(valid, axis=1) <= top_k)
        keys = np.where(pool, rng.random(i.shape), np.inf)
    cols = np.argsort(keys, axis=1, kind="stable")[:, :per_query]
    rows = np.arange(len(i))[:, None]
    ok = np.isfinite(keys[rows, cols])
    return np.where(ok, i[rows, cols], -1), np.where(ok, d[rows, cols], np.nan), rejected


def _fallback(emb: np.ndarray, queries: np.ndarray, limit: np.ndarray, neg: np.ndarray, neg_score: np.ndarray,
              a: int, b: int, tries: int, rng: np.random.Generator) -> int:
    """For rows with no negative, the first of `tries` random other-label texts that passes the guard (in place)."""
    missing = np.flatnonzero(neg[:, 0] < 0)
    if not len(missing) or not tries:
        return 0
    draws = _other_label(rng, a, b, len(emb), (len(missing), tries))
    sims = np.einsum("qd,qtd->qt", queries[missing], emb[draws])
    passes = sims < limit[missing]
    found = passes.any(axis=1)
    first = np.argmax(passes, axis=1)
    rows = missing[found]
    neg[rows, 0] = draws[found, first[found]]
    neg_score[rows, 0] = sims[found, first[found]]
    return int(found.sum())


def mine_triplets(embeddings: np.ndarray, labels: np.ndarray, settings: MiningConfig = MiningConfig(), *,
                  seed: int = 42, task: str = "") -> MinedTriplets:
    """Mine up to `settings.negatives_per_query` (query, positive, negative) triplets per row of a labelled set.

    Unlike `sentence_transformers.util.mine_hard_negatives`, which is label-blind (most of its "hard
    negatives" on a classification set share the query's label), every negative here has another label
    than its query, and every positive the same label.

    Args:
        embeddings: (N, d) float32, L2-normalised: inner product is cosine similarity.
        labels: (N,) integer label codes.
        settings: the knobs, each documented by its `MiningConfig` field (`gistforge config --schema`); the
            stage's own (`rounds`) is not the miner's.
        seed: with `task`, seeds every random draw: the result depends on neither run order nor batches.
        task: the task's name, for the seed, messages and progress.

    Returns:
        Row ids of query, positive and negative (sorted by query) with their guide scores, and `MiningStats`
        in which every row that gave no triplet is counted under a reason.
    """
    opt = settings
    n = len(labels)
    if embeddings.shape[0] != n:
        raise ValueError(f"{task}: {embeddings.shape[0]} embeddings for {n} labels")
    if n == 0:
        return MinedTriplets.empty(MiningStats(queries=0, search="exact"), opt.candidates)
    rng = task_rng(seed, task)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    emb = np.ascontiguousarray(embeddings[order], dtype=np.float32)
    bounds = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1], True])
    others = None
    if opt.negative_strategy != "uniform" or opt.label_noise_k:
        others = OtherLabelSearch(emb, opt.approx_above, opt.ivf_nlist, opt.ivf_nprobe, opt.query_batch, seed)

    m = opt.negatives_per_query
    q_out, p_out, n_out, ps_out, ns_out = [], [], [], [], []
    width = min(opt.candidates, opt.negative_depth) if opt.negative_strategy != "uniform" else 0
    c_query, c_pos, c_pos_score, c_ids, c_scores = [], [], [], [], []
    stats = MiningStats(queries=n, search="ivf" if others is not None and others.approximate else "exact")
    drops: dict[str, int] = {}
    recalls = []
    tally = Tally(opt.negatives_per_query)
    noise = NeighbourVotes.empty(n, opt.label_noise_k)
    for a, b in tqdm(list(zip(bounds[:-1].tolist(), bounds[1:].tolist())), desc=f"mine {task}", unit="label",
                     disable=len(bounds) < 50):
        size = b - a
        if size < 2 or size == n:
            reason = "single_member_label" if size < 2 else "no_other_label"
            drops[reason] = drops.get(reason, 0) + size
            tally.missing(reason, size)
            continue
        queries = emb[a:b]
        pos, pos_score, same_d = _sample_positives(queries, a, opt.positive_top_k, opt.positive_temperature,
                                                   opt.query_batch, rng)

        if opt.negative_strategy == "uniform":
            neg = _other_label(rng, a, b, n, (size, m))
            neg_score = np.einsum("qd,qtd->qt", queries, emb[neg])
            tally.add_uniform(size)
            if opt.label_noise_k:
                d, i = others.search(queries, a, b, min(opt.label_noise_k, n - size))
        else:
            depth = min(opt.negative_depth, n - size)
            d, i = others.search(queries, a, b, depth)
            limit = margin_limit(pos_score, opt.margin, opt.margin_type)[:, None]
            pick = functools.partial(_pick_negatives, strategy=opt.negative_strategy, per_query=m,
                                     top_k=opt.negative_top_k, rng=rng)
            neg, neg_score, rejected = pick(d, i, limit)
            stats.margin_rejected += rejected
            if opt.negative_max_depth:
                deepen(lambda r, k: others.search(queries[r], a, b, k), pick,
                       limit, neg, neg_score, depth, min(opt.negative_max_depth, n - size), tally.sources)
            retrieved = (neg >= 0).sum(axis=1)
            if opt.recall_sample:
                r = others.recall_at(queries, a, b, min(10, depth), opt.recall_sample, rng)
                if r is not None:
                    recalls.append((r, size))
            stats.fallback_random += _fallback(emb, queries, limit, neg, neg_score, a, b, opt.fallback_tries, rng)
            tally.add(retrieved, (retrieved == 0) & (neg[:, 0] >= 0))
            kept = (neg >= 0).any(axis=1)
            if width:
                pad = max(0, width - i.shape[1])
                c_query.append(np.arange(a, b)[kept]); c_pos.append(pos[kept]); c_pos_score.append(pos_score[kept])
                c_ids.append(np.pad(i[kept, :width], ((0, 0), (0, pad)), constant_values=-1))
                c_scores.append(np.pad(d[kept, :width], ((0, 0), (0, pad)), constant_values=np.nan))

        if opt.label_noise_k:
            noise.own_share[a:b], noise.other_label[a:b], noise.other_share[a:b] = votes(
                same_d, d, np.where(i >= 0, sorted_labels[np.maximum(i, 0)], -1), int(sorted_labels[a]),
                opt.label_noise_k)
        has = neg >= 0
        drops["no_negative"] = drops.get("no_negative", 0) + int((~has.any(axis=1)).sum())
        qi, j = np.nonzero(has)
        ids = np.arange(a, b)
        q_out.append(ids[qi]); p_out.append(pos[qi]); n_out.append(neg[qi, j])
        ps_out.append(pos_score[qi]); ns_out.append(neg_score[qi, j])

    stats.drops = {k: v for k, v in drops.items() if v}
    stats.negatives = tally.sources
    noise = noise.reorder(order) if opt.label_noise_k else None
    if recalls:
        stats.recall_at_10 = round(sum(r * w for r, w in recalls) / sum(w for _, w in recalls), 4)
        if stats.recall_at_10 < LOW_RECALL:
            log.warning("%s: IVF recall@10 is %s (nprobe %s): negatives are less hard than exact search would find; "
                        "raise mining.ivf_nprobe", task, stats.recall_at_10, opt.ivf_nprobe)
    if not q_out:
        empty = MinedTriplets.empty(stats, width)
        empty.votes = noise
        return empty
    # back to input row ids, in input order (deterministic, independent of label sort)
    q, p, ng = (order[np.concatenate(x)] for x in (q_out, p_out, n_out))
    ps, ns = np.concatenate(ps_out), np.concatenate(ns_out)
    back = np.argsort(q, kind="stable")
    result = MinedTriplets(q[back], p[back], ng[back], ps[back].astype(np.float32), ns[back].astype(np.float32), stats,
                           _candidates(order, c_query, c_pos, c_pos_score, c_ids, c_scores, width), noise)
    stats.triplets = int(len(result.query))
    stats.queries_with_triplet = int(len(np.unique(result.query)))
    stats.pos_sim, stats.neg_sim = summarise(result.pos_score), summarise(result.neg_score)
    return result


def _candidates(order: np.ndarray, query: list, pos: list, pos_score: list, ids: list, scores: list,
                width: int) -> Candidates:
    """Label-sorted candidate blocks back to input row ids, sorted by query."""
    if not query:
        return Candidates.empty(width)
    q = order[np.concatenate(query)]
    cand = np.concatenate(ids)
    cand = np.where(cand >= 0, order[np.maximum(cand, 0)], -1)
    back = np.argsort(q, kind="stable")
    return Candidates(q[back], order[np.concatenate(pos)][back], np.concatenate(pos_score)[back].astype(np.float32),
                      cand[back], np.concatenate(scores)[back].astype(np.float32))


def summarise(scores: np.ndarray) -> SimilaritySummary | None:
    """Mean and 5/50/95th percentiles of guide similarity."""
    if not len(scores):
        return None
    qs = np.quantile(scores, [0.05, 0.5, 0.95])
    return SimilaritySummary(mean=round(float(scores.mean()), 4), p05=round(float(qs[0]), 4),
                             p50=round(float(qs[1]), 4), p95=round(float(qs[2]), 4))
