"""The mining stage: one task's split embedded by the guide, mined (`pipeline.road.miner`), and written as the
task's triplets, candidates and corpus in the published schemas."""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import polars as pl
from pydantic import BaseModel

from pipeline.common import faults
from pipeline.common.accounting import RowAccount
from pipeline.common.plots import similarity_histogram
from pipeline.config import DecontaminationConfig, TaskSource
from pipeline.road.agreement import Agreement
from pipeline.road.decontaminate import near_duplicates, reference_fingerprint, reference_texts
from pipeline.road.embed import EmbedStats, GuideEncoder
from pipeline.road.model_ref import ModelRef
from pipeline.road.label_noise import CleanConfig, LabelNoiseReport, mine_auditing
from pipeline.road.mined import MinedTriplets, MiningStats
from pipeline.road.miner import MiningConfig, mine_triplets
from pipeline.schema import CANDIDATES_SCHEMA, CORPUS_SCHEMA, PL_SCHEMA
from pipeline.workspace import StageReport, StageSpec, Workspace

log = logging.getLogger(__name__)


def corpus_frame(split: pl.DataFrame, src: TaskSource) -> pl.DataFrame:
    """The texts a task's candidate ids point at: `id` is the row of the mined split."""
    return pl.DataFrame({"task_type": src.task_type, "task_name": src.name,
                         "id": pl.int_range(split.height, dtype=pl.Int64, eager=True),
                         "text": split.get_column("text"), "label": split.get_column("label_text")},
                        schema=CORPUS_SCHEMA)


def candidates_frame(mined: MinedTriplets, src: TaskSource) -> pl.DataFrame:
    """One row per mined query: its positive and its ranked other-label candidates, as corpus ids."""
    c = mined.candidates
    valid = c.ids >= 0
    return pl.DataFrame({
        "task_type": [src.task_type] * len(c.query), "task_name": [src.name] * len(c.query),
        "query_id": c.query, "pos_id": c.pos, "pos_score": c.pos_score,
        "candidate_ids": [row[ok].tolist() for row, ok in zip(c.ids, valid)],
        "candidate_scores": [row[ok].tolist() for row, ok in zip(c.scores, valid)],
    }, schema=CANDIDATES_SCHEMA)


def triplet_frame(split: pl.DataFrame, mined: MinedTriplets, src: TaskSource) -> pl.DataFrame:
    """Mined index triplets as rows of the published schema."""
    text = split.get_column("text")
    label = split.get_column("label_text")
    n = len(mined.query)
    return pl.DataFrame({
        "query": text.gather(mined.query), "pos": text.gather(mined.pos), "neg": text.gather(mined.neg),
        "task_name": [src.name] * n, "task_type": [src.task_type] * n,
        "query_instruct": [""] * n, "pos_instruct": [""] * n, "neg_instruct": [""] * n,
        "symmetric": [True] * n,
        "source": ["mteb" if src.is_mteb else "local"] * n,
        "query_label": label.gather(mined.query), "neg_label": label.gather(mined.neg),
        "pos_score": mined.pos_score.astype(np.float32), "neg_score": mined.neg_score.astype(np.float32),
    }, schema=PL_SCHEMA)


# ------------------------------------------------------------------------------------------------ the stage

# `mining.rounds` says how often the stage runs, never what one run makes (its guide does, and is hashed).
SPEC = StageSpec("triplets", version="4", ignore=frozenset({"mining.query_batch", "mining.rounds"}))


class GuideInfo(BaseModel):
    name: str
    revision: str
    cache_key: str


class MineReport(StageReport):
    account: RowAccount
    mining: MiningStats
    encode: EmbedStats
    plot: str
    guide: GuideInfo
    label_noise: LabelNoiseReport | None = None
    agreement: Agreement | None = None  # reduced-precision guide vs fp32 on a fixed sample; None at fp32


def mine_task(ws: Workspace, src: TaskSource, *, mining: MiningConfig, seed: int,
              decontamination: DecontaminationConfig, guide_ref: ModelRef, precision: str,
              guide: Callable[[], GuideEncoder], clean: CleanConfig = CleanConfig()) -> MineReport:
    """Embed a cleaned split with the guide and mine its triplets.

    `guide` is a factory, so that a rerun that finds the triplets up to date never loads the model;
    `guide_ref` and `precision` say which vectors it will give, for the fingerprint.
    """
    task = src.name
    threshold = decontamination.near_duplicate_threshold
    ident = SPEC.identify({"mining": mining, "clean": clean, "seed": seed, "near_duplicate_threshold": threshold,
                           "guide": guide_ref.identity(precision)},
                          {"split": ws.fingerprint_of(ws.split(task)),
                           "reference": reference_fingerprint(ws, threshold is not None)})
    if (done := ws.reuse(ws.triplets(task), ident, MineReport)) is not None:
        return done
    split = pl.read_parquet(ws.split(task))
    acc = RowAccount(source=f"{task} (mine)", rows_in=split.height)
    agreement = None
    if split.height:
        encoder = guide()
        emb, enc_stats = encoder.embed(split.get_column("text").to_list())
        info = GuideInfo(name=encoder.ref.name, revision=encoder.ref.revision, cache_key=encoder.key)
        agreement = encoder.agreement(split.get_column("text").to_list())
        faults.point("embed")
        tests = reference_texts(ws, task) if threshold is not None else []
        if tests:
            keep = ~near_duplicates(emb, encoder.vectors(tests), threshold)
            acc.drop("test_near_duplicate", int((~keep).sum()))
            split, emb = split.filter(pl.Series(keep)), emb[keep]
    else:  # ingest dropped every row (and counted why): nothing to embed, no model to load
        log.warning("%s: no eligible rows after cleaning (see its ingest drops): no triplets", task)
        emb, enc_stats = np.empty((0, 0), dtype=np.float32), EmbedStats(texts=0, unique=0, cached=0, encoded=0)
        info = GuideInfo(name=guide_ref.name, revision=guide_ref.revision, cache_key="")
    codes = split.get_column("label").cast(pl.Categorical).to_physical().to_numpy().astype(np.int64)
    mined, split, noise = mine_auditing(lambda e, c: mine_triplets(e, c, mining, seed=seed, task=task),
                                        emb, codes, split, clean, acc)
    frame = triplet_frame(split, mined, src)
    acc.rows_out = mined.stats.queries_with_triplet
    for reason, n in mined.stats.drops.items():
        acc.drop(reason, n)
    acc.check()
    faults.point("mine")
    ws.write_parquet(corpus_frame(split, src), ws.corpus(task))
    ws.write_parquet(candidates_frame(mined, src), ws.candidates(task))
    ws.write_parquet(frame, ws.triplets(task))
    plot = similarity_histogram(mined.pos_score, mined.neg_score, f"{task}: guide similarity",
                                ws.triplets(task).with_suffix(".png"))
    report = MineReport(account=acc, mining=mined.stats, encode=enc_stats, plot=str(plot), guide=info,
                        fingerprint=ident.fingerprint, label_noise=noise, agreement=agreement)
    ws.save_report(report, ws.triplets(task), ident)
    return report

