"""Label noise, audited from the neighbours the miner already retrieves.

A text whose nearest neighbours overwhelmingly carry one other label is likely mislabelled (or its label is
ambiguous): as a query it gets no guarded negative (its nearest other-label texts are its true peers), and as
a negative it teaches the encoder to push apart texts that belong together. This is the kNN label-issue
score of confident learning as cleanlab's Datalab computes it from a kNN graph (Northcutt et al., "Confident
Learning", JAIR 2021; cleanlab's `label_issue` / `outlier` checks) without cleanlab itself (AGPL-3.0): per
text, the share of its k nearest neighbours (cosine, guide embeddings, itself excluded) that carry its own
label, and the most common other label among them.

The k nearest neighbours overall are the top k of the union of the k nearest same-label texts (the positives'
search) and the k nearest other-label texts (the negatives' search), so no extra index is built. With
`clean.drop_label_noise`, flagged texts are dropped (counted as `label_noise`) and the task is mined again
without them.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import polars as pl
from pydantic import BaseModel, Field

from pipeline.common.accounting import RowAccount
from pipeline.common.settings import Settings

log = logging.getLogger(__name__)


class CleanConfig(Settings):
    """Cleaning beyond the rules every build applies (`pipeline.road.clean`)."""

    drop_label_noise: bool = Field(False, description="drop texts the label-noise audit flags, as `label_noise`, "
                                   "before mining")
    label_noise_share: float = Field(0.8, gt=0.5, le=1, description="a text is flagged when at least this share of "
                                     "its mining.label_noise_k nearest neighbours carry one other label")


EXAMPLES = 5  # flagged texts shown per task in the metadata and the card
EXAMPLE_CHARS = 120


@dataclass
class NeighbourVotes:
    """Per input row: own-label share among its k nearest neighbours, and the top other label and its share
    (NaN / -1 where a row was not audited: a label of one member, or a single-label task)."""

    k: int
    own_share: np.ndarray
    other_label: np.ndarray
    other_share: np.ndarray

    @classmethod
    def empty(cls, n: int, k: int) -> "NeighbourVotes":
        return cls(k, np.full(n, np.nan, dtype=np.float32), np.full(n, -1, dtype=np.int64),
                   np.full(n, np.nan, dtype=np.float32))

    def reorder(self, order: np.ndarray) -> "NeighbourVotes":
        """From label-sorted rows (row j = input row order[j]) back to input order."""
        out = NeighbourVotes.empty(len(order), self.k)
        out.own_share[order], out.other_label[order], out.other_share[order] = \
            self.own_share, self.other_label, self.other_share
        return out


def votes(same_d: np.ndarray, other_d: np.ndarray, other_labels: np.ndarray, own: int,
          k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For one label's queries: (own share, top other label, its share) among the k nearest of both searches.

    `same_d` are same-label similarities with self and padding at -inf; `other_d` / `other_labels` the
    other-label candidates' similarities and labels (-1 for padding)."""
    d = np.concatenate([same_d, np.where(other_labels >= 0, other_d, -np.inf)], axis=1)
    lab = np.concatenate([np.full(same_d.shape, own, dtype=np.int64), other_labels], axis=1)
    k = min(k, d.shape[1])
    top = np.argpartition(-d, k - 1, axis=1)[:, :k]
    valid = np.isfinite(np.take_along_axis(d, top, axis=1))
    lab = np.where(valid, np.take_along_axis(lab, top, axis=1), -2)
    n = np.maximum(valid.sum(axis=1), 1)
    own_share = (lab == own).sum(axis=1) / n
    best, best_count = np.full(len(d), -1, dtype=np.int64), np.zeros(len(d), dtype=np.int64)
    for j in range(k):  # the most common other label: k x k comparisons per row, k is small
        c = lab[:, j]
        count = np.where((c >= 0) & (c != own), (lab == c[:, None]).sum(axis=1), 0)
        better = count > best_count
        best, best_count = np.where(better, c, best), np.where(better, count, best_count)
    return own_share.astype(np.float32), best, (best_count / n).astype(np.float32)


class NoisyText(BaseModel):
    text: str
    label: str
    neighbours_label: str
    share: float


class LabelNoiseReport(BaseModel):
    """One task's audit: texts whose k nearest neighbours carry one other label in at least `share` of cases."""

    k: int
    share: float
    audited: int = 0
    mean_own_share: float | None = None
    flagged: int = 0
    dropped: int = 0
    top_pairs: dict[str, int] = {}  # "label -> neighbours' label": flagged texts, most frequent first
    examples: list[NoisyText] = []


def flagged(v: NeighbourVotes, share: float) -> np.ndarray:
    """Rows whose neighbours carry one other label in at least `share` of the k."""
    return np.nan_to_num(v.other_share, nan=0.0) >= share


def audit(v: NeighbourVotes, codes: np.ndarray, split: pl.DataFrame, share: float) -> LabelNoiseReport:
    """The per-task report: counts, the most frequent (label, neighbours' label) pairs, a few examples."""
    audited = np.isfinite(v.own_share)
    mask = flagged(v, share)
    report = LabelNoiseReport(k=v.k, share=share, audited=int(audited.sum()), flagged=int(mask.sum()),
                              mean_own_share=round(float(v.own_share[audited].mean()), 4) if audited.any() else None)
    if not mask.any():
        return report
    names = dict(zip(codes.tolist(), split.get_column("label_text").to_list()))
    rows = np.flatnonzero(mask)
    pairs = pl.DataFrame({"a": codes[rows], "b": v.other_label[rows]}).group_by("a", "b").len() \
        .sort(["len", "a", "b"], descending=[True, False, False]).head(EXAMPLES)
    report.top_pairs = {f"{names[a]} -> {names[b]}": n for a, b, n in pairs.iter_rows()}
    strongest = rows[np.lexsort((rows, -v.other_share[rows]))][:EXAMPLES]
    texts = split.get_column("text")
    report.examples = [NoisyText(text=texts[int(r)][:EXAMPLE_CHARS], label=names[int(codes[r])],
                                 neighbours_label=names[int(v.other_label[r])],
                                 share=round(float(v.other_share[r]), 2)) for r in strongest]
    return report


def mine_auditing(mine: Callable[[np.ndarray, np.ndarray], Any], emb: np.ndarray, codes: np.ndarray,
                  split: pl.DataFrame, clean: CleanConfig, acc: RowAccount) -> tuple[Any, pl.DataFrame,
                                                                                    LabelNoiseReport | None]:
    """`mine(embeddings, codes)` is `miner.mine_triplets` with the task's settings (a later module: passed in).

    Mine, audit the labels from the mining's own neighbours, and with `clean.drop_label_noise` drop the
    flagged texts (into `acc` as `label_noise`) and mine the rest again: (triplets, the split they index, audit)."""
    mined = mine(emb, codes)
    if mined.votes is None:
        return mined, split, None
    report = audit(mined.votes, codes, split, clean.label_noise_share)
    if clean.drop_label_noise and report.flagged:
        keep = ~flagged(mined.votes, clean.label_noise_share)
        acc.drop("label_noise", int((~keep).sum()))
        report.dropped = int((~keep).sum())
        split = split.filter(pl.Series(keep))
        mined = mine(emb[keep], codes[keep])
        log.info("%s: dropped %s texts as label noise, mined again", acc.source, report.dropped)
    return mined, split, report
