"""Assemble MEDI rows and mined triplets into the published schema and write Hub-style shards.

Rows are grouped by task (GIST's trainer skips batches that mix tasks) and shuffled deterministically
within each task; the same inputs, config and seed give byte-identical shards and card.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from pipeline.common import atomic, faults
from pipeline.common.accounting import RowAccount
from pipeline.config import BuildConfig
from pipeline.road import clean, decontaminate, mine
from pipeline.road.card import render_card
from pipeline.road.checks import CheckOutcome, verify_build
from pipeline.road.ingest import MediReport, SplitReport
from pipeline.road.mine import MineReport, task_rng
from pipeline.road.sources import describe_medi_source
from pipeline.schema import PL_SCHEMA, SCHEMA
from pipeline.workspace import StageSpec, Workspace

ROW_GROUP_SIZE = 10_000


def medi_frame(medi: pl.DataFrame) -> pl.DataFrame:
    """MEDI rows in the published schema; `symmetric` = same instruction on query and positive."""
    return medi.select(
        "query", "pos", "neg", "task_name",
        task_type=pl.lit("medi"),
        query_instruct="query_instruct", pos_instruct="pos_instruct", neg_instruct="neg_instruct",
        symmetric=pl.col("query_instruct") == pl.col("pos_instruct"),
        source=pl.lit("medi"),
        query_label=pl.lit(None, pl.String), neg_label=pl.lit(None, pl.String),
        pos_score=pl.lit(None, pl.Float32), neg_score=pl.lit(None, pl.Float32),
    ).cast(PL_SCHEMA)


def assemble(frames: list[pl.DataFrame], seed: int) -> pa.Table:
    """One table, grouped by (task_type, task_name), shuffled within each task by a seeded permutation."""
    df = pl.concat([f.cast(PL_SCHEMA) for f in frames], how="vertical") if frames else pl.DataFrame(schema=PL_SCHEMA)
    if df.height == 0:
        return df.to_arrow().cast(SCHEMA)
    groups = df.select(pl.concat_str("task_type", pl.lit("\x00"), "task_name").alias("g")).get_column("g")
    names, codes = np.unique(groups.to_numpy(), return_inverse=True)
    keys = np.empty(df.height, dtype=np.float64)
    for g, name in enumerate(names):
        at = np.flatnonzero(codes == g)
        keys[at] = task_rng(seed, str(name)).random(len(at))
    order = np.lexsort((keys, codes))
    return df[order].to_arrow().cast(SCHEMA)


def shard_count(table: pa.Table, max_shard_bytes: int) -> int:
    return max(1, math.ceil(table.nbytes / max_shard_bytes))


def write_shards(table: pa.Table, folder: Path, max_shard_bytes: int) -> list[str]:
    """`data/train-0000i-of-0000N.parquet`, row groups sized for streaming."""
    n = shard_count(table, max_shard_bytes)
    per = math.ceil(table.num_rows / n) if table.num_rows else 0
    (folder / "data").mkdir(parents=True, exist_ok=True)
    names = []
    for i in range(n):
        name = f"data/train-{i:05d}-of-{n:05d}.parquet"
        pq.write_table(table.slice(i * per, per), folder / name, row_group_size=ROW_GROUP_SIZE,
                       compression="zstd", write_statistics=True)
        names.append(name)
    return names


def content_hash(folder: Path) -> str:
    """sha256 over every file's path and bytes, in path order, hidden paths aside: the build's identity."""
    h = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)):
        h.update(path.relative_to(folder).as_posix().encode() + b"\x00")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


IDENTITY_COLUMNS = ["task_name", "task_type", "query", "pos", "neg", "query_instruct", "pos_instruct", "neg_instruct"]


def row_hashes(table: pa.Table) -> pl.DataFrame:
    """(task_type, task_name, 64-bit blake2b of the row's training content): what version diffs compare."""
    df = pl.from_arrow(table.select(IDENTITY_COLUMNS))
    joined = df.select(pl.concat_str([pl.col(c).fill_null("") for c in IDENTITY_COLUMNS], separator="\x1f"))[:, 0]
    digests = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "little") for s in joined]
    return pl.DataFrame({"task_type": df["task_type"], "task_name": df["task_name"],
                         "row_hash": pl.Series(digests, dtype=pl.UInt64)})


def per_task_counts(table: pa.Table) -> list[dict]:
    df = pl.from_arrow(table.select(["task_type", "task_name"]))
    return df.group_by("task_type", "task_name").len("rows").sort("task_type", "task_name").to_dicts()


def write_build(table: pa.Table, card: Callable[[int], str], dest: Path, max_shard_bytes: int) -> str:
    """Write shards + card (rendered given the shards' total bytes) into `dest` atomically; returns the content hash."""
    with atomic.atomic_dir(Path(dest)) as tmp:
        names = write_shards(table, tmp, max_shard_bytes)
        (tmp / "README.md").write_text(card(sum((tmp / n).stat().st_size for n in names)), encoding="utf-8")
        (tmp / ".gistforge").mkdir()
        row_hashes(table).write_parquet(tmp / ".gistforge" / "row_hashes.parquet")
        digest = content_hash(tmp)
        (tmp / ".gistforge-build.json").write_text(json.dumps({"content_hash": digest, "rows": table.num_rows}))
        faults.point("write")
    return digest


def read_build_hash(folder: Path) -> str:
    return json.loads((Path(folder) / ".gistforge-build.json").read_text())["content_hash"]


# ------------------------------------------------------------------------------------------------ the stage

class EmptyBuildError(ValueError):
    """Every source came out empty: there is nothing to publish."""


# Every row drop any stage makes, in the order the card lists them.
DROP_REASONS = {**clean.DROPS, **mine.DROPS, **decontaminate.DROPS}
# The build is always redone (it is cheap next to mining, and its checks must see the files it publishes);
# its version is the asset's code version.
SPEC = StageSpec("build", version="2")


class TaskRows(BaseModel):
    task_type: str
    task_name: str
    rows: int


class BuildReport(BaseModel):
    content_hash: str
    rows: int
    shards: list[str]
    tasks: list[TaskRows]
    accounts: list[RowAccount]
    excluded: dict[str, str]
    checks: list[CheckOutcome]


def build_dataset(ws: Workspace, cfg: BuildConfig) -> BuildReport:
    """Assemble MEDI + every included task's triplets into shards and a card (atomically), then check them."""
    frames = [medi_frame(pl.read_parquet(ws.medi_rows()))]
    accounts = [ws.load_report(ws.medi_rows(), MediReport).account]
    sources: dict = {"medi": describe_medi_source(cfg.medi) if cfg.medi else None, "tasks": []}
    guide = None
    for src in cfg.included_tasks:
        path = ws.triplets(src.name)
        if not path.exists():
            raise FileNotFoundError(f"no mined triplets for task {src.name!r} at {path}; materialise its partition first")
        frames.append(pl.read_parquet(path))
        ingest, mined = ws.load_report(ws.split(src.name), SplitReport), ws.load_report(path, MineReport)
        accounts += [ingest.account, mined.account]
        sources["tasks"].append(ingest.source)
        guide = mined.guide
    table = assemble(frames, cfg.seed)
    if table.num_rows == 0:
        raise EmptyBuildError(f"profile {cfg.profile!r}: no rows to publish (no MEDI rows and no mined triplets; "
                              "see each source's drops): an empty version is never published")
    tasks = per_task_counts(table)
    reference = ws.load_report(ws.test_texts(), decontaminate.ReferenceReport) if ws.test_texts().exists() else None
    card = functools.partial(
        render_card, repo_id=cfg.dataset_repo_id, schema=SCHEMA, num_rows=table.num_rows, num_bytes=table.nbytes,
        sources=sources, exclusions=cfg.exclusions,
        guide={"name": guide.name, "revision": guide.revision} if guide else
        {"name": cfg.guide_model, "revision": cfg.guide_revision or "n/a"},
        mining=cfg.mining.model_dump(), seed=cfg.seed, tasks=tasks, accounts=accounts, drop_reasons=DROP_REASONS,
        decontamination=cfg.decontamination, reference=reference,
    )
    digest = write_build(table, lambda size: card(download_size=size), ws.build_dir(), cfg.max_shard_bytes)
    shards = sorted(p.name for p in (ws.build_dir() / "data").glob("*.parquet"))
    checks = verify_build(ws.build_dir(), cfg.exclusions, accounts,
                          decontaminate.reference_keys(ws, cfg.decontamination))
    report = BuildReport(content_hash=digest, rows=table.num_rows, shards=shards,
                         tasks=[TaskRows(**t) for t in tasks], accounts=accounts, excluded=cfg.exclusions,
                         checks=checks)
    ws.save_report(report, ws.build_report())
    return report


def last_build(ws: Workspace) -> BuildReport:
    """The report of the workspace's current build."""
    return ws.load_report(ws.build_report(), BuildReport)
