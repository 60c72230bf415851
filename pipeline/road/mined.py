"""What mining returns: row ids with guide scores, the candidates kept for re-mining, and the miner's counts."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import BaseModel

from pipeline.road.deep_search import NegativeSources
from pipeline.road.label_noise import NeighbourVotes


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


def summarise(scores: np.ndarray) -> SimilaritySummary | None:
    """Mean and 5/50/95th percentiles of guide similarity."""
    if not len(scores):
        return None
    qs = np.quantile(scores, [0.05, 0.5, 0.95])
    return SimilaritySummary(mean=round(float(scores.mean()), 4), p05=round(float(qs[0]), 4),
                             p50=round(float(qs[1]), 4), p95=round(float(qs[2]), 4))
