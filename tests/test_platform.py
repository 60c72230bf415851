"""Operating gistforge as a data platform: blocking checks, schedules, the upstream-pins sensor."""

import datetime as dt
import shutil
from pathlib import Path
from types import SimpleNamespace

import dagster as dg
import polars as pl

import pytest

from assets import automation, build_definitions
from assets.resources import BuildResource
from assets.settings import Deployment
from pipeline.config import embedded_profile
from pipeline.registry import get_task


def test_weekly_schedule_requests_every_task_partition(tmp_path):
    defs = build_definitions(embedded_profile(), Deployment(home=tmp_path))
    ctx = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 23, 3, tzinfo=dt.timezone.utc),
                                    repository_def=defs.get_repository_def())
    weekly_medi, weekly_rebuild = (defs.resolve_schedule_def(n) for n in ("weekly_medi", "weekly_rebuild"))
    requests = list(weekly_rebuild.evaluate_tick(ctx).run_requests)
    assert [r.partition_key for r in requests] == ["Banking77Classification", "ImdbClassification", "ChatterbotTopics"]
    assert requests[0].run_key == "Banking77Classification-2026-11-23"
    assert (weekly_medi.cron_schedule, weekly_rebuild.cron_schedule) == ("0 3 * * 1", "0 4 * * 1")
    assert weekly_medi.job_name == "ingest_medi" and weekly_rebuild.job_name == "ingest_and_mine"
    # the rebuild's downstream assets follow by automation; the schedules themselves never publish
    job = defs.resolve_job_def("ingest_and_mine")
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == {"mteb_train_split", "mined_triplets"}


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

    defs = build_definitions(embedded_profile(), Deployment(home=home))
    result = defs.resolve_job_def("build_and_publish").execute_in_process(raise_on_error=False)
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["negative_label_differs"] is False
    assert all(v for k, v in checks.items() if k != "negative_label_differs")
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert "triplet_dataset" in materialized and "published_dataset" not in materialized


def test_shipped_dagster_yaml_and_deploy_examples_are_valid_instance_config(tmp_path):
    import re
    from pathlib import Path

    from dagster._core.instance.config import dagster_instance_config

    root = Path(__file__).resolve().parents[1]
    (tmp_path / "dagster.yaml").write_text((root / "dagster.yaml").read_text())
    config, _ = dagster_instance_config(str(tmp_path))
    assert config["telemetry"]["enabled"] is False
    assert config["concurrency"]["runs"]["max_concurrent_runs"] == 2
    docs = (root / "docs" / "deploy.md").read_text()
    postgres = re.search(r"```yaml\n(storage:.*?)```", docs, re.S).group(1)
    (tmp_path / "dagster.yaml").write_text(postgres)
    config, _ = dagster_instance_config(str(tmp_path))
    assert "postgres_db" in config["storage"]["postgres"]


@pytest.mark.slow
def test_dg_check_defs_loads_the_code_location():
    """Dagster's current CLI reads `[tool.dg]` in pyproject.toml and loads `assets.definitions:defs`."""
    import subprocess
    import sys

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([str(Path(sys.executable).parent / "dg"), "check", "defs", "--use-active-venv"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "All definitions loaded successfully" in done.stdout, done.stdout + done.stderr
