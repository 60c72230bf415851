"""Typed stage reports as Dagster metadata (presentation only)."""

import dagster as dg

from pipeline.common.accounting import RowAccount
from pipeline.common.markdown import markdown_table
from pipeline.road.build import TaskRows
from pipeline.road.publish import RowDiff, diff_table
from pipeline.schema import SCHEMA
from pipeline.workspace import StageReport


def account_metadata(account: RowAccount) -> dict:
    return {
        "dagster/row_count": account.rows_out,
        "rows_in": account.rows_in,
        "rows_dropped": account.dropped,
        "drops": dg.MetadataValue.md(
            markdown_table(["reason", "rows"], sorted(account.drops.items())) if account.drops else "no rows dropped"),
    }


def reuse_metadata(report: StageReport) -> dict:
    """Whether the stage found its output up to date (same inputs and settings) and reused it."""
    return {"reused": report.reused, "fingerprint": report.fingerprint}


def schema_metadata() -> dict:
    return {"dagster/column_schema": dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type)) for f in SCHEMA])}


def tasks_table(tasks: list[TaskRows]) -> dg.MetadataValue:
    return dg.MetadataValue.md(markdown_table(["task_type", "task_name", "rows"],
                                              [[t.task_type, t.task_name, t.rows] for t in tasks]))


def version_diff_table(diff: list[RowDiff]) -> str:
    return diff_table(diff) if diff else "unchanged: nothing published"
