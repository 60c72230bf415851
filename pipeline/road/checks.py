"""Data checks a build must pass before it may be published (the Dagster layer makes them blocking)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pyarrow.parquet as pq
import yaml

from pipeline import task_types
from pipeline.common.accounting import RowAccount
from pipeline.common.text import front_matter, leaked
from pipeline.road import layout
from pipeline.schema import SCHEMA


@dataclass
class CheckOutcome:
    name: str
    passed: bool
    description: str
    metadata: dict = field(default_factory=dict)


def _card_yaml(folder: Path) -> dict:
    """The card's front matter, split on its own `---` lines: a `---` inside a value (`org/my---data`) is data."""
    text = front_matter((folder / "README.md").read_text(encoding="utf-8"))
    return (yaml.safe_load(text) or {}) if text is not None else {}


def _shard_counts(df: pl.DataFrame, excluded: dict[str, str], test_keys: np.ndarray | None) -> dict[str, int]:
    """Rule violations in one shard (every rule is row-local, so shards add up)."""
    mined = df.filter(pl.col("source") != "medi")
    is_mteb_type = df["task_type"].str.starts_with(task_types.MTEB_PREFIX)
    leaks = 0
    if test_keys is not None:
        for c in ("query", "pos", "neg"):
            leaks += int(leaked(df.get_column(c), test_keys).sum())
    return {
        "rows": df.height,
        "bad_type": int((is_mteb_type != (df["source"] == "mteb")).sum()),
        "excluded_rows": int(df["task_name"].is_in(list(excluded)).sum()),
        "same_label": int((mined["query_label"] == mined["neg_label"]).fill_null(True).sum()),
        "empty": int(sum(df[c].is_null().sum() + (df[c].str.strip_chars() == "").sum() for c in ("query", "pos", "neg"))),
        "degenerate": int(((df["query"] == df["pos"]) | (df["query"] == df["neg"]) | (df["pos"] == df["neg"])).sum()),
        "leaks": leaks,
    }


def _named_like_the_hub(folder: Path) -> bool:
    names = sorted(p.name for p in folder.glob("train-*.parquet"))
    return names == [f"train-{i:05d}-of-{len(names):05d}.parquet" for i in range(len(names))]


def verify_build(folder: Path, excluded: dict[str, str], accounts: list[RowAccount],
                 test_keys: np.ndarray | None = None) -> list[CheckOutcome]:
    """Every rule the published data promises, checked on the files that will be published."""
    folder = Path(folder)
    shards = layout.DEFAULT.files(folder)
    schemas_ok = all(pq.read_schema(s).remove_metadata() == SCHEMA for s in shards)
    totals: Counter[str] = Counter()
    for shard in shards:  # one shard in memory at a time: a full build is several GB
        totals.update(_shard_counts(pl.read_parquet(shard), excluded, test_keys))
    rows, bad_type, excluded_rows = totals["rows"], totals["bad_type"], totals["excluded_rows"]
    same_label, empty, degenerate, leaks = totals["same_label"], totals["empty"], totals["degenerate"], totals["leaks"]
    unbalanced = [a.source for a in accounts if not a.balanced]
    card = _card_yaml(folder)
    info = card.get("dataset_info") or []
    info = [{"config_name": "default", **info}] if isinstance(info, dict) else info  # one config: a mapping
    declared = {c["config_name"]: c["splits"][0]["num_examples"] for c in info}
    card_rows = declared.get("default")
    found = {c["config_name"]: c["data_files"][0]["path"] for c in card.get("configs", [])}
    config_rows = {name: sum(pq.read_metadata(p).num_rows for p in sorted(folder.glob(pattern)))
                   for name, pattern in found.items()}
    mismatched = sorted(name for name in found if config_rows[name] != declared.get(name))
    n = len(shards)
    names_ok = all(_named_like_the_hub(d) for d in {s.parent for s in shards})
    return [
        CheckOutcome("output_schema", schemas_ok and n > 0, "every shard has the published schema",
                     {"shards": n}),
        CheckOutcome("task_type_rule", bad_type == 0, "MTEB rows, and only they, have a task_type starting 'mteb_'",
                     {"violations": bad_type}),
        CheckOutcome("no_excluded_task", excluded_rows == 0, "no row comes from an excluded task",
                     {"rows": excluded_rows, "excluded": sorted(excluded)}),
        CheckOutcome("negative_label_differs", same_label == 0, "no negative shares its query's label",
                     {"violations": same_label}),
        CheckOutcome("no_empty_text", empty == 0, "no empty query, pos or neg", {"violations": empty}),
        CheckOutcome("distinct_triplet_texts", degenerate == 0, "query != pos != neg", {"violations": degenerate}),
        CheckOutcome("row_accounting", not unbalanced, "rows in = rows out + rows dropped, for every source",
                     {"unbalanced": unbalanced}),
        CheckOutcome("no_test_leak", leaks == 0, "no query, pos or neg equals an MTEB test-split text (normalised)",
                     {"leaks": leaks, "checked": test_keys is not None}),
        CheckOutcome("shards_match_card", names_ok and card_rows == rows and not mismatched,
                     "shard names follow the Hub convention and every config's num_examples in the card matches "
                     "its files", {"card_rows": card_rows, "shard_rows": rows, "configs_mismatched": mismatched}),
    ]
