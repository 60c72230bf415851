"""How closely reduced-precision guide vectors follow fp32: measured on a fixed sample, every build.

A guide that encodes in bf16 or fp16 re-encodes a fixed sample of the step's texts at fp32 and compares:
the mean overlap of each text's 10 nearest neighbours (within the sample) and the mean cosine between a
text's two vectors. Neighbour overlap is what mining depends on (positives and negatives are neighbours);
below `AGREEMENT_WARN` the mining asset's check warns (non-blocking).
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
from pydantic import BaseModel

AGREEMENT_SAMPLE = 256
AGREEMENT_WARN = 0.98


class Agreement(BaseModel):
    """Reduced-precision vectors against fp32 on `sample` texts of one step."""

    precision: str
    sample: int
    top10_overlap: float
    mean_cosine: float
    min_cosine: float

    @property
    def ok(self) -> bool:
        return self.top10_overlap >= AGREEMENT_WARN


def agreement_sample(texts: Sequence[str], n: int = AGREEMENT_SAMPLE) -> list[str]:
    """The `n` distinct texts with the smallest SHA-256: fixed for a set of texts whatever their order, and
    spread over labels and lengths as the set is."""
    digest = {t: hashlib.sha256(t.encode("utf-8")).digest() for t in texts}
    return sorted(digest, key=digest.__getitem__)[:n]


def neighbour_overlap(a: np.ndarray, b: np.ndarray, k: int = 10) -> float:
    """Mean fraction of each row's `k` nearest neighbours (inner product, itself excluded) that `a` and `b`
    share; rows of `a` and `b` are the same texts. 1.0 when there are too few rows to have neighbours."""
    n = len(a)
    k = min(k, n - 1)
    if k < 1:
        return 1.0

    def knn(x: np.ndarray) -> np.ndarray:
        sim = x @ x.T
        np.fill_diagonal(sim, -np.inf)
        return np.argpartition(-sim, k - 1, axis=1)[:, :k]

    na, nb = knn(a), knn(b)
    return float(np.mean([len(np.intersect1d(na[i], nb[i], assume_unique=True)) / k for i in range(n)]))


def measure_agreement(reduced: np.ndarray, reference: np.ndarray, precision: str) -> Agreement:
    """`reduced` and `reference` (fp32): L2-normalised vectors of the same texts, row for row."""
    cos = (reduced.astype(np.float64) * reference).sum(axis=1)
    return Agreement(precision=precision, sample=len(reduced), top10_overlap=round(neighbour_overlap(reduced, reference), 4),
                     mean_cosine=round(float(cos.mean()), 6), min_cosine=round(float(cos.min()), 6))
