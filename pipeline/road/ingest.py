"""Ingest: read a source, clean it and drop its exact test leaks; MEDI optionally loses near duplicates too.

Excluded tasks are refused, never read. Each stage writes one parquet file and its report.
"""

from __future__ import annotations

import logging
from typing import Callable

import numpy as np
import polars as pl

from pipeline.common import faults
from pipeline.common.accounting import RowAccount
from pipeline.config import DecontaminationConfig, MediSource, NetworkConfig, TaskSource
from pipeline.road.clean import clean_labelled, clean_medi
from pipeline.road.decontaminate import near_duplicate_texts, reference_fingerprint, reference_keys, reference_texts
from pipeline.road.sources import Provenance, load_medi, load_task_split, resolve
from pipeline.schema import MEDI_COLUMNS
from pipeline.workspace import StageReport, StageSpec, Workspace

log = logging.getLogger(__name__)

MEDI_SPEC = StageSpec("medi", version="3")  # 3: the report records the source's commit and licence
TASK_SPEC = StageSpec("split", version="4")  # 4: labels stripped, numbers in one spelling (canonical_label)


class MediReport(StageReport):
    account: RowAccount
    tasks: int
    source: Provenance | None = None  # for the card; None when the profile has no MEDI
    layout: str | None = None  # which snapshot layout the rows were read from (None: a local file, or no MEDI)
    files: list[str] = []  # the files read, relative to the snapshot (a local file: its name)


class SplitReport(StageReport):
    account: RowAccount
    labels: int
    source: Provenance
    layout: str | None = None  # which snapshot layout the split was read from (None: a local file)
    files: list[str] = []  # the files read, relative to the snapshot (a local file: its name)


Embed = Callable[[list[str]], np.ndarray]


def ingest_medi(ws: Workspace, medi: MediSource | None, decontamination: DecontaminationConfig,
                guide: dict | None = None, embed: Callable[[], Embed] | None = None,
                network: NetworkConfig = NetworkConfig()) -> MediReport:
    """Load and clean MEDI (an empty frame when the profile has none).

    For the optional near-duplicate pass, `guide` is the guide's identity as resolved (`ModelRef.identity`:
    name, exact revision, precision), so a changed local guide or precision redoes the pass, and `embed` is a
    factory of its embed function, called only when that pass runs: a reused stage never loads the model.
    """
    threshold = decontamination.near_duplicate_threshold
    found = resolve(medi, network.budget()) if medi else None  # once: the fingerprint, rows and card name one commit
    ident = MEDI_SPEC.identify(
        {"medi": medi, "decontamination": decontamination, "guide": guide if threshold is not None else None},
        {"source": found and found.identity,
         "reference": reference_fingerprint(ws, decontamination.exact or threshold is not None)})
    if (done := ws.reuse(ws.medi_rows(), ident, MediReport)) is not None:
        return done
    if medi is None:
        df, acc = clean_medi(pl.DataFrame(schema={c: pl.String for c in MEDI_COLUMNS}), "MEDI (none configured)")
    else:
        df, acc = clean_medi(load_medi(found), "MEDI", reference_keys(ws, decontamination))
    tests = reference_texts(ws) if threshold is not None and df.height and embed is not None else []
    if tests:
        texts = pl.concat([df.get_column(c) for c in ("query", "pos", "neg")]).unique(maintain_order=True)
        near = pl.Series(sorted(near_duplicate_texts(texts, tests, embed(), threshold)), dtype=pl.String)
        flagged = df.select(pl.any_horizontal(pl.col(c).is_in(near) for c in ("query", "pos", "neg"))).to_series()
        acc.drop("test_near_duplicate", int(flagged.sum()))
        acc.rows_out -= int(flagged.sum())
        df = df.filter(~flagged)
    acc.check()
    ws.write_parquet(df, ws.medi_rows())
    layout, files = found.read_from() if found else (None, [])
    report = MediReport(account=acc, tasks=df.get_column("task_name").n_unique(), source=found and found.provenance,
                        layout=layout, files=files, fingerprint=ident.fingerprint)
    ws.save_report(report, ws.medi_rows(), ident)
    return report


def ingest_task(ws: Workspace, src: TaskSource, decontamination: DecontaminationConfig,
                exclusions: dict[str, str], network: NetworkConfig = NetworkConfig()) -> SplitReport:
    """Load and clean one task's train split for mining."""
    if src.name in exclusions:
        raise ValueError(f"task {src.name!r} is excluded ({exclusions[src.name]}); it is never ingested")
    found = resolve(src, network.budget())  # once: the fingerprint, rows and card name one commit
    ident = TASK_SPEC.identify({"source": src, "decontamination.exact": decontamination.exact},
                               {"source": found.identity,
                                "reference": reference_fingerprint(ws, decontamination.exact)})
    if (done := ws.reuse(ws.split(src.name), ident, SplitReport)) is not None:
        return done
    keys = reference_keys(ws, decontamination)
    df, acc = clean_labelled(load_task_split(found), f"{src.name} (ingest)", keys)
    faults.point("ingest")
    ws.write_parquet(df, ws.split(src.name))
    layout, files = found.read_from()
    report = SplitReport(account=acc, labels=df.get_column("label").n_unique(), source=found.provenance,
                         layout=layout, files=files, fingerprint=ident.fingerprint)
    ws.save_report(report, ws.split(src.name), ident)
    return report
