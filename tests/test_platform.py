"""Operating gistforge as a data platform: blocking checks, the scheduled rebuild, the sensors."""

import datetime as dt
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import polars as pl

import pytest

from assets import automation, build_definitions
from assets.resources import BuildResource
from assets.settings import Deployment
from pipeline.common import atomic
from pipeline.profiles import embedded_profile
from pipeline.registry import get_task


def test_one_switch_is_off_by_default_and_nothing_else_needs_turning_on(tmp_path):
    """`weekly_rebuild` is the only switch; the failure sensor is on already; no schedule, no hidden sensor."""
    defs = build_definitions(embedded_profile(), Deployment(home=tmp_path))
    repo = defs.get_repository_def()
    assert not repo.schedule_defs, "the rebuild is one automation sensor, not clock-ordered schedules"
    status = {s.name: s.default_status for s in repo.sensor_defs}
    assert status == {"weekly_rebuild": dg.DefaultSensorStatus.STOPPED,  # the one switch
                      "rebuild_failure_sensor": dg.DefaultSensorStatus.RUNNING,
                      "upstream_pins_sensor": dg.DefaultSensorStatus.STOPPED}
    # every asset with a condition belongs to weekly_rebuild, so Dagster adds no default_automation_condition_sensor
    # that would run them on its own
    rebuild = repo.get_sensor_def("weekly_rebuild")
    assert isinstance(rebuild, dg.AutomationConditionSensorDefinition) and rebuild.emit_backfills
    graph = defs.resolve_asset_graph()
    conditioned = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).automation_condition}
    assert conditioned == set(automation.REBUILT) == {k.to_user_string()
                                                       for k in rebuild.asset_selection.resolve(graph)}
    assert "finetuned_encoder" not in conditioned, "fine-tuning is not scheduled"
    assert {a.get_label() for a in (graph.get(dg.AssetKey(k)).automation_condition for k in conditioned)} == {
        "rebuild on '0 3 * * 1' UTC"}
    freshness = graph.get(dg.AssetKey("published_dataset")).freshness_policy
    assert (freshness.fail_window.to_timedelta(), freshness.warn_window.to_timedelta()) == (
        dt.timedelta(days=8), dt.timedelta(days=7, hours=6))


def test_a_cron_tick_requests_the_whole_graph_once(tmp_path):
    """Dagster's own evaluation of the conditions: nothing on the first look, everything (every partition) after
    a tick, nothing again until the next tick."""
    defs = build_definitions(embedded_profile(), Deployment(home=tmp_path))
    monday = dt.datetime(2026, 11, 23, tzinfo=dt.timezone.utc)
    with dg.instance_for_test() as instance:
        result = dg.evaluate_automation_conditions(defs, instance, evaluation_time=monday.replace(hour=2))
        assert result.total_requested == 0, "turning the switch on is not a tick"
        result = dg.evaluate_automation_conditions(defs, instance, cursor=result.cursor,
                                                   evaluation_time=monday.replace(hour=3, minute=0, second=20))
        tasks = {"Banking77Classification", "ImdbClassification", "ChatterbotTopics"}
        for key in ("mteb_train_split", "mined_triplets"):
            assert result.get_requested_partitions(dg.AssetKey(key)) == tasks
        for key in ("mteb_test_texts", "medi_triplets", "triplet_dataset", "published_dataset"):
            assert result.get_num_requested(dg.AssetKey(key)) == 1
        assert result.get_num_requested(dg.AssetKey("finetuned_encoder")) == 0
        result = dg.evaluate_automation_conditions(defs, instance, cursor=result.cursor,
                                                   evaluation_time=monday.replace(hour=3, minute=5))
        assert result.total_requested == 0


def test_rebuild_timing_comes_from_the_environment():
    assert automation.Rebuild.from_env({}) == automation.Rebuild("0 3 * * 1", 30)
    daily = automation.Rebuild.from_env({"GISTFORGE_REBUILD_CRON": "30 1 * * *", "GISTFORGE_REBUILD_INTERVAL_S": "10"})
    assert (daily.cron, daily.interval_s, daily.period) == ("30 1 * * *", 10, dt.timedelta(days=1))
    # an uneven schedule is fresh for its longest gap, Tuesday to the next Monday
    assert automation.Rebuild("0 3 * * 1,2").period == dt.timedelta(days=6)
    with pytest.raises(ValueError, match="GISTFORGE_REBUILD_CRON: 'weekly' is not a cron schedule"):
        automation.Rebuild.from_env({"GISTFORGE_REBUILD_CRON": "weekly"})


def test_a_failed_rebuild_run_is_described_by_run_step_and_check():
    run = dg.DagsterRun(job_name="__ASSET_JOB", run_id="r1", asset_selection={dg.AssetKey("mined_triplets")},
                        tags={"dagster/sensor_name": "weekly_rebuild", "dagster/backfill": "bf1",
                              "dagster/partition": "ImdbClassification"})

    class NoChecks:
        def all_logs(self, run_id, of_type=None):
            return []

    step = SimpleNamespace(step_key="mined_triplets", message="step failed", event_specific_data=SimpleNamespace(
        error=SimpleNamespace(message="pipeline.road.sources.SourceError: no revision\n  in the offline cache\n")))
    info = automation.rebuild_failure(NoChecks(), run, None, [step])
    assert info == {"run_id": "r1", "backfill": "bf1", "partition": "ImdbClassification", "assets": ["mined_triplets"],
                    "failed_steps": ["mined_triplets"], "failed_checks": [],
                    "why": "mined_triplets: pipeline.road.sources.SourceError: no revision in the offline cache"}


def test_the_cli_runs_the_defined_jobs_in_dependency_order(tmp_path):
    defs = build_definitions(embedded_profile(), Deployment(home=tmp_path))
    plan = automation.rebuild_plan(["A", "B"])
    assert [(s.job, s.partition) for s in plan] == [("ingest_medi", None), ("ingest_and_mine", "A"),
                                                    ("ingest_and_mine", "B"), ("build_and_publish", None),
                                                    ("finetune", None)]
    for step in plan:  # every step is a job the definitions hold
        defs.resolve_job_def(step.job)
    assert [s.job for s in automation.rebuild_plan(["A"], finetune=False)][-1] == "build_and_publish"


def test_upstream_sensor_reports_pins_behind_the_hub_without_bumping(monkeypatch):
    banking = get_task("Banking77Classification")

    class FakeApi:
        def dataset_info(self, repo, revision):
            if repo == "mteb/imdb":
                raise ConnectionError("offline")
            return SimpleNamespace(sha=banking.revision if repo == banking.hub_id else "f" * 40)

    monkeypatch.setattr(automation, "_hf_api", FakeApi)
    ctx = dg.build_sensor_context(resources={"gistforge": BuildResource.of(embedded_profile(), Path("/unused"))})
    result = automation.upstream_pins_sensor(ctx)
    status = {e.partition or "MEDI": e.metadata["pin_status"].value for e in result.asset_events}
    assert status == {"Banking77Classification": "current", "ImdbClassification": "unknown (ConnectionError)",
                      "MEDI": "behind"}
    assert "1 of 3 pinned sources are behind" in result.skip_reason.skip_message
    assert embedded_profile().task("Banking77Classification").revision is None, "pins untouched"


@pytest.mark.slow
def test_a_failed_blocking_check_stops_publishing(embedded_build, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(embedded_build, home)
    bad = home / "work" / "embedded" / "triplets" / "ImdbClassification.parquet"
    df = pl.read_parquet(bad)
    df.with_columns(neg_label=pl.col("query_label")).write_parquet(bad)  # a bad partition: same-label negatives
    report = bad.with_suffix(".json")  # ... as its mining step committed it (the report names the file it wrote)
    report.write_text(json.dumps({**json.loads(report.read_text()), "output_identity": atomic.identity(bad)}))

    defs = build_definitions(embedded_profile(), Deployment(home=home))
    result = defs.resolve_job_def("build_and_publish").execute_in_process(raise_on_error=False)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["negative_label_differs"] is False
    assert all(v for k, v in checks.items() if k != "negative_label_differs")
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "triplet_dataset" in materialized and "published_dataset" not in materialized


def test_the_shipped_dagster_yaml_loads_as_an_instance_with_its_settings(tmp_path):
    """Dagster itself reads the file (its schema check included) and applies what it says; the documented
    PostgreSQL storage is opened against a real server in `test_deployment`."""
    import dagster as dg

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "dagster.yaml").write_text((root / "dagster.yaml").read_text())
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.telemetry_enabled is False
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2


@pytest.mark.slow
def test_dg_check_defs_loads_the_code_location():
    """Dagster's current CLI reads `[tool.dg]` in pyproject.toml and loads `assets.definitions:defs`."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([str(Path(sys.executable).parent / "dg"), "check", "defs", "--use-active-venv"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "All definitions loaded successfully" in done.stdout, done.stdout + done.stderr
