"""Turn the library's plain report dicts into Dagster metadata (presentation only)."""

from __future__ import annotations

import dagster as dg

from pipeline.build import SCHEMA
from pipeline.card import markdown_table


def account_metadata(account: dict) -> dict:
    drops = account["drops"]
    return {
        "dagster/row_count": account["rows_out"],
        "rows_in": account["rows_in"],
        "rows_dropped": sum(drops.values()),
        "drops": dg.MetadataValue.md(
            markdown_table(["reason", "rows"], sorted(drops.items())) if drops else "no rows dropped"),
    }


def reuse_metadata(report: dict) -> dict:
    """Whether the stage found its output up to date (same inputs and settings) and reused it."""
    return {"reused": bool(report.get("reused")), "fingerprint": report.get("fingerprint") or "n/a"}


def schema_metadata() -> dict:
    return {"dagster/column_schema": dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type)) for f in SCHEMA])}


def tasks_table(tasks: list[dict]) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(["task_type", "task_name", "rows"],
                                              [[t["task_type"], t["task_name"], t["rows"]] for t in tasks]))


def version_diff_table(diff: list[dict]) -> str:
    if not diff:
        return "unchanged: nothing published"
    return markdown_table(["task_type", "task_name", "added", "removed", "kept"],
                          [[d["task_type"], d["task_name"], d["added"], d["removed"], d["kept"]] for d in diff])
