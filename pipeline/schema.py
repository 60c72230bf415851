"""The published row schema and the `task_type` rule: the contract between mining, building and checking."""

from __future__ import annotations

import polars as pl
import pyarrow as pa

from pipeline.common.text import slug
from pipeline.config import TaskSource
from pipeline.registry import MTEB_TASKS

SCHEMA = pa.schema([
    ("query", pa.string()), ("pos", pa.string()), ("neg", pa.string()),
    ("task_name", pa.string()), ("task_type", pa.string()),
    ("query_instruct", pa.string()), ("pos_instruct", pa.string()), ("neg_instruct", pa.string()),
    ("symmetric", pa.bool_()),
    ("source", pa.string()), ("query_label", pa.string()), ("neg_label", pa.string()),
    ("pos_score", pa.float32()), ("neg_score", pa.float32()),
])
PL_SCHEMA = pl.Schema(pl.from_arrow(SCHEMA.empty_table()).schema)
MEDI_COLUMNS = ["query", "pos", "neg", "task_name", "query_instruct", "pos_instruct", "neg_instruct"]


def task_type_of(src: TaskSource) -> str:
    """`mteb_<slug>` for MTEB tasks and only them; `local_<slug>` for other labelled files."""
    return MTEB_TASKS[src.name].task_type if src.is_mteb else f"local_{slug(src.name)}"
