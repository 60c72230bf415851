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
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm

from pipeline.common.settings import Settings
from pipeline.road.deep_search import Tally, deepen
from pipeline.road.label_noise import NeighbourVotes, votes
from pipeline.road.mined import Candidates, MinedTriplets, MiningStats, summarise
from pipeline.road.search import OtherLabelSearch, flat_index, search

log = logging.getLogger(__name__)

LOW_RECALL = 0.9  # below this, the approximate search is said to be missing too many neighbours

DROPS = {"no_negative": "no other-label text passed the margin guard"}


class MiningConfig(Settings):
    """Knobs of the label-based triplet miner (`mine_triplets` takes them as they are):
    each field's description is its documentation (`gistforge config --schema`; a test holds the README's table
    to the fields). `rounds` is the stage's, not the miner's: how often the mining stage runs
    (`pipeline.road.rounds`)."""

    STAGE_FIELDS: ClassVar[frozenset[str]] = frozenset({"rounds"})  # the stage's, not the miner's

    positive_top_k: int = Field(100, ge=1, le=2047,  # FAISS on GPU returns at most 2048 neighbours (self + top-k)
                                description="the positive is drawn among the query's k nearest same-label texts "
                                "(GIST: 100); a small k gives positives the guide already finds close, a large one "
                                "adds harder positives")
    positive_temperature: float = Field(0.05, gt=0, description="draw probability softmax(sim / T) over those k "
                                        "(GIST: 0.05); T -> 0 picks the nearest, a large T samples them uniformly")
    negative_strategy: Literal["hard", "topk_random", "uniform"] = Field(
        "hard", description="hard: the most similar guarded other-label text; topk_random: uniform among the "
        "first negative_top_k guarded; uniform: GIST's recipe, a random other-label text, no guard")
    negative_depth: int = Field(64, ge=1, le=2048, description="other-label candidates retrieved per query; deeper "
                                "costs more search and finds a candidate under the guard more often")
    negative_top_k: int = Field(10, ge=1, description="pool size for `topk_random`")
    margin_type: Literal["relative", "absolute"] = Field("relative", description="how `margin` guards a candidate: "
                                                         "relative is NV-Retriever's TopK-PercPos (arXiv 2407.15831); "
                                                         "a candidate nearly as close as the positive is more likely an "
                                                         "unlabelled positive than a true negative")
    margin: float = Field(0.05, ge=0, description="keep sim(q,n) < sim(q,p)-|sim(q,p)|*m (relative) or < sim(q,p)-m "
                          "(absolute); 0 keeps anything strictly below the positive")
    negative_max_depth: int | None = Field(None, ge=1, le=2048, description="when fewer than negatives_per_query "
                                           "candidates pass the guard, search again at 2x, 4x ... negative_depth up "
                                           "to this before any random fallback (None: no deeper search)")
    fallback_tries: int = Field(64, ge=0, description="random other-label draws when no candidate passes; a query "
                                "with none left is dropped as `no_negative` and counted")
    negatives_per_query: int = Field(1, ge=1, description="triplets per query, each with its own negative")
    candidates: int = Field(32, ge=0, le=2048, description="other-label candidates kept per query with their "
                                                           "guide scores, for re-mining without the guide (the "
                                                           "`candidates` config; at most negative_depth, 0 keeps none)")
    approx_above: int = Field(100_000, ge=1, description="tasks with more texts search negatives with IVF on a CPU "
                              "(exact search of 200k texts took 13 min on 2 cores; IVF recall is measured and "
                              "reported); a GPU searches exactly at any size")
    ivf_nlist: int | None = Field(None, ge=1, description="IVF lists (default ~sqrt(N))")
    ivf_nprobe: int = Field(32, ge=1, description="IVF lists probed per query: recall against speed (reported as "
                            "`recall_at_10`)")
    recall_sample: int = Field(200, ge=0, description="queries per label checked against exact search (IVF only)")
    query_batch: int = Field(4096, ge=1, description="queries per search call (memory only; never the result)")
    label_noise_k: int = Field(10, ge=0, le=100, description="nearest neighbours per text for the label-noise audit "
                               "(0: no audit), from the positives' and negatives' searches; at most positive_top_k "
                               "and, unless uniform, negative_depth (uniform mining searches k other-label neighbours "
                               "for it alone)")
    rounds: int = Field(1, ge=1, le=3, description="mining rounds: round r > 1 mines again with the encoder "
                        "fine-tuned on round r-1's data as guide (ANCE-style re-mining); the last round is published")

    def miner_settings(self) -> dict:
        """What the card's mining table records: every field but the stage's own (`rounds`)."""
        return self.model_dump(exclude=set(self.STAGE_FIELDS))

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
