"""Jobs, the weekly rebuild schedule, and the sensor that reports upstream pins left behind.

The weekly schedule requests MEDI and every task partition (ingest + mine); the automation sensor
then materialises `triplet_dataset` and `published_dataset` once their upstreams have updated
(`AutomationCondition.eager()`), and the blocking checks stop a bad build from being published.
"""

import dagster as dg

from assets.partitions import TASKS, task_partitions
from assets.resources import GistforgeResource
from pipeline.card import markdown_table
from pipeline.upstream import check_pins

ingest_medi_job = dg.define_asset_job("ingest_medi", selection=["mteb_test_texts", "medi_triplets"])
ingest_and_mine_job = dg.define_asset_job("ingest_and_mine", selection=["mteb_train_split", "mined_triplets"],
                                          partitions_def=task_partitions)
build_and_publish_job = dg.define_asset_job("build_and_publish", selection=["triplet_dataset", "published_dataset"])


WEEKLY = "0 3 * * 1"  # Mondays 03:00 UTC: test texts + MEDI
WEEKLY_TASKS = "0 4 * * 1"  # an hour later, on the fresh decontamination reference: every task partition

weekly_medi = dg.ScheduleDefinition(name="weekly_medi", cron_schedule=WEEKLY, job=ingest_medi_job,
                                    execution_timezone="UTC", default_status=dg.DefaultScheduleStatus.STOPPED,
                                    description="Weekly rebuild, part 1: the decontamination reference and MEDI.")


@dg.schedule(cron_schedule=WEEKLY_TASKS, job=ingest_and_mine_job, execution_timezone="UTC",
             default_status=dg.DefaultScheduleStatus.STOPPED,
             description="Weekly rebuild, part 2: every task partition (ingest + mine); build + publish follow by "
                         "automation once all upstreams are fresh.")
def weekly_rebuild(context: dg.ScheduleEvaluationContext):
    stamp = context.scheduled_execution_time.strftime("%Y-%m-%d")
    for task in TASKS:
        yield dg.RunRequest(run_key=f"{task}-{stamp}", partition_key=task)


def _hf_api():
    from huggingface_hub import HfApi

    return HfApi()


@dg.sensor(minimum_interval_seconds=24 * 3600, default_status=dg.DefaultSensorStatus.STOPPED,
           description="Reports pinned upstream revisions that are no longer the latest on the Hub; never bumps pins.")
def upstream_pins_sensor(context: dg.SensorEvaluationContext, gistforge: GistforgeResource):
    rows = check_pins(_hf_api(), gistforge.config())
    behind = [r for r in rows if r["status"] == "behind"]
    events = [dg.AssetObservation(asset_key="mteb_train_split" if r["source"] != "MEDI" else "medi_triplets",
                                  partition=r["source"] if r["source"] != "MEDI" else None,
                                  metadata={"pinned_revision": r["pinned"], "latest_revision": r["latest"] or "",
                                            "pin_status": r["status"]})
              for r in rows]
    table = markdown_table(["source", "repo", "pinned", "latest", "status"],
                           [[r["source"], r["repo_id"], r["pinned"][:12], (r["latest"] or "?")[:12], r["status"]]
                            for r in rows])
    context.log.info("upstream pins:\n%s", table)
    summary = f"{len(behind)} of {len(rows)} pinned sources are behind the Hub's main" if behind else \
        f"all {len(rows)} pins current or unknown"
    return dg.SensorResult(asset_events=events, skip_reason=dg.SkipReason(summary))
