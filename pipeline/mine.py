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

Texts are sorted by label so each label is one contiguous id range. Positives come from an exact
inner-product index over the label's own vectors; negatives from an index over every other label
(exact, or IVF past `approx_above` texts: see `pipeline.search`). Memory grows with N·k (the results),
never N² (no similarity matrix).
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import numpy as np
from tqdm.auto import tqdm

from pipeline.config import MiningConfig
from pipeline.search import OtherLabelSearch, flat_index, search

log = logging.getLogger(__name__)

LOW_RECALL = 0.9  # below this, the approximate search is said to be missing too many neighbours


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


def _threshold(pos_score: np.ndarray, cfg: MiningConfig) -> np.ndarray:
    if cfg.margin_type == "relative":
        return pos_score * (1.0 - cfg.margin)
    return pos_score - cfg.margin


def _other_label(rng: np.random.Generator, a: int, b: int, n_total: int, size) -> np.ndarray:
    """Uniform ids outside [a, b) (the query's own label range)."""
    r = rng.integers(0, n_total - (b - a), size=size)
    return np.where(r < a, r, r + (b - a))


def _pick_negatives(d: np.ndarray, i: np.ndarray, limit: np.ndarray, cfg: MiningConfig,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, int]:
    """Up to `negatives_per_query` candidates per row that pass the guard: (ids, scores, rejected), -1 = none."""
    m = cfg.negatives_per_query
    valid = (i >= 0) & (d < limit)
    rejected = int(((i >= 0) & (d >= limit)).sum())
    if cfg.negative_strategy == "hard":
        keys = np.where(valid, np.arange(i.shape[1], dtype=np.float64)[None, :], np.inf)
    else:  # topk_random: random order among the first `negative_top_k` that pass
        pool = valid & (np.cumsum(valid, axis=1) <= cfg.negative_top_k)
        keys = np.where(pool, rng.random(i.shape), np.inf)
    cols = np.argsort(keys, axis=1, kind="stable")[:, :m]
    rows = np.arange(len(i))[:, None]
    ok = np.isfinite(keys[rows, cols])
    return np.where(ok, i[rows, cols], -1), np.where(ok, d[rows, cols], np.nan), rejected


def mine_triplets(embeddings: np.ndarray, labels: np.ndarray, cfg: MiningConfig, seed: int,
                  task: str = "") -> MinedTriplets:
    """Mine up to `negatives_per_query` triplets per eligible row; see the module docstring."""
    n = len(labels)
    if embeddings.shape[0] != n:
        raise ValueError(f"{task}: {embeddings.shape[0]} embeddings for {n} labels")
    rng = task_rng(seed, task)
    order = np.argsort(labels, kind="stable")
    sorted_labels = labels[order]
    emb = np.ascontiguousarray(embeddings[order], dtype=np.float32)
    bounds = np.flatnonzero(np.r_[True, sorted_labels[1:] != sorted_labels[:-1], True])
    others = None
    if cfg.negative_strategy != "uniform":
        others = OtherLabelSearch(emb, cfg.approx_above, cfg.ivf_nlist, cfg.ivf_nprobe, cfg.query_batch, seed)

    m = cfg.negatives_per_query
    q_out, p_out, n_out, ps_out, ns_out = [], [], [], [], []
    stats = {"queries": n, "margin_rejected": 0, "fallback_random": 0, "drops": {},
             "search": "ivf" if others is not None and others.approximate else "exact"}
    recalls = []
    for a, b in tqdm(list(zip(bounds[:-1].tolist(), bounds[1:].tolist())), desc=f"mine {task}", unit="label",
                     disable=len(bounds) < 50):
        size = b - a
        if size < 2 or size == n:
            reason = "single_member_label" if size < 2 else "no_other_label"
            stats["drops"][reason] = stats["drops"].get(reason, 0) + size
            continue
        ids = np.arange(a, b)
        queries = emb[a:b]

        # Positive: softmax(sim / T) over the top-k same-label neighbours, self excluded (Gumbel-max).
        k = min(cfg.positive_top_k + 1, size)
        d, i = search(flat_index(queries), queries, k, cfg.query_batch)
        i = i + a
        ok = (i >= a) & (i != ids[:, None])
        logits = np.where(ok, d / cfg.positive_temperature, -np.inf)
        pick = np.argmax(logits + rng.gumbel(size=logits.shape), axis=1)
        pos = i[np.arange(size), pick]
        pos_score = d[np.arange(size), pick]

        if cfg.negative_strategy == "uniform":
            neg = _other_label(rng, a, b, n, (size, m))
            neg_score = np.einsum("qd,qtd->qt", queries, emb[neg])
        else:
            depth = min(cfg.negative_depth, n - size)
            d, i = others.search(queries, a, b, depth)
            limit = _threshold(pos_score, cfg)[:, None]
            neg, neg_score, rejected = _pick_negatives(d, i, limit, cfg, rng)
            stats["margin_rejected"] += rejected
            if cfg.recall_sample:
                r = others.recall_at(queries, a, b, min(10, depth), cfg.recall_sample, rng)
                if r is not None:
                    recalls.append((r, size))

            missing = np.flatnonzero(neg[:, 0] < 0)
            if len(missing) and cfg.fallback_tries:
                tries = _other_label(rng, a, b, n, (len(missing), cfg.fallback_tries))
                sims = np.einsum("qd,qtd->qt", queries[missing], emb[tries])
                passes = sims < limit[missing]
                found = passes.any(axis=1)
                first = np.argmax(passes, axis=1)
                rows = missing[found]
                neg[rows, 0] = tries[found, first[found]]
                neg_score[rows, 0] = sims[found, first[found]]
                stats["fallback_random"] += int(found.sum())

        has = neg >= 0
        stats["drops"]["no_negative"] = stats["drops"].get("no_negative", 0) + int((~has.any(axis=1)).sum())
        qi, j = np.nonzero(has)
        q_out.append(ids[qi]); p_out.append(pos[qi]); n_out.append(neg[qi, j])
        ps_out.append(pos_score[qi]); ns_out.append(neg_score[qi, j])

    stats["drops"] = {k: v for k, v in stats["drops"].items() if v}
    if recalls:
        stats["recall_at_10"] = round(sum(r * w for r, w in recalls) / sum(w for _, w in recalls), 4)
        if stats["recall_at_10"] < LOW_RECALL:
            log.warning("%s: IVF recall@10 is %s (nprobe %s): negatives are less hard than exact search would find; "
                        "raise mining.ivf_nprobe", task, stats["recall_at_10"], cfg.ivf_nprobe)
    if not q_out:
        empty = np.empty(0, dtype=np.int64)
        stats["triplets"] = 0
        return MinedTriplets(empty, empty, empty, empty.astype(np.float32), empty.astype(np.float32), stats)
    # back to input row ids, in input order (deterministic, independent of label sort)
    q, p, ng = (order[np.concatenate(x)] for x in (q_out, p_out, n_out))
    ps, ns = np.concatenate(ps_out), np.concatenate(ns_out)
    back = np.argsort(q, kind="stable")
    result = MinedTriplets(q[back], p[back], ng[back], ps[back].astype(np.float32), ns[back].astype(np.float32), stats)
    stats["triplets"] = int(len(result.query))
    stats["queries_with_triplet"] = int(len(np.unique(result.query)))
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
