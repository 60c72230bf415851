"""Where each config of a version lives in the repo, and how its parquet is written.

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

import inspect
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.schema import CANDIDATES_ARROW, CORPUS_ARROW, NTUPLE_TASKS_ARROW, SCHEMA, TRIPLETS_ARROW, ntuple_schema

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


@dataclass(frozen=True)
class PublishedConfig:
    """A published config besides the per-task ones: its name, files, schema and what the card says of it."""

    name: str
    doc: str
    schema: Callable[[int], pa.Schema]  # given k = mining.negatives_per_query (only `ntuple` depends on it)

    @property
    def files(self) -> ConfigFiles:
        return ConfigFiles(self.name, "data/*/train-*.parquet" if self.name == "default" else
                           f"{self.name}/train-*.parquet")


# The registry of published configs, in the order the card declares them: the build writes and checks each
# one's table against its schema, the card takes its files, schema and text, and a test holds the README's
# table to it. A new config is one entry here, its table in `build`, and its test.
CONFIGS = (
    PublishedConfig("default", "every row, grouped by task (the files of all per-task configs)", lambda k: SCHEMA),
    PublishedConfig("triplets", "the default's rows in the same order, as `anchor, positive, negative` only: a "
                                "trainer's inputs", lambda k: TRIPLETS_ARROW),
    PublishedConfig("ntuple", "one row per mined query: `anchor, positive, negative_1..negative_k` (k = "
                              "mining.negatives_per_query), then `scores`: the guide's similarity of the anchor to the "
                              "positive and to each negative", ntuple_schema),
    PublishedConfig("ntuple_tasks", "row i: `task_type, task_name` of `ntuple` row i", lambda k: NTUPLE_TASKS_ARROW),
    PublishedConfig("candidates", "per mined query: `pos_id` and the guide-ranked other-label `candidate_ids` / "
                                  "`candidate_scores` (ids into `corpus`, same task)", lambda k: CANDIDATES_ARROW),
    PublishedConfig("corpus", "the mined tasks' texts by `id` (per task), with their label", lambda k: CORPUS_ARROW),
)
TASK_CONFIG_DOC = "one task's triplets (`task_type` = the name)"
EXTRA_CONFIGS = tuple(c.name for c in CONFIGS if c.name != "default")
_BY_NAME = {c.name: c for c in CONFIGS}
_CDC = "use_content_defined_chunking" in inspect.signature(pq.write_table).parameters


def task_config(task_type: str) -> ConfigFiles:
    return ConfigFiles(task_type, f"data/{task_type}/train-*.parquet")


DEFAULT = _BY_NAME["default"].files


def published_config(name: str) -> PublishedConfig:
    if name not in EXTRA_CONFIGS:
        raise ValueError(f"unknown config {name!r}: the configs besides the per-task ones are {EXTRA_CONFIGS}")
    return _BY_NAME[name]


def extra_config(name: str) -> ConfigFiles:
    return published_config(name).files


def config_doc(name: str) -> str:
    """What the card says of config `name` (a name not listed is a per-task config)."""
    return _BY_NAME[name].doc if name in _BY_NAME else TASK_CONFIG_DOC


def checked_tables(tables: dict[str, pa.Table], k: int) -> dict[str, pa.Schema]:
    """The schemas of a build's extra configs (all but `default` and the per-task ones, `triplets` aside: it is
    written from the default's rows), each table held to its registry entry."""
    want = [c for c in EXTRA_CONFIGS if c != "triplets"]
    if sorted(tables) != sorted(want):
        raise ValueError(f"the build made configs {sorted(tables)}; the registry (layout.CONFIGS) has {sorted(want)}")
    for name, table in tables.items():
        if not table.schema.equals(expected := _BY_NAME[name].schema(k)):
            raise ValueError(f"config {name!r}: the build's table has schema {table.schema}, the registry {expected}")
    return {name: _BY_NAME[name].schema(k) for name in EXTRA_CONFIGS}


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
