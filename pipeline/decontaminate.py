"""Decontamination: training texts must not be texts of the MTEB test splits the model is evaluated on.

Texts are compared after `pipeline.text.normalise` (NFKC, case-fold, whitespace collapse) through
64-bit blake2b keys, so the reference set of every test text fits in memory as one integer array.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
import polars as pl

from pipeline.config import BuildConfig, TaskSource
from pipeline.registry import get_task
from pipeline.sources import SourceError, _load_folder, _read_local, hub_snapshot, labelled_frame
from pipeline.text import normalise

log = logging.getLogger(__name__)


def text_keys(texts: pl.Series) -> np.ndarray:
    """64-bit keys of normalised texts (0 for a missing text, which never matches a real key)."""
    out = np.zeros(len(texts), dtype=np.uint64)
    for i, t in enumerate(texts.to_list()):
        if t is not None:
            out[i] = int.from_bytes(hashlib.blake2b(normalise(t).encode(), digest_size=8).digest(), "little") | 1
    return out


def load_test_split(src: TaskSource) -> pl.DataFrame | None:
    """The task's held-out test split as `text, label, label_text`, or None when the source has none."""
    if src.kind == "local":
        if src.test_path is None:
            return None
        return labelled_frame(_read_local(Path(src.test_path), f"local task {src.name} test"), src, src.name)
    task = get_task(src.name)
    revision = src.revision or task.revision
    folder = hub_snapshot(task.hub_id, revision, src.cache_dir, local_files_only=src.cache_dir is not None)
    try:
        raw = _load_folder(folder, f"{src.name} ({task.hub_id}@{revision}) test", task.config, task.test_split)
    except SourceError:
        log.warning("%s has no %r split at %s; nothing to decontaminate against", src.name, task.test_split, revision)
        return None
    return labelled_frame(raw, src, src.name)


def collect_test_texts(cfg: BuildConfig) -> pl.DataFrame:
    """`task, text` of every included task's test split: the evaluation data to keep out of training."""
    frames = []
    for src in cfg.included_tasks:
        test = load_test_split(src)
        if test is not None:
            frames.append(test.select(pl.lit(src.name).alias("task"), "text").filter(pl.col("text").is_not_null()))
    if not frames:
        return pl.DataFrame(schema={"task": pl.String, "text": pl.String})
    return pl.concat(frames)


def leaked(texts: pl.Series, keys: np.ndarray) -> np.ndarray:
    """Mask of texts that equal (after normalisation) a test text."""
    return np.isin(text_keys(texts), keys) if len(keys) else np.zeros(len(texts), dtype=bool)
