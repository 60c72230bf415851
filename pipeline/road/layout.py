"""The published configs of a version (the registry `CONFIGS`: name, card text, schema, how each derived
table is made), where each lives in the repo, and how its parquet is written.

A version is one Hub dataset repo with several configs and no file stored twice:
- `default`: every triplet, task-grouped: `data/*/train-*` (read in path order, which is task order);
- one config per `task_type` (`medi`, `mteb_banking77`, ...): `data/<task_type>/train-*`, the same files;
- `triplets`: the default's rows, same order, as `anchor, positive, negative` only (what a trainer feeds as
  inputs): `triplets/train-*`; the one config that repeats text (a config cannot rename the default's columns);
- `ntuple`: one row per mined query with its k negatives, `anchor, positive, negative_1..k, scores`:
  `ntuple/train-*`; `ntuple_tasks`: row i's task: `ntuple_tasks/train-*`;
- `candidates` and `corpus`: each mined query's guide-ranked other-label candidates, as ids into the
  task's texts: `candidates/train-*`, `corpus/train-*`.

Shards follow the Hub's `train-0000i-of-0000N.parquet` naming. Row groups are sized by bytes (well under
the dataset viewer's 300 MB scan limit), the page index is written, and content-defined chunking is on
where pyarrow has it, so a version that changes one task re-uploads little; output stays byte-identical
for the same input.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.schema import CANDIDATES_ARROW, CORPUS_ARROW, SCHEMA, TRIPLETS_ARROW

ROW_GROUP_BYTES = 64 * 1024**2  # in memory, per row group


@dataclass(frozen=True)
class ConfigFiles:
    """One config of a version: its name and the data-files glob the card declares for it."""

    name: str
    pattern: str

    @property
    def folder(self) -> str:
        """Where the config's shards are written: the pattern's folder (`data/<task_type>`, `triplets`, ...)."""
        return self.pattern.rsplit("/", 1)[0]

    def files(self, folder: Path) -> list[Path]:
        return sorted(Path(folder).glob(self.pattern))


# Row i of `ntuple_tasks` is the task of row i of `ntuple` (the n-tuples carry no text that is not an input).
NTUPLE_TASKS_ARROW = pa.schema([("task_type", pa.string()), ("task_name", pa.string())])


def ntuple_schema(k: int) -> pa.Schema:
    """The `ntuple` config: one row per mined query, as sentence-transformers' `mine_hard_negatives` writes its
    n-tuples: `anchor, positive, negative_1..negative_k`, then `scores`, the guide's similarities of the query
    to the positive and to each negative (the trainer's collator takes `scores` as the label, not as an input)."""
    return pa.schema([("anchor", pa.string()), ("positive", pa.string()),
                      *[(f"negative_{j}", pa.string()) for j in range(1, k + 1)],
                      ("scores", pa.list_(pa.float32()))])


@dataclass
class MinedTables:
    """The mined tasks' frames as the build read them, in task order: what the derived configs are made of."""

    triplets: list[pl.DataFrame]
    candidates: list[pl.DataFrame] = field(default_factory=list)
    corpus: list[pl.DataFrame] = field(default_factory=list)
    k: int = 1  # mining.negatives_per_query

    @functools.cached_property
    def ntuples(self) -> pl.DataFrame | None:
        """One row per mined query that has `k` negatives, in the guide's rank order (the triplet rows list each
        query's negatives in that order), task by task; None when nothing was mined."""
        frames = [f for f in self.triplets if f.height]
        if not frames:
            return None
        rows = (pl.concat(frames).group_by(["task_type", "task_name", "query", "pos"], maintain_order=True)
                .agg(pl.col("pos_score").first(), pl.col("neg"), pl.col("neg_score"))
                .filter(pl.col("neg").list.len() == self.k))
        return rows.with_columns(
            *[pl.col("neg").list.get(j).alias(f"negative_{j + 1}") for j in range(self.k)],
            scores=pl.concat_list(pl.col("pos_score"), pl.col("neg_score")),
        ).rename({"query": "anchor", "pos": "positive"}).sort("task_type", "task_name", maintain_order=True)


def _ntuple_columns(schema: pa.Schema, mined: MinedTables) -> pa.Table:
    rows = mined.ntuples
    return schema.empty_table() if rows is None else rows.select(schema.names).to_arrow().cast(schema)


def stacked(frames: list[pl.DataFrame], schema: pa.Schema, order: list[str]) -> pa.Table:
    """Per-task tables as one, sorted by `order` (task first), in the given schema."""
    frames = [f for f in frames if f.height]
    if not frames:
        return schema.empty_table()
    return pl.concat(frames).sort(order).to_arrow().cast(schema)


@dataclass(frozen=True)
class PublishedConfig:
    """A published config besides the per-task ones: its name, what the card says of it, its schema and how its
    table is made from the mined tasks (None: written from the default's rows, as `default` and `triplets` are)."""

    name: str
    doc: str
    schema: Callable[[int], pa.Schema]  # given k = mining.negatives_per_query (only `ntuple` depends on it)
    table: Callable[[MinedTables], pa.Table] | None = None

    @property
    def files(self) -> ConfigFiles:
        return ConfigFiles(self.name, "data/*/train-*.parquet" if self.name == "default" else
                           f"{self.name}/train-*.parquet")

    def made(self, mined: MinedTables) -> pa.Table:
        """The config's table, held to its schema: a builder that drifts from it fails the build, naming it."""
        table = self.table(mined)
        if not table.schema.equals(expected := self.schema(mined.k)):
            raise ValueError(f"config {self.name!r}: the build's table has schema {table.schema}, the registry "
                             f"{expected}")
        return table


# The registry of published configs, in the order the card declares them: the build makes each derived one's
# table here and writes it, the card takes their files, schemas and text, and a test holds the README's table to
# it. A config made from what mining already wrote is one entry here (and its test).
CONFIGS = (
    PublishedConfig("default", "every row, grouped by task (the files of all per-task configs)", lambda k: SCHEMA),
    PublishedConfig("triplets", "the default's rows in the same order, as `anchor, positive, negative` only: a "
                                "trainer's inputs", lambda k: TRIPLETS_ARROW),
    PublishedConfig("ntuple", "one row per mined query: `anchor, positive, negative_1..negative_k` (k = "
                              "mining.negatives_per_query), then `scores`: the guide's similarity of the anchor to the "
                              "positive and to each negative", ntuple_schema,
                    lambda m: _ntuple_columns(ntuple_schema(m.k), m)),
    PublishedConfig("ntuple_tasks", "row i: `task_type, task_name` of `ntuple` row i", lambda k: NTUPLE_TASKS_ARROW,
                    lambda m: _ntuple_columns(NTUPLE_TASKS_ARROW, m)),
    PublishedConfig("candidates", "per mined query: `pos_id` and the guide-ranked other-label `candidate_ids` / "
                                  "`candidate_scores` (ids into `corpus`, same task)", lambda k: CANDIDATES_ARROW,
                    lambda m: stacked(m.candidates, CANDIDATES_ARROW, ["task_type", "task_name", "query_id"])),
    PublishedConfig("corpus", "the mined tasks' texts by `id` (per task), with their label", lambda k: CORPUS_ARROW,
                    lambda m: stacked(m.corpus, CORPUS_ARROW, ["task_type", "task_name", "id"])),
)
TASK_CONFIG_DOC = "one task's triplets (`task_type` = the name)"
_CDC = "use_content_defined_chunking" in inspect.signature(pq.write_table).parameters


def task_config(task_type: str) -> ConfigFiles:
    return ConfigFiles(task_type, f"data/{task_type}/train-*.parquet")


DEFAULT = CONFIGS[0].files


def extra_configs() -> tuple[str, ...]:
    """The configs besides `default` and the per-task ones, in registry order (read when asked, not at import)."""
    return tuple(c.name for c in CONFIGS if c.name != "default")


def published_config(name: str) -> PublishedConfig:
    found = next((c for c in CONFIGS if c.name == name and name != "default"), None)
    if found is None:
        raise ValueError(f"unknown config {name!r}: the configs besides the per-task ones are {extra_configs()}")
    return found


def extra_config(name: str) -> ConfigFiles:
    return published_config(name).files


def config_doc(name: str) -> str:
    """What the card says of config `name` (a name not listed is a per-task config)."""
    return next((c.doc for c in CONFIGS if c.name == name), TASK_CONFIG_DOC)


def derived_tables(mined: MinedTables) -> dict[str, pa.Table]:
    """Every config made from the mined tasks, by name, in registry order, each held to its schema."""
    return {c.name: c.made(mined) for c in CONFIGS if c.table is not None}


def extra_schemas(k: int) -> dict[str, pa.Schema]:
    """The schemas of the configs besides `default` and the per-task ones, as the card lists them."""
    return {c.name: c.schema(k) for c in CONFIGS if c.name != "default"}


def config_files(name: str, kind: str) -> ConfigFiles:
    """Config `name`'s files: `kind` "task" is a per-task config (the default's own files), else an extra one."""
    return task_config(name) if kind == "task" else extra_config(name)


def shard_names(prefix: str, n: int) -> list[str]:
    return [f"{prefix}/train-{i:05d}-of-{n:05d}.parquet" for i in range(n)]


def rows_per_group(table: pa.Table) -> int:
    """Rows per row group so that one group holds about `ROW_GROUP_BYTES` in memory."""
    if table.num_rows == 0:
        return 1
    return max(1, min(table.num_rows, math.floor(ROW_GROUP_BYTES / max(1.0, table.nbytes / table.num_rows))))


def write_parquet(table: pa.Table, path: Path) -> None:
    extra = {"use_content_defined_chunking": True} if _CDC else {}
    pq.write_table(table, path, row_group_size=rows_per_group(table), compression="zstd", write_statistics=True,
                   write_page_index=True, **extra)


def write_shards(table: pa.Table, folder: Path, prefix: str, max_shard_bytes: int) -> list[str]:
    """`<prefix>/train-0000i-of-0000N.parquet` under `folder`, each at most about `max_shard_bytes` in memory."""
    return write_parts(table.num_rows, table.nbytes, table.slice, folder, prefix, max_shard_bytes)


def write_parts(num_rows: int, nbytes: int, rows: Callable[[int, int], pa.Table], folder: Path, prefix: str,
                max_shard_bytes: int, each: Callable[[pa.Table], None] | None = None) -> list[str]:
    """Shards of `num_rows` rows (`nbytes` in all), each asked of `rows(offset, length)` only when it is written,
    so that only one shard is ever materialised; `each` sees every shard after it is written."""
    n = max(1, math.ceil(nbytes / max_shard_bytes))
    per = math.ceil(num_rows / n) if num_rows else 0
    (folder / prefix).mkdir(parents=True, exist_ok=True)
    names = shard_names(prefix, n)
    for i, name in enumerate(names):
        shard = rows(i * per, min(per, max(0, num_rows - i * per)))
        write_parquet(shard, folder / name)
        if each is not None:
            each(shard)
        del shard
        pa.default_memory_pool().release_unused()  # hand the shard's pages back before the next one is taken
    return names
