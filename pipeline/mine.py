"""Label-based triplet mining with FAISS, guided by embedding similarity.

For every text (the query) of a labelled split:

* **positive** — a same-label text drawn from the query's `positive_top_k` nearest same-label neighbours
  with probability softmax(sim / `positive_temperature`) (GIST: k=100, T=0.05). Never the query itself.
* **negative** — an other-label text. ``hard`` takes the most similar other-label candidate that passes
  the positive-aware margin guard; ``topk_random`` draws uniformly among the first `negative_top_k` that
  pass; ``uniform`` is GIST's exact recipe, a uniformly random other-label text with no guard.
  The guard (NV-Retriever's TopK-PercPos) keeps a candidate only if ``sim(q, n) < sim(q, p) * (1 - margin)``
  (``relative``) or ``sim(q, n) < sim(q, p) - margin`` (``absolute``): a candidate nearly as close as the
  positive is more likely an unlabelled positive than a true negative. When none of the
  `negative_depth` retrieved candidates pass, up to `fallback_tries` random other-label texts are tried;
  a query with none left is dropped as ``no_negative`` and counted.

Texts are sorted by label so each label is one contiguous id range of a single inner-product index;
FAISS id selectors then restrict a search to the query's label (positives) or to every other label
(negatives). Memory grows with N·k (the results), never N² (no similarity matrix).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np

from pipeline.config import MiningConfig

log = logging.getLogger(__name__)


@dataclass
class MinedTriplets:
    """Indices into the input arrays plus guide scores, and what happened on the way."""

    query: np.ndarray
    pos: np.ndarray
    neg: np.ndarray
    pos_score: np.ndarray
    neg_score: np.ndarray
    stats: dict = field(default_factory=dict)


def task_rng(seed: int, task: str) -> np.random.Generator:
    """A generator that depends only on the seed and the task, not on run order."""
    return np.random.default_rng([seed, int.from_bytes(hashlib.sha256(task.encode()).digest()[:8], "little")])


def _search(index, queries: np.ndarray, k: int, selector, batch: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    params = faiss.SearchParameters(sel=selector)
    d_out = np.empty((len(queries), k), dtype=np.float32)
    i_out = np.empty((len(queries), k), dtype=np.int64)
    for s in range(0, len(queries), batch):
        d_out[s:s + batch], i_out[s:s + batch] = index.search(queries[s:s + batch], k, params=params)
    return d_out, i_out


def _threshold(pos_score: np.ndarray, cfg: MiningConfig) -> np.ndarray:
    if cfg.margin_type == "relative":
        return pos_score * (1.0 - cfg.margin)
    return pos_score - cfg.margin


def _other_label(rng: np.random.Generator, a: int, b: int, n_total: int, size) -> np.ndarray:
    """Uniform ids outside [a, b) (the query's own label range)."""
    r = rng.integers(0, n_total - (b - a), size=size)
    return np.where(r < a, r, r + (b - a))


def mine_triplets(embeddings: np.ndarray, labels: np.ndarray, cfg: MiningConfig, seed: int,
                  task: str = "") -> MinedTriplets:
    """Mine one (query, positive, negative) triplet per eligible row; see the module docstring."""
    import faiss

    n = len(labels)
    if embeddings.shape[0] != n:
        raise ValueError(f"{task}: {embeddings.shape[0]} embeddings for {n} labels")
    rng = task_rng(seed, task)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    emb = np.ascontiguousarray(embeddings[order], dtype=np.float32)
    bounds = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1], True])

    index = faiss.IndexFlatIP(emb.shape[1])
    index.add(emb)

    q_out, p_out, n_out, ps_out, ns_out = [], [], [], [], []
    stats = {"queries": n, "margin_rejected": 0, "fallback_random": 0, "drops": {}}
    for a, b in zip(bounds[:-1], bounds[1:]):
        a, b = int(a), int(b)
        size = b - a
        if size < 2 or size == n:
            stats["drops"]["single_member_label" if size < 2 else "no_other_label"] = \
                stats["drops"].get("single_member_label" if size < 2 else "no_other_label", 0) + size
            continue
        ids = np.arange(a, b)
        queries = emb[a:b]

        # Positive: softmax(sim / T) over the top-k same-label neighbours, self excluded (Gumbel-max).
        k = min(cfg.positive_top_k + 1, size)
        d, i = _search(index, queries, k, faiss.IDSelectorRange(a, b), cfg.query_batch)
        ok = (i >= 0) & (i != ids[:, None])
        logits = np.where(ok, d / cfg.positive_temperature, -np.inf)
        pick = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        pos = i[np.arange(size), pick]
        pos_score = d[np.arange(size), pick]

        neg = np.full(size, -1, dtype=np.int64)
        neg_score = np.full(size, np.nan, dtype=np.float32)
        if cfg.negative_strategy == "uniform":
            neg = _other_label(rng, a, b, n, size)
            neg_score = np.einsum("ij,ij->i", queries, emb[neg])
        else:
            depth = min(cfg.negative_depth, n - size)
            not_own = faiss.IDSelectorNot(faiss.IDSelectorRange(a, b))
            d, i = _search(index, queries, depth, not_own, cfg.query_batch)
            limit = _threshold(pos_score, cfg)[:, None]
            valid = (i >= 0) & (d < limit)
            stats["margin_rejected"] += int(((i >= 0) & (d >= limit)).sum())
            rank = np.cumsum(valid, axis=1)
            count = rank[:, -1]
            if cfg.negative_strategy == "hard":
                target = np.ones(size, dtype=np.int64)
            else:
                target = 1 + rng.integers(0, np.maximum(np.minimum(count, cfg.negative_top_k), 1))
            hit = valid & (rank == target[:, None])
            has = count > 0
            col = np.argmax(hit, axis=1)
            neg[has] = i[has, col[has]]
            neg_score[has] = d[has, col[has]]

            missing = np.flatnonzero(~has)
            if len(missing) and cfg.fallback_tries:
                tries = _other_label(rng, a, b, n, (len(missing), cfg.fallback_tries))
                sims = np.einsum("qd,qtd->qt", queries[missing], emb[tries])
                passes = sims < limit[missing]
                found = passes.any(axis=1)
                first = np.argmax(passes, axis=1)
                rows = missing[found]
                neg[rows] = tries[found, first[found]]
                neg_score[rows] = sims[found, first[found]]
                stats["fallback_random"] += int(found.sum())

        keep = neg >= 0
        stats["drops"]["no_negative"] = stats["drops"].get("no_negative", 0) + int((~keep).sum())
        q_out.append(ids[keep]); p_out.append(pos[keep]); n_out.append(neg[keep])
        ps_out.append(pos_score[keep]); ns_out.append(neg_score[keep])

    stats["drops"] = {k: v for k, v in stats["drops"].items() if v}
    if not q_out:
        empty = np.empty(0, dtype=np.int64)
        return MinedTriplets(empty, empty, empty, empty.astype(np.float32), empty.astype(np.float32), stats)
    # back to input row ids, in input order (deterministic, independent of label sort)
    q, p, ng = (order[np.concatenate(x)] for x in (q_out, p_out, n_out))
    ps, ns = np.concatenate(ps_out), np.concatenate(ns_out)
    back = np.argsort(q, kind="stable")
    result = MinedTriplets(q[back], p[back], ng[back], ps[back], ns[back], stats)
    stats["triplets"] = int(len(result.query))
    stats.update(similarity_summary(result.pos_score, result.neg_score))
    return result


def similarity_summary(pos_score: np.ndarray, neg_score: np.ndarray) -> dict:
    """Quantiles of guide similarity for (query, pos) and (query, neg)."""
    out = {}
    for name, s in (("pos_sim", pos_score), ("neg_sim", neg_score)):
        if len(s):
            qs = np.quantile(s, [0.05, 0.5, 0.95])
            out[name] = {"mean": round(float(s.mean()), 4), "p05": round(float(qs[0]), 4),
                         "p50": round(float(qs[1]), 4), "p95": round(float(qs[2]), 4)}
    return out
