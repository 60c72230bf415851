"""The published triplets, grouped by task and shuffled within each task, without a sorted copy.

At GIST's size the triplets are ~3 GB of text. Sorting them into task order with one `take` held the
unsorted and the sorted table at once; here the order is a permutation over the one unsorted table, and
each shard takes its own rows when it is written, so a build holds the rows once plus one shard.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from pipeline.road.miner import task_rng
from pipeline.schema import PL_SCHEMA, SCHEMA


def to_published_arrow(frame: pl.DataFrame) -> pa.Table:
    """`frame` in the published Arrow schema, one column at a time: each polars column is released once it is
    converted, so the conversion of MEDI's 1.4M rows never holds two copies of them."""
    frame = frame.cast(PL_SCHEMA)
    arrays = []
    for field in SCHEMA:
        arrays.append(frame.get_column(field.name).to_arrow().cast(field.type))
        frame = frame.drop(field.name)
    return pa.Table.from_arrays(arrays, schema=SCHEMA)


def content_bytes(table: pa.Table) -> np.ndarray:
    """Bytes per row as the published schema holds them (string bytes + a 4-byte offset, fixed widths), so a
    part's size depends on its rows only, not on how they happen to be chunked or sliced in memory."""
    sizes = np.zeros(table.num_rows, dtype=np.int64)
    for field in table.schema:
        if pa.types.is_string(field.type):
            lengths = pc.fill_null(pc.binary_length(table.column(field.name)), 0)
            sizes += lengths.to_numpy().astype(np.int64) + 4
        else:
            sizes += max(1, field.type.bit_width // 8)
    return sizes


class TaskRows(BaseModel):
    """One task's rows in the grouped order (and in the build report and the card)."""

    task_type: str
    task_name: str
    rows: int


def shuffle_seed_name(task_type: str, task_name: str) -> str:
    """The name a task's within-task shuffle is seeded by (`task_rng`): kept as published versions have it."""
    return f"{task_type}\x00{task_name}"


@dataclass(frozen=True)
class Part:
    """One `task_type`'s rows: positions [start, stop) of the grouped order."""

    task_type: str
    start: int
    stop: int


class TaskGrouped:
    """Rows grouped by (task_type, task_name), each task's rows in a seeded shuffle: row i is
    `table[order[i]]`. What GIST's trainer needs (batches that never mix tasks) and what the
    per-task configs are cut from."""

    def __init__(self, table: pa.Table, order: np.ndarray, groups: list[TaskRows]):
        self.table, self.order = table, order
        self._sizes = content_bytes(table)
        self._groups = groups

    @classmethod
    def of(cls, frames: list[pl.DataFrame], seed: int) -> "TaskGrouped":
        """Consumes `frames` (emptied as each is converted), so the sources' rows exist once, as Arrow."""
        tables = []
        while frames:
            tables.append(to_published_arrow(frames.pop(0)))
        table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
        del tables
        tasks = pl.from_arrow(table.select(["task_type", "task_name"])).cast(pl.String)
        groups = tasks.unique().sort(["task_type", "task_name"]).with_row_index("code")
        codes = tasks.join(groups, on=["task_type", "task_name"], how="left", maintain_order="left") \
            .get_column("code").to_numpy().astype(np.int64)
        del tasks
        sizes = np.bincount(codes, minlength=groups.height)
        keys = np.empty(table.num_rows, dtype=np.float64)
        for g, (_, task_type, task_name) in enumerate(groups.iter_rows()):
            at = np.flatnonzero(codes == g)
            keys[at] = task_rng(seed, shuffle_seed_name(task_type, task_name)).random(len(at))
        order = np.lexsort((keys, codes))
        return cls(table, order, [TaskRows(task_type=t, task_name=n, rows=int(k))
                                  for (_, t, n), k in zip(groups.iter_rows(), sizes)])

    @classmethod
    def presorted(cls, table: pa.Table) -> "TaskGrouped":
        """A table already in task order, taken as it is."""
        table = table.cast(SCHEMA)
        df = pl.from_arrow(table.select(["task_type", "task_name"]))
        runs = df.with_columns(run=pl.struct("task_type", "task_name").rle_id())
        sizes = runs.group_by("run", maintain_order=True).agg(pl.col("task_type").first(), pl.col("task_name").first(),
                                                              pl.len())
        return cls(table, np.arange(table.num_rows),
                   [TaskRows(task_type=t, task_name=n, rows=int(k)) for _, t, n, k in sizes.iter_rows()])

    @property
    def num_rows(self) -> int:
        return self.table.num_rows

    def nbytes(self, start: int = 0, stop: int | None = None) -> int:
        return int(self._sizes[self.order[start:stop]].sum())

    def rows(self, start: int, stop: int, columns: list[str] | None = None) -> pa.Table:
        """Rows [start, stop) of the grouped order (only `columns`, if given), as a new table."""
        table = self.table if columns is None else self.table.select(columns)
        return table.take(pa.array(self.order[start:stop]))

    def column_nbytes(self, columns: list[str]) -> int:
        """All rows' content bytes (as `content_bytes` counts them) in `columns` alone."""
        return int(content_bytes(self.table.select(columns)).sum())

    def to_table(self) -> pa.Table:
        return self.rows(0, self.num_rows)

    def tasks(self) -> list[TaskRows]:
        """Each task's rows, in the grouped order."""
        return list(self._groups)

    def parts(self) -> list[Part]:
        """The grouped order cut at its `task_type` boundaries: one part per per-task config."""
        parts: list[Part] = []
        at = 0
        for task in self._groups:
            if parts and parts[-1].task_type == task.task_type:
                parts[-1] = Part(task.task_type, parts[-1].start, at + task.rows)
            else:
                parts.append(Part(task.task_type, at, at + task.rows))
            at += task.rows
        return parts
