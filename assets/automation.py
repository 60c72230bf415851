"""Jobs, the weekly rebuild schedules, the upstream-pins sensor, and the rebuild plan the CLI runs.

The weekly schedules request MEDI and every task partition (ingest + mine); the automation sensor
`build_after_ingest` then materialises `triplet_dataset` and `published_dataset` once their upstreams have
updated (`AutomationCondition.eager()`), and the blocking checks stop a bad build from being published.
"""

from dataclasses import dataclass
from typing import Sequence

import dagster as dg

from assets.resources import BuildResource
from pipeline.common.markdown import markdown_table
from pipeline.upstream import check_pins

WEEKLY = "0 3 * * 1"  # Mondays 03:00 UTC: test texts + MEDI
WEEKLY_TASKS = "0 4 * * 1"  # an hour later, on the fresh decontamination reference: every task partition


@dataclass(frozen=True)
class Step:
    """One run of a defined job (for one partition of it, when it is partitioned)."""

    job: str
    partition: str | None = None


def rebuild_plan(tasks: Sequence[str], finetune: bool = True) -> list[Step]:
    """The whole graph as runs of the defined jobs, in dependency order (partitioned and unpartitioned assets
    cannot share one run): what `gistforge build` executes."""
    return [Step("ingest_medi"), *(Step("ingest_and_mine", t) for t in tasks), Step("build_and_publish"),
            *([Step("finetune")] if finetune else [])]


def jobs(partitions: dg.PartitionsDefinition) -> list:
    return [
        dg.define_asset_job("ingest_medi", selection=["mteb_test_texts", "medi_triplets"]),
        dg.define_asset_job("ingest_and_mine", selection=["mteb_train_split", "mined_triplets"],
                            partitions_def=partitions),
        dg.define_asset_job("build_and_publish", selection=["triplet_dataset", "published_dataset"]),
        dg.define_asset_job("finetune", selection=["finetuned_encoder"]),
    ]


def schedules(tasks: Sequence[str]) -> list[dg.ScheduleDefinition]:
    weekly_medi = dg.ScheduleDefinition(
        name="weekly_medi", cron_schedule=WEEKLY, job_name="ingest_medi", execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.STOPPED,
        description="Weekly rebuild, part 1: the decontamination reference and MEDI.")

    @dg.schedule(cron_schedule=WEEKLY_TASKS, job_name="ingest_and_mine", execution_timezone="UTC",
                 default_status=dg.DefaultScheduleStatus.STOPPED,
                 description="Weekly rebuild, part 2: every task partition (ingest + mine); build + publish follow "
                             "by automation once all upstreams are fresh.")
    def weekly_rebuild(context: dg.ScheduleEvaluationContext):
        stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
        for task in tasks:
            yield dg.RunRequest(run_key=f"{task}-{stamp}", partition_key=task)

    return [weekly_medi, weekly_rebuild]


def _hf_api():
    from huggingface_hub import HfApi

    return HfApi()


@dg.sensor(minimum_interval_seconds=24 * 3600, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Reports pinned upstream revisions that are no longer the latest on the Hub; never bumps pins.")
def upstream_pins_sensor(context: dg.SensorEvaluationContext, gistforge: BuildResource):
    rows = check_pins(_hf_api(), gistforge.config())
    behind = [r for r in rows if r.status == "behind"]
    events = [dg.AssetObservation(asset_key="medi_triplets" if r.source == "MEDI" else "mteb_train_split",
                                  partition=None if r.source == "MEDI" else r.source,
                                  metadata={"pinned_revision": r.pinned, "latest_revision": r.latest or "",
                                            "pin_status": r.status})
              for r in rows]
    table = markdown_table(["source", "repo", "pinned", "latest", "status"],
                           [[r.source, r.repo_id, r.pinned[:12], (r.latest or "?")[:12], r.status] for r in rows])
    context.log.info("upstream pins:\n%s", table)
    summary = f"{len(behind)} of {len(rows)} pinned sources are behind the Hub's main" if behind else \
        f"all {len(rows)} pins current or unknown"
    return dg.SensorResult(asset_events=events, skip_reason=dg.SkipReason(summary))


def build_after_ingest() -> dg.AutomationConditionSensorDefinition:
    return dg.AutomationConditionSensorDefinition("build_after_ingest", target=["triplet_dataset", "published_dataset"])
