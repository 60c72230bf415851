"""Operating gistforge as a data platform: blocking checks, schedules, the upstream-pins sensor."""

import datetime as dt
import shutil
from types import SimpleNamespace

import dagster as dg
import polars as pl

from assets import automation, defs
from assets.definitions import ALL_ASSETS, published_dataset, triplet_dataset
from assets.resources import GistforgeResource, GuideModelResource, LocalHubPublisher
from pipeline.config import embedded_profile
from pipeline.registry import get_task
from tests.test_assets import embedded_build  # noqa: F401 - shared module fixture


def test_weekly_schedule_requests_every_task_partition():
    ctx = dg.build_schedule_context(scheduled_execution_time=dt.datetime(2026, 11, 23, 3, tzinfo=dt.timezone.utc))
    requests = list(automation.weekly_rebuild(ctx))
    assert [r.partition_key for r in requests] == ["Banking77Classification", "ImdbClassification", "ChatterbotTopics"]
    assert requests[0].run_key == "Banking77Classification-2026-11-23"
    assert (automation.weekly_medi.cron_schedule, automation.weekly_rebuild.cron_schedule) == ("0 3 * * 1", "0 4 * * 1")
    assert automation.weekly_medi.job.name == "ingest_medi"
    # the rebuild's downstream assets follow by automation; the schedules themselves never publish
    assert set(automation.ingest_and_mine_job.selection.resolve(defs.resolve_asset_graph())) == {
        dg.AssetKey("mteb_train_split"), dg.AssetKey("mined_triplets")}


def test_upstream_sensor_reports_pins_behind_the_hub_without_bumping(monkeypatch):
    banking = get_task("Banking77Classification")

    class FakeApi:
        def dataset_info(self, repo, revision):
            if repo == "mteb/imdb":
                raise ConnectionError("offline")
            return SimpleNamespace(sha=banking.revision if repo == banking.hub_id else "f" * 40)

    monkeypatch.setattr(automation, "_hf_api", FakeApi)
    ctx = dg.build_sensor_context(resources={"gistforge": GistforgeResource()})
    result = automation.upstream_pins_sensor(ctx)
    status = {e.partition or "MEDI": e.metadata["pin_status"].value for e in result.asset_events}
    assert status == {"Banking77Classification": "current", "ImdbClassification": "unknown (ConnectionError)",
                      "MEDI": "behind"}
    assert "1 of 3 pinned sources are behind" in result.skip_reason.skip_message
    assert embedded_profile().task("Banking77Classification").revision is None, "pins untouched"


def test_a_failed_blocking_check_stops_publishing(embedded_build, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    shutil.copytree(embedded_build, home)
    bad = home / "work" / "embedded" / "triplets" / "ImdbClassification.parquet"
    df = pl.read_parquet(bad)
    df.with_columns(neg_label=pl.col("query_label")).write_parquet(bad)  # a bad partition: same-label negatives

    result = dg.materialize(ALL_ASSETS, selection=[triplet_dataset, published_dataset], raise_on_error=False,
                            resources={"gistforge": GistforgeResource(home=str(home)), "guide": GuideModelResource(),
                                       "publisher": LocalHubPublisher()})
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
