"""Decontamination: training texts must not be texts of the MTEB test splits the model is evaluated on.

This stage collects the reference (every included task's test texts, with their normalised 64-bit keys);
`clean` drops exact matches (`test_leak`) during ingest, and `near_duplicates` finds paraphrases with any
embedding function for the optional guide-model pass.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import polars as pl
from tqdm.auto import tqdm

from pipeline.common.text import text_keys
from pipeline.common.retry import RetryBudget
from pipeline.config import DecontaminationConfig, NetworkConfig, TaskSource
from pipeline.registry import get_task
from pipeline.road.sources import ResolvedSource, labelled_frame, load_split, read_local, resolve, resolved
from pipeline.workspace import StageReport, StageSpec, Workspace

log = logging.getLogger(__name__)

DROPS = {
    "test_leak": "the text (for MEDI: query, pos or neg) equals an MTEB test-split text after normalisation",
    "test_near_duplicate": "the guide model finds the text a near duplicate of a same-task test text",
}

SPEC = StageSpec("test_texts", version="2")


class ReferenceReport(StageReport):
    test_texts: int
    per_task: dict[str, int]
    not_decontaminated: dict[str, str] = {}  # task -> why it has no test split to check against


def no_test_split(src: TaskSource) -> str | None:
    """Why a task truly has no test split (said so by its config or the registry); None when it has one."""
    if src.kind == "local":
        return None if src.test_path else "local task with no `test_path` in the config"
    if get_task(src.name).test_split is None:
        return "the registry records no test split for this task"
    return None


def load_test_split(source: TaskSource | ResolvedSource, budget: RetryBudget | None = None) -> pl.DataFrame | None:
    """The task's held-out test split as `text, label, label_text`; None only when it truly has none.

    A test split that should exist but cannot be read fails (a `SourceError`): a leak check that quietly
    checks less must never happen.
    """
    src = source.source if isinstance(source, ResolvedSource) else source
    if no_test_split(src):
        return None
    found = resolved(source, budget)
    if found.folder is None:
        return labelled_frame(read_local(Path(src.test_path), f"local task {src.name} test"), src, src.name)
    task = get_task(src.name)
    label = f"{found.label} test"
    return labelled_frame(load_split(found, task.config, task.test_split, label), src, label)


def collect_test_texts(ws: Workspace, tasks: Sequence[TaskSource],
                       network: NetworkConfig = NetworkConfig()) -> ReferenceReport:
    """The decontamination reference: `task, text, key` of every given task's test split."""
    budget = network.budget()
    sources = [resolve(src, budget) for src in tasks]  # once each: the fingerprint and the texts name one commit
    ident = SPEC.identify({"tasks": [src.model_dump(mode="json") for src in tasks]},
                          {"sources": [s.identity for s in sources]})
    if (done := ws.reuse(ws.test_texts(), ident, ReferenceReport)) is not None:
        return done
    frames = []
    for src, found in zip(tasks, sources):
        test = load_test_split(found)
        if test is not None:
            frames.append(test.select(pl.lit(src.name).alias("task"), "text").filter(pl.col("text").is_not_null()))
    df = pl.concat(frames) if frames else pl.DataFrame(schema={"task": pl.String, "text": pl.String})
    df = df.with_columns(key=pl.Series(text_keys(df.get_column("text")), dtype=pl.UInt64))
    ws.write_parquet(df, ws.test_texts())
    missing = {src.name: why for src in tasks if (why := no_test_split(src))}
    for task, why in missing.items():
        log.warning("%s is not decontaminated: %s", task, why)
    report = ReferenceReport(test_texts=df.height, per_task=dict(df.group_by("task").len().sort("task").iter_rows()),
                             not_decontaminated=missing, fingerprint=ident.fingerprint)
    ws.save_report(report, ws.test_texts(), ident)
    return report


def reference_keys(ws: Workspace, cfg: DecontaminationConfig) -> np.ndarray | None:
    """The reference's keys for exact decontamination; None when it is switched off."""
    if not cfg.exact:
        return None
    if not ws.test_texts().exists():
        raise FileNotFoundError(f"decontamination reference {ws.test_texts()} is missing: materialise "
                                "`mteb_test_texts` first (or set decontamination.exact: false)")
    return pl.read_parquet(ws.test_texts(), columns=["key"]).get_column("key").unique().to_numpy()


def reference_fingerprint(ws: Workspace, used: bool) -> str | None | bool:
    """What a stage depends on of the reference: its fingerprint when the stage `used` it (exact leaks, near
    duplicates), else False; the one spelling every decontaminating stage's identity uses."""
    return used and ws.fingerprint_of(ws.test_texts())


def reference_texts(ws: Workspace, task: str | None = None) -> list[str]:
    """The reference's texts (of one task, or all), for the near-duplicate pass."""
    if not ws.test_texts().exists():
        return []
    df = pl.read_parquet(ws.test_texts(), columns=["task", "text"])
    if task is not None:
        df = df.filter(pl.col("task") == task)
    return df.get_column("text").to_list()


def near_duplicate_texts(texts: Sequence[str], tests: Sequence[str], vectors: Callable[[list[str]], np.ndarray],
                         threshold: float, block: int = 65_536) -> set[str]:
    """The `texts` whose guide vector is within `threshold` of a test text's, encoded a block at a time: MEDI
    has ~4M distinct texts, whose vectors at once would be 12 GB for a 768-dimension guide."""
    if not len(texts) or not len(tests):
        return set()
    test_vectors = vectors(list(tests))
    near: set[str] = set()
    for start in tqdm(range(0, len(texts), block), desc="near-duplicate pass", unit="block", disable=None):
        chunk = list(texts[start:start + block])
        near.update(t for t, hit in zip(chunk, near_duplicates(vectors(chunk), test_vectors, threshold)) if hit)
    return near


def near_duplicates(vectors: np.ndarray, test_vectors: np.ndarray, threshold: float,
                    block: int = 4096) -> np.ndarray:
    """Mask of the texts (as L2-normalised guide vectors) whose cosine similarity to their nearest test text
    reaches `threshold`; exact, by blocks of matrix products, so memory is one block of similarities."""
    if not len(vectors) or not len(test_vectors):
        return np.zeros(len(vectors), dtype=bool)
    best = np.empty(len(vectors), dtype=np.float32)
    for s in range(0, len(vectors), block):
        best[s:s + block] = (vectors[s:s + block] @ test_vectors.T).max(axis=1)
    return best >= threshold
