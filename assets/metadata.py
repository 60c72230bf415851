"""Typed stage reports as Dagster metadata (presentation only)."""

from pathlib import Path

import dagster as dg
from pydantic import BaseModel

from pipeline.common.accounting import RowAccount
from pipeline.common.markdown import markdown_table
from pipeline.road.grouped import TaskRows
from pipeline.road.ingest import MediReport, SplitReport
from pipeline.road.local_hub import LocalHub
from pipeline.road.publish import RowDiff
from pipeline.road.versioning import diff_table
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


def read_from_metadata(report: MediReport | SplitReport) -> dict:
    """Which snapshot layout and files an ingest read (a local file: its name), to check what was read."""
    layout = report.layout or ("a local file" if report.files else "nothing read")
    return {"layout": layout, "files": dg.MetadataValue.json(report.files)}


def schema_metadata() -> dict:
    return {"dagster/column_schema": dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type)) for f in SCHEMA])}


TASK_COUNTS = dg.TableSchema(columns=[dg.TableColumn("task_type", "string"), dg.TableColumn("task_name", "string"),
                                      dg.TableColumn("rows", "int")])


def tasks_table(tasks: list[TaskRows]) -> dg.MetadataValue:
    """Per-task counts as a Dagster table (sortable in the UI), not markdown."""
    return dg.MetadataValue.table([dg.TableRecord({"task_type": t.task_type, "task_name": t.task_name, "rows": t.rows})
                                   for t in tasks], schema=TASK_COUNTS)


def numeric_mining_metadata(stats: BaseModel) -> dict:
    """Every number of a task's mining statistics as its own entry (`mining/pos_sim.mean`, ...), so the UI
    plots each across materialisations; a JSON blob gives it nothing to plot."""
    out: dict = {}

    def walk(value, name: str) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(inner, f"{name}.{key}" if name else str(key))
        elif isinstance(value, bool):
            return
        elif isinstance(value, int):
            out[f"mining/{name}"] = dg.MetadataValue.int(value)
        elif isinstance(value, float):
            out[f"mining/{name}"] = dg.MetadataValue.float(value)

    walk(stats.model_dump(mode="json", exclude_none=True), "")
    return out


IVF_RECALL_CHECK = "ivf_recall"
IVF_RECALL_WARN = 0.9


def ivf_recall_check(recall: float | None, nprobe: int) -> dg.AssetCheckResult:
    """Non-blocking: warns when the approximate (IVF) negative search finds fewer than 90% of exact search's
    top 10 on the measured sample; exact search always passes."""
    if recall is None:
        return dg.AssetCheckResult(check_name=IVF_RECALL_CHECK, passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   description="exact search: recall is 1 by construction")
    return dg.AssetCheckResult(
        check_name=IVF_RECALL_CHECK, passed=recall >= IVF_RECALL_WARN, severity=dg.AssetCheckSeverity.WARN,
        description=f"IVF recall@10 against exact search {recall:.4f} (warns below {IVF_RECALL_WARN}); if low, raise "
                    f"mining.ivf_nprobe (now {nprobe})",
        metadata={"recall_at_10": dg.MetadataValue.float(recall), "ivf_nprobe": nprobe})


def ivf_recall_spec(asset: str) -> dg.AssetCheckSpec:
    return dg.AssetCheckSpec(IVF_RECALL_CHECK, asset=asset, blocking=False,
                             description=f"approximate negative search keeps recall@10 >= {IVF_RECALL_WARN} (warns only)")


def hub_url(repo_id: str, tag: str) -> str:
    return f"https://huggingface.co/datasets/{repo_id}/tree/{tag}"


def version_location(repo_id: str, tag: str, revision: str, local_hub: str | None) -> dg.MetadataValue:
    """The published version: a URL on the Hub, the snapshot folder on a local hub."""
    if local_hub is None:
        return dg.MetadataValue.url(hub_url(repo_id, tag))
    folder = LocalHub(Path(local_hub)).repo_dir(repo_id) / "snapshots" / revision
    return dg.MetadataValue.path(str(folder))


def version_diff_table(diff: list[RowDiff]) -> str:
    return diff_table(diff) if diff else "unchanged: nothing published"
