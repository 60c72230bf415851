"""Jobs, the scheduled rebuild, the sensors that report on it, and the rebuild plan the CLI runs.

The scheduled rebuild is one switch: the declarative-automation sensor `weekly_rebuild` (off until you turn it on).
Every asset from ingest to publish carries `Rebuild.condition()`, due once per tick of the rebuild's cron, so
one tick requests the whole graph at once; the sensor hands that request to Dagster as one backfill, and the
backfill runs it in the order of the assets' declared dependencies (the decontamination reference, then MEDI and
every task partition, then the build and its blocking checks, then publishing), never by gaps between clock
times. Unchanged stages reuse their outputs (the library's fingerprints), an unchanged build publishes nothing
new, a failed blocking check on `triplet_dataset` stops the run before `published_dataset`, and a failed
upstream partition stops everything downstream of it. `rebuild_failure_sensor` (on by default) records why a
rebuild run failed; `published_dataset` carries a freshness policy derived from the cron.
"""

import datetime as dt
import logging
import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import dagster as dg
from croniter import croniter

from assets.resources import BuildResource
from pipeline.common.markdown import markdown_table
from pipeline.road import rounds
from pipeline.upstream import check_pins

log = logging.getLogger("gistforge.rebuild")

WEEKLY = "0 3 * * 1"  # Mondays 03:00 UTC
REBUILD_SENSOR = "weekly_rebuild"
# every asset the scheduled rebuild makes, ingest to publish (fine-tuning is not scheduled), with one mining round
REBUILT = ["mteb_test_texts", "medi_triplets", "mteb_train_split", "mined_triplets", "triplet_dataset",
           "published_dataset"]


def rebuilt(mining_rounds: int = 1) -> list[str]:
    """What the scheduled rebuild makes with `mining.rounds` rounds: each later round's encoder and mining too
    (an earlier round's encoder is part of the data's making, unlike the final fine-tune)."""
    later = [a for r in range(2, mining_rounds + 1) for a in (rounds.encoder_asset(r - 1), rounds.mined_asset(r))]
    return [*REBUILT[:4], *later, *REBUILT[4:]]


@dataclass(frozen=True)
class Step:
    """One run of a defined job (for one partition of it, when it is partitioned)."""

    job: str
    partition: str | None = None


def rebuild_plan(tasks: Sequence[str], finetune: bool = True, mining_rounds: int = 1) -> list[Step]:
    """The whole graph as runs of the defined jobs, in dependency order (partitioned and unpartitioned assets
    cannot share one run): what `gistforge build` executes."""
    later = [step for r in range(2, mining_rounds + 1)
             for step in (Step(f"round{r - 1}_train"), *(Step(f"round{r}_mine", t) for t in tasks))]
    return [Step("ingest_medi"), *(Step("ingest_and_mine", t) for t in tasks), *later, Step("build_and_publish"),
            *([Step("finetune")] if finetune else [])]


def jobs(partitions: dg.PartitionsDefinition, mining_rounds: int = 1) -> list:
    later = [job for r in range(2, mining_rounds + 1) for job in (
        dg.define_asset_job(f"round{r - 1}_train", selection=[rounds.encoder_asset(r - 1)]),
        dg.define_asset_job(f"round{r}_mine", selection=[rounds.mined_asset(r)], partitions_def=partitions))]
    return [
        dg.define_asset_job("ingest_medi", selection=["mteb_test_texts", "medi_triplets"]),
        dg.define_asset_job("ingest_and_mine", selection=["mteb_train_split", "mined_triplets"],
                            partitions_def=partitions),
        *later,
        dg.define_asset_job("build_and_publish", selection=["triplet_dataset", "published_dataset"]),
        dg.define_asset_job("finetune", selection=["finetuned_encoder"]),
    ]


# ------------------------------------------------------------------------------------ the scheduled rebuild


@dataclass(frozen=True)
class Rebuild:
    """When the scheduled rebuild ticks (`cron`, UTC) and how often its sensor evaluates (`interval_s`)."""

    cron: str = WEEKLY
    interval_s: int = 30

    def __post_init__(self):
        if not croniter.is_valid(self.cron):
            raise ValueError(f"GISTFORGE_REBUILD_CRON: {self.cron!r} is not a cron schedule (e.g. {WEEKLY!r})")
        if self.interval_s < 1:
            raise ValueError(f"GISTFORGE_REBUILD_INTERVAL_S: {self.interval_s} must be a positive number of seconds")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> "Rebuild":
        """`GISTFORGE_REBUILD_CRON` (default Mondays 03:00 UTC) and `GISTFORGE_REBUILD_INTERVAL_S` (default 30)."""
        defaults = cls()
        return cls(cron=environ.get("GISTFORGE_REBUILD_CRON") or defaults.cron,
                   interval_s=int(environ.get("GISTFORGE_REBUILD_INTERVAL_S") or defaults.interval_s))

    @property
    def period(self) -> dt.timedelta:
        """The longest gap between two ticks over a year of them (e.g. 6 days for Mondays and Tuesdays): the
        freshness windows below must not flag the long gap of an uneven schedule."""
        ticks = croniter(self.cron, dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc))
        times = [ticks.get_next(dt.datetime) for _ in range(2)]
        while len(times) < 1000 and times[-1] - times[0] < dt.timedelta(days=366):
            times.append(ticks.get_next(dt.datetime))
        return max(b - a for a, b in zip(times, times[1:]))

    def condition(self) -> dg.AutomationCondition:
        """Due once per cron tick, unless this asset (partition) is still being rebuilt.

        Every rebuilt asset has this same condition, so a tick requests all of them together and the sensor
        (`emit_backfills`) makes that one backfill: Dagster then runs each partition only after its upstreams
        succeeded, and nothing downstream of a failure. A tick is handled when the sensor requests the rebuild
        (not when something else updates the asset), so a tick that passed while the switch was off is made
        up as soon as it is turned on.
        """
        handled = dg.AutomationCondition.newly_requested() | dg.AutomationCondition.initial_evaluation()
        return (dg.AutomationCondition.cron_tick_passed(self.cron, "UTC").since(handled)
                & ~dg.AutomationCondition.in_progress()).with_label(f"rebuild on '{self.cron}' UTC")

    def freshness(self) -> dg.FreshnessPolicy:
        """The published dataset should be no older than one rebuild period: warn 6 hours past it, fail a day past."""
        return dg.FreshnessPolicy.time_window(fail_window=self.period + dt.timedelta(days=1),
                                              warn_window=self.period + dt.timedelta(hours=6))

    def apply(self, assets: Sequence[dg.AssetsDefinition], mining_rounds: int = 1) -> list[dg.AssetsDefinition]:
        """The assets with the rebuild's automation condition (and the published dataset's freshness policy)."""
        made = rebuilt(mining_rounds)

        def spec(s: dg.AssetSpec) -> dg.AssetSpec:
            name = s.key.to_user_string()
            if name not in made:
                return s
            s = s.replace_attributes(automation_condition=self.condition())
            return s.replace_attributes(freshness_policy=self.freshness()) if name == "published_dataset" else s

        return list(dg.map_asset_specs(spec, assets))

    def sensor(self, mining_rounds: int = 1) -> dg.AutomationConditionSensorDefinition:
        return dg.AutomationConditionSensorDefinition(
            REBUILD_SENSOR, target=rebuilt(mining_rounds), default_status=dg.DefaultSensorStatus.STOPPED,
            minimum_interval_seconds=self.interval_s, emit_backfills=True, run_tags={"gistforge/rebuild": "scheduled"},
            description=f"The scheduled rebuild, cron '{self.cron}' UTC: each tick is one backfill that ingests, "
                        "mines every task, builds, checks and publishes in dependency order. Turning this on is all "
                        "a scheduled rebuild needs.")


def _one_line(text: str | None) -> str:
    return " ".join(line.strip() for line in (text or "").strip().splitlines() if line.strip())


def _error(event: dg.DagsterEvent | None) -> str:
    error = getattr(event.event_specific_data, "error", None) if event else None
    return error.message if error else (event.message or "" if event else "")


def rebuild_failure(instance: dg.DagsterInstance, run: dg.DagsterRun, failure: dg.DagsterEvent | None,
                    steps: Sequence[dg.DagsterEvent]) -> dict:
    """What a failed rebuild run says about itself: which run, what it was building, which step and check
    failed, and why."""
    failed_checks = []
    for entry in instance.all_logs(run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION):
        evaluation = entry.dagster_event.event_specific_data
        if not evaluation.passed:
            details = ", ".join(f"{k}: {v.value}" for k, v in evaluation.metadata.items())
            failed_checks.append(f"{evaluation.check_name} ({evaluation.description or 'failed'}; {details})")
    why = [f"{e.step_key}: {_one_line(_error(e))}" for e in steps] or [_one_line(_error(failure)) or "run failed"]
    return {"run_id": run.run_id, "backfill": run.tags.get("dagster/backfill", ""),
            "partition": run.tags.get("dagster/partition", ""),
            "assets": sorted(k.to_user_string() for k in run.asset_selection or []),
            "failed_steps": [e.step_key for e in steps], "failed_checks": failed_checks, "why": "; ".join(why)}


@dg.run_failure_sensor(name="rebuild_failure_sensor", default_status=dg.DefaultSensorStatus.RUNNING,
                       description="Records why a scheduled rebuild run failed: an observation on published_dataset "
                                   "and an ERROR log line starting 'gistforge: rebuild failed'.")
def rebuild_failure_sensor(context: dg.RunFailureSensorContext):
    run = context.dagster_run
    if run.tags.get("dagster/sensor_name") != REBUILD_SENSOR:
        return dg.SkipReason(f"run {run.run_id} is not part of a scheduled rebuild")
    info = rebuild_failure(context.instance, run, context.failure_event, context.get_step_failure_events())
    what = ", ".join(info["assets"]) + (f" [{info['partition']}]" if info["partition"] else "")
    checks = f"; failed checks: {', '.join(info['failed_checks'])}" if info["failed_checks"] else ""
    line = (f"gistforge: rebuild failed: run {info['run_id']} (backfill {info['backfill'] or '-'}: {what}): "
            f"{info['why']}{checks}")
    log.error(line)
    context.log.error(line)
    context.instance.report_runless_asset_event(dg.AssetObservation(
        asset_key="published_dataset", description=line,
        metadata={"rebuild_status": "failed", "failed_run_id": info["run_id"], "failed_backfill": info["backfill"],
                  "failed_assets": dg.MetadataValue.json(info["assets"]), "failed_partition": info["partition"],
                  "failed_checks": dg.MetadataValue.json(info["failed_checks"]),
                  "why": dg.MetadataValue.md(f"```\n{info['why']}{checks}\n```")}))
    return None


# ------------------------------------------------------------------------------------------ upstream pins


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
