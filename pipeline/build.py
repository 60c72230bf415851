"""Assemble MEDI rows and mined triplets into the published schema and write Hub-style shards.

Rows are grouped by task (GIST's trainer skips batches that mix tasks) and shuffled deterministically
within each task; the same inputs, config and seed give byte-identical shards and card.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Callable

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline import atomic, faults
from pipeline.config import TaskSource
from pipeline.mine import MinedTriplets, task_rng
from pipeline.text import slug

SCHEMA = pa.schema([
    ("query", pa.string()), ("pos", pa.string()), ("neg", pa.string()),
    ("task_name", pa.string()), ("task_type", pa.string()),
    ("query_instruct", pa.string()), ("pos_instruct", pa.string()), ("neg_instruct", pa.string()),
    ("symmetric", pa.bool_()),
    ("source", pa.string()), ("query_label", pa.string()), ("neg_label", pa.string()),
    ("pos_score", pa.float32()), ("neg_score", pa.float32()),
])
PL_SCHEMA = pl.Schema(pl.from_arrow(SCHEMA.empty_table()).schema)
ROW_GROUP_SIZE = 10_000


def task_type_of(src: TaskSource) -> str:
    """`mteb_<slug>` for MTEB tasks and only them; `local_<slug>` for other labelled files."""
    from pipeline.registry import MTEB_TASKS

    return MTEB_TASKS[src.name].task_type if src.is_mteb else f"local_{slug(src.name)}"


def triplet_frame(split: pl.DataFrame, mined: MinedTriplets, src: TaskSource) -> pl.DataFrame:
    """Mined index triplets as rows of the published schema."""
    text = split.get_column("text")
    label = split.get_column("label_text")
    n = len(mined.query)
    return pl.DataFrame({
        "query": text.gather(mined.query), "pos": text.gather(mined.pos), "neg": text.gather(mined.neg),
        "task_name": [src.name] * n, "task_type": [task_type_of(src)] * n,
        "query_instruct": [""] * n, "pos_instruct": [""] * n, "neg_instruct": [""] * n,
        "symmetric": [True] * n,
        "source": ["mteb" if src.is_mteb else "local"] * n,
        "query_label": label.gather(mined.query), "neg_label": label.gather(mined.neg),
        "pos_score": mined.pos_score.astype(np.float32), "neg_score": mined.neg_score.astype(np.float32),
    }, schema=PL_SCHEMA)


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
