"""Negatives that stay hard: a deeper search before any random fallback, and the tally of where negatives came from.

On sentiment-like tasks with a few noisy labels, all `negative_depth` nearest other-label texts of many queries
score above the margin guard (they are paraphrases under another label, or the query's own label is wrong), and
the miner fell back to a uniformly random other-label text: GIST's easy negative, for a quarter of the queries of
such tasks. Searching the same queries again at twice the depth (then four times, up to `negative_max_depth`)
finds, for most of them, a candidate below the guard that is still far harder than a random text. Only the
queries still short after the deepest search fall back.

The tally says per task how many negatives were retrieved and how many were random fallbacks, and how many
queries the `ntuple` config (k = `negatives_per_query` guarded negatives per row) covers and why the others
are missing from it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
from pydantic import BaseModel

log = logging.getLogger(__name__)

# A task where more than this share of negatives are random fallbacks gets a (non-blocking) warning check.
FALLBACK_WARN_SHARE = 0.10

# (query, candidate) scores held at once by one deeper search call: ~50 MB of scores and ids.
_PAIRS_PER_CALL = 1 << 22

NTUPLE_MISSING = {
    "fewer_guarded": "fewer than k retrieved candidates passed the margin guard (after any deeper search)",
    "fallback_only": "no retrieved candidate passed the guard: its one negative is a random fallback (k > 1)",
    "no_negative": "no negative at all (not even a random fallback passed the guard)",
}


class NegativeSources(BaseModel):
    """Where one task's negatives came from, and the `ntuple` config's coverage of its queries."""

    retrieved: int = 0  # negatives retrieved by the guide's search and passing the guard
    fallback: int = 0  # random other-label texts that passed the guard, after the search found none
    uniform: int = 0  # GIST's recipe (`negative_strategy: uniform`): random negatives, no search, no guard
    deep_searched: int = 0  # queries searched again deeper (first depth gave fewer than k)
    deep_filled: int = 0  # of those, queries that gained at least one guarded negative
    deepest: int = 0  # the deepest search made (0: none)
    ntuple_k: int = 1
    ntuple_queries: int = 0  # queries with k negatives: rows of the `ntuple` config (k = 1: fallbacks count)
    ntuple_missing: dict[str, int] = {}  # every other query, by reason (label drops included)

    @property
    def fallback_share(self) -> float:
        total = self.retrieved + self.fallback
        return self.fallback / total if total else 0.0


def deepen(search: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]],
           pick: Callable[[np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, int]],
           limit: np.ndarray, neg: np.ndarray, neg_score: np.ndarray, depth: int, max_depth: int,
           tally: NegativeSources, per_call: int = _PAIRS_PER_CALL) -> None:
    """Rows of `neg` short of their k negatives, searched again at doubling depth up to `max_depth` (in place).

    `search(rows, depth)` returns the other-label top-`depth` (scores, ids) of those query rows; `pick` applies
    the guard and the strategy to them, as for the first search, so a deeper row keeps the negatives the
    first search found (the top of a deeper exact search is the shallower one) and adds the next ones. Rows
    are searched in chunks so that one call holds at most `per_call` (query, candidate) pairs.
    """
    rows = np.flatnonzero((neg < 0).any(axis=1))
    if not len(rows) or max_depth <= depth:
        return
    tally.deep_searched += len(rows)
    had = (neg[rows] >= 0).sum(axis=1)
    start = rows.copy()
    while len(rows) and depth < max_depth:
        depth = min(depth * 2, max_depth)
        tally.deepest = max(tally.deepest, depth)
        chunk = max(1, per_call // depth)
        for s in range(0, len(rows), chunk):
            r = rows[s:s + chunk]
            d, i = search(r, depth)
            found, score, _ = pick(d, i, limit[r])
            better = (found >= 0).sum(axis=1) > (neg[r] >= 0).sum(axis=1)
            neg[r[better]], neg_score[r[better]] = found[better], score[better]
        rows = rows[(neg[rows] < 0).any(axis=1)]
    tally.deep_filled += int(((neg[start] >= 0).sum(axis=1) > had).sum())


@dataclass
class Tally:
    """Accumulates `NegativeSources` label block by label block."""

    k: int
    sources: NegativeSources = field(default_factory=NegativeSources)

    def __post_init__(self) -> None:
        self.sources.ntuple_k = self.k

    def add(self, retrieved: np.ndarray, has_fallback: np.ndarray) -> None:
        """`retrieved`: guarded retrieved negatives per query of a block; `has_fallback`: its random fallbacks."""
        s = self.sources
        s.retrieved += int(retrieved.sum())
        s.fallback += int(has_fallback.sum())
        total = retrieved + has_fallback  # a fallback is one negative: with k = 1 it makes an n-tuple row
        short = total < self.k
        s.ntuple_queries += int((~short).sum())
        self.missing("fewer_guarded", int((short & (retrieved > 0)).sum()))
        self.missing("fallback_only", int((short & (retrieved == 0) & has_fallback).sum()))
        self.missing("no_negative", int((total == 0).sum()))

    def add_uniform(self, queries: int) -> None:
        """GIST's recipe: k random negatives per query, none retrieved, none a fallback."""
        self.sources.uniform += queries * self.k
        self.sources.ntuple_queries += queries

    def missing(self, reason: str, n: int) -> None:
        if n:
            self.sources.ntuple_missing[reason] = self.sources.ntuple_missing.get(reason, 0) + n
