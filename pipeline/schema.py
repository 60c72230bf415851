"""The published row schemas: the contract between mining, building, the registry of configs and the checks.
(The `task_type` rule is `pipeline.task_types`, applied by `TaskSource.task_type`.)"""

from __future__ import annotations

import polars as pl
import pyarrow as pa

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

# The `corpus` and `candidates` configs: each mined task's texts by id, and per mined query its positive and
# its guide-ranked other-label candidates (ids into the same task's corpus), scores included.
CORPUS_ARROW = pa.schema([("task_type", pa.string()), ("task_name", pa.string()), ("id", pa.int64()),
                          ("text", pa.string()), ("label", pa.string())])
CANDIDATES_ARROW = pa.schema([("task_type", pa.string()), ("task_name", pa.string()), ("query_id", pa.int64()),
                              ("pos_id", pa.int64()), ("pos_score", pa.float32()),
                              ("candidate_ids", pa.list_(pa.int64())), ("candidate_scores", pa.list_(pa.float32()))])
CORPUS_SCHEMA = pl.Schema(pl.from_arrow(CORPUS_ARROW.empty_table()).schema)
CANDIDATES_SCHEMA = pl.Schema(pl.from_arrow(CANDIDATES_ARROW.empty_table()).schema)


# The configs a trainer takes as they are: sentence-transformers' `SentenceTransformerTrainer` feeds every column
# as an input, in order (its collator takes a column named `label`/`labels`/`score`/`scores` as the label).
TRIPLET_COLUMNS = {"query": "anchor", "pos": "positive", "neg": "negative"}  # default-config column -> `triplets`
TRIPLETS_ARROW = pa.schema([(name, pa.string()) for name in TRIPLET_COLUMNS.values()])
