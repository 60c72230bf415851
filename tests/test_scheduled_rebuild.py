"""The scheduled rebuild under the real Dagster daemon: one switch, and each cron tick is a whole rebuild.

`dagster-daemon run` and `dagster-webserver` load the code location the way a deployment does
(`-m assets.definitions`, configured by `GISTFORGE_*` variables) against a SQLite instance in a temp folder; the
test turns `weekly_rebuild` on with `dagster sensor start`, and from then on flips it as the UI's toggle does (the
web server's `startSensor`/`stopSensor` mutations) and watches the instance and the local Hub folder, changing
inputs between ticks. The cron is every minute here (`GISTFORGE_REBUILD_CRON`), faster than a rebuild takes, so the
switch is off while a rebuild runs and back on for the next: each rebuild is exactly one tick, the one that
passed while the switch was off. Two task partitions (a Hub task and the local one) keep the four rebuilds to
a few minutes on two cores.
"""

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from pipeline.common import atomic
from pipeline.config import SAMPLE_DIR
from pipeline.profiles import embedded_profile
from pipeline.road.local_hub import LocalHub
from tests.dagster_web import free_port, gql, serving
from tests.waiting import until

ROOT = Path(__file__).resolve().parents[1]
REPO = "local/gistforge-medi-mteb-triplets"
TASKS = ["Banking77Classification", "ChatterbotTopics"]
# Dagster's backfill daemon sleeps a fixed 30 s between iterations (`DEFAULT_DAEMON_INTERVAL_SECONDS`, not an
# instance setting: `dagster._daemon.backfill`, 1.13) and a rebuild needs four; the test's daemon is the stock one
# with that pause at 2 s (at 30 s the four rebuilds would add ~8 minutes to CI). This is the project's one use of a
# private Dagster module. The status enums the public `DagsterInstance` methods return (backfill, sensor, tick)
# are not exported either (1.13), so they are compared by name: the names the UI and the GraphQL API show.
DAEMON = ("import sys; import dagster._daemon.controller as c; c.DEFAULT_DAEMON_INTERVAL_SECONDS = 2; "
          "from dagster._daemon.cli import cli; sys.argv[0] = 'dagster-daemon'; cli(obj={})")
START = """mutation($s: SensorSelector!) { startSensor(sensorSelector: $s) {
  __typename ... on Sensor { sensorState { status } } ... on PythonError { message } } }"""
STOP = """mutation($o: String, $s: String) { stopSensor(jobOriginId: $o, jobSelectorId: $s) {
  __typename ... on StopSensorMutationResult { instigationState { status } } ... on PythonError { message } } }"""
RUN_COORDINATOR = """
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
"""


class Deployment:
    """A daemon, an instance and a gistforge home, as a team would run them, in `tmp_path`."""

    def __init__(self, tmp_path: Path):
        self.home, self.dagster_home = tmp_path / "home", tmp_path / "dagster_home"
        self.dagster_home.mkdir()
        # the shipped instance settings (run and pool limits), queued runs dequeued every second
        (self.dagster_home / "dagster.yaml").write_text((ROOT / "dagster.yaml").read_text() + RUN_COORDINATOR)
        self.source = tmp_path / "chatterbot_topics.jsonl"
        shutil.copy(SAMPLE_DIR / "chatterbot_topics.jsonl", self.source)
        cfg = embedded_profile()
        tasks = [t.model_copy(update={"path": self.source}) if t.kind == "local" else t
                 for t in cfg.tasks if t.name in TASKS]
        config = tmp_path / "config.yaml"
        config.write_text(yaml.safe_dump(cfg.model_copy(update={"tasks": tasks}).model_dump(mode="json")))
        self.env = {**os.environ, "DAGSTER_HOME": str(self.dagster_home), "GISTFORGE_HOME": str(self.home),
                    "GISTFORGE_CONFIG": str(config), "GISTFORGE_REBUILD_CRON": "* * * * *",
                    "GISTFORGE_REBUILD_INTERVAL_S": "5", "FRESHNESS_DAEMON_INTERVAL_SECONDS": "5",
                    "GISTFORGE_EXECUTOR": "in_process",  # no process start-up per step: ~15 s saved a run
                    "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        self.location = ["-m", "assets.definitions", "-d", str(ROOT)]
        self.instance = dg.DagsterInstance.from_config(str(self.dagster_home))  # creates the storage once
        self.log = tmp_path / "daemon.log"
        self.daemon: subprocess.Popen | None = None
        self.ui: contextlib.ExitStack = contextlib.ExitStack()
        self.url = ""
        self.t0 = time.time()

    def say(self, message: str) -> None:
        print(f"[{time.time() - self.t0:6.1f}s] {message}", flush=True)

    def start_daemon(self) -> None:
        with open(self.log, "w") as out:
            self.daemon = subprocess.Popen([sys.executable, "-c", DAEMON, "run", *self.location], cwd=ROOT,
                                           env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        port = free_port()
        web = [str(Path(sys.executable).parent / "dagster-webserver"), *self.location, "-h", "127.0.0.1",
               "-p", str(port)]
        self.url = self.ui.enter_context(serving(web, ROOT, self.env, self.log.with_name("webserver.log"), port))

    def stop_daemon(self) -> None:
        self.ui.close()
        if self.daemon and self.daemon.poll() is None:
            os.killpg(self.daemon.pid, signal.SIGTERM)
            try:
                self.daemon.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.daemon.pid, signal.SIGKILL)
        self.instance.dispose()

    def dagster(self, *args: str) -> str:
        done = subprocess.run([str(Path(sys.executable).parent / "dagster"), *args, *self.location], cwd=ROOT,
                              env=self.env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def sensor_state(self):
        [state] = [s for s in self.instance.all_instigator_state() if s.name == "weekly_rebuild"]
        return state

    def switch(self, on: bool) -> None:
        """The UI's toggle on `weekly_rebuild`: the mutation its switch sends."""
        state = self.sensor_state()
        if on:
            origin = state.origin.repository_origin
            done = gql(self.url, START, {"s": {"repositoryLocationName": origin.code_location_origin.location_name,
                                               "repositoryName": origin.repository_name,
                                               "sensorName": "weekly_rebuild"}})["startSensor"]
            assert done.get("sensorState", {}).get("status") == "RUNNING", done
        else:
            done = gql(self.url, STOP, {"o": state.instigator_origin_id, "s": state.selector_id})["stopSensor"]
            assert done.get("instigationState", {}).get("status") == "STOPPED", done

    def wait(self, what: str, found, timeout_s: float = 300):
        return until(what, found, timeout_s, every_s=1, proc=self.daemon,
                     log=lambda: "daemon log:\n" + self.log.read_text()[-4000:])

    def evaluations(self) -> list:
        state = self.sensor_state()
        return [t for t in self.instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=5)
                if t.status.value != "STARTED"]

    def rebuild(self, n: int):
        """Switch on, wait for the tick's backfill and the sensor's next look, switch off (another tick is at
        most a minute away, and a rebuild takes longer), let the backfill end."""
        known = {b.backfill_id for b in self.instance.get_backfills()}
        if n > 1:
            self.switch(True)
        backfill = self.wait(f"tick {n}", lambda: next((b for b in self.instance.get_backfills()
                                                         if b.backfill_id not in known), None), timeout_s=300)
        requested_at = backfill.backfill_timestamp
        self.wait("the sensor's next evaluation", lambda: any(t.timestamp > requested_at for t in self.evaluations()),
                  timeout_s=120)
        self.switch(False)
        self.say(f"tick {n}: backfill {backfill.backfill_id} from sensor {backfill.tags.get('dagster/sensor_name')}")
        done = self.wait(f"end of backfill {backfill.backfill_id}", lambda: (
            b if (b := self.instance.get_backfill(backfill.backfill_id)).status.value != "REQUESTED"
            else None), timeout_s=900)
        runs = sorted(self.instance.get_run_records(dg.RunsFilter(tags={"dagster/backfill": backfill.backfill_id})),
                      key=lambda r: r.create_timestamp)
        self.say(f"tick {n}: backfill {done.status.value}, runs " + ", ".join(
            "+".join(sorted(_assets(r))) + (f"[{r.dagster_run.tags['dagster/partition']}]"
                                            if "dagster/partition" in r.dagster_run.tags else "")
            + f"={r.dagster_run.status.value}" for r in runs))
        return done, runs

    def tags(self) -> dict[str, str]:
        return LocalHub(self.home / "hub").tags(REPO)

    def freshness(self) -> str | None:
        key = dg.AssetKey("published_dataset")
        record = self.instance.get_freshness_state_records([key]).get(key)
        return record.freshness_state.value if record else None

    def published(self) -> dict:
        event = self.instance.get_latest_materialization_event(dg.AssetKey("published_dataset"))
        return {k: v.value for k, v in event.asset_materialization.metadata.items()} | {"run_id": event.run_id}


def _assets(record) -> set[str]:
    return {k.to_user_string() for k in record.dagster_run.asset_selection}


def _materialized_at(instance: dg.DagsterInstance, records) -> dict:
    """When runs started (`start`) and when each of their assets was last materialized."""
    times: dict = {"start": [r.start_time for r in records]}
    for r in records:
        for e in instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            key = e.dagster_event.asset_key.to_user_string()
            times[key] = max(times.get(key, 0.0), e.timestamp)
    return times


def _reused(instance: dg.DagsterInstance, records) -> dict[str, bool]:
    """Whether each ingest/mine stage of the runs reused its output (`asset[partition]` -> reused)."""
    out = {}
    for r in records:
        for e in instance.all_logs(r.dagster_run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION):
            m = e.dagster_event.event_specific_data.materialization
            if "reused" in m.metadata:
                out[m.asset_key.to_user_string() + (f"[{m.partition}]" if m.partition else "")] = \
                    m.metadata["reused"].value
    return out


def _check_evaluations(instance: dg.DagsterInstance, run_id: str) -> dict[str, bool]:
    return {e.dagster_event.event_specific_data.check_name: e.dagster_event.event_specific_data.passed
            for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION)}


@pytest.mark.slow
def test_one_switch_rebuilds_by_dependency_publishes_only_changes_and_stops_on_a_failed_check(tmp_path):
    d = Deployment(tmp_path)
    d.start_daemon()
    try:
        # the one switch: nothing else is turned on by hand
        assert "Started sensor weekly_rebuild" in d.dagster("sensor", "start", "weekly_rebuild")
        assert d.sensor_state().status.value == "RUNNING"

        # tick 1: ingest -> every partition (ingest + mine) -> build + checks -> publish, in that order
        backfill, runs = d.rebuild(1)
        assert backfill.status.value == "COMPLETED_SUCCESS"
        assert [_assets(r) for r in runs] == [{"mteb_test_texts", "medi_triplets"},
                                              *[{"mteb_train_split", "mined_triplets"}] * len(TASKS),
                                              {"triplet_dataset", "published_dataset"}]
        assert sorted(r.dagster_run.tags["dagster/partition"] for r in runs[1:-1]) == sorted(TASKS)
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs)
        # each run started only after what it depends on was materialized (the reference; MEDI and every task)
        ingest, partitions, build = (_materialized_at(d.instance, r) for r in (runs[:1], runs[1:-1], runs[-1:]))
        assert all(start >= ingest["mteb_test_texts"] for start in partitions["start"]), "mined on an old reference"
        assert build["start"][0] >= max(ingest["medi_triplets"], partitions["mined_triplets"]), "built too early"
        first = d.published()
        assert first["status"] == "published" and first["run_id"] == runs[-1].dagster_run.run_id
        assert d.tags() == {first["tag"]: first["content_hash"][:40]}
        assert all(_check_evaluations(d.instance, runs[-1].dagster_run.run_id).values())
        # the freshness policy: the daemon's freshness evaluation now calls the published dataset fresh
        d.wait("freshness PASS", lambda: d.freshness() == "PASS", timeout_s=180)

        # tick 2, nothing changed: the whole graph reruns, reuses every output and publishes nothing new
        backfill, runs = d.rebuild(2)
        assert backfill.status.value == "COMPLETED_SUCCESS"
        assert set(_reused(d.instance, runs).values()) == {True}
        second = d.published()
        assert second["status"] == "unchanged" and second["tag"] == first["tag"]
        assert second["run_id"] == runs[-1].dagster_run.run_id
        assert d.tags() == {first["tag"]: first["content_hash"][:40]}

        # tick 3, the local source gained two rows: a new version, tagged, with the first as its predecessor
        with open(d.source, "a") as f:
            f.write('{"utterance": "who wrote the iliad and the odyssey", "topic": "literature"}\n'
                    '{"utterance": "which team won the world series this year", "topic": "sports"}\n')
        backfill, runs = d.rebuild(3)
        assert backfill.status.value == "COMPLETED_SUCCESS"
        redone = {k for k, reused in _reused(d.instance, runs).items() if not reused}
        assert {"mteb_train_split[ChatterbotTopics]", "mined_triplets[ChatterbotTopics]"} <= redone
        third = d.published()
        assert third["status"] == "published" and third["tag"] != first["tag"]
        assert third["previous_tag"] == first["tag"]
        assert set(d.tags()) == {first["tag"], third["tag"]}
        assert LocalHub(d.home / "hub").latest(REPO) == third["tag"]

        # tick 4, one partition's mined triplets corrupted on disk (negatives that share their query's label):
        # mining reuses them (its inputs did not change), the blocking check fails, nothing is published
        bad = d.home / "work" / "embedded" / "triplets" / "Banking77Classification.parquet"
        pl.read_parquet(bad).with_columns(neg_label=pl.col("query_label")).write_parquet(bad)
        report = bad.with_suffix(".json")  # ... as its mining step committed it (the report names the file it wrote)
        report.write_text(json.dumps({**json.loads(report.read_text()), "output_identity": atomic.identity(bad)}))
        backfill, runs = d.rebuild(4)
        assert backfill.status.value == "COMPLETED_FAILED"
        assert _reused(d.instance, runs)["mined_triplets[Banking77Classification]"] is True
        failed = runs[-1]
        assert _assets(failed) == {"triplet_dataset", "published_dataset"}
        assert failed.dagster_run.status == dg.DagsterRunStatus.FAILURE
        assert all(r.dagster_run.status == dg.DagsterRunStatus.SUCCESS for r in runs[:-1])
        checks = _check_evaluations(d.instance, failed.dagster_run.run_id)
        assert checks["negative_label_differs"] is False
        assert all(passed for name, passed in checks.items() if name != "negative_label_differs")
        assert d.published()["run_id"] == third["run_id"], "published_dataset did not run"
        assert set(d.tags()) == {first["tag"], third["tag"]}
        assert LocalHub(d.home / "hub").latest(REPO) == third["tag"]

        # and the failure is recorded where a user looks: an observation on published_dataset
        def failure_observation():
            record = d.instance.fetch_observations(dg.AssetKey("published_dataset"), limit=1).records
            return record[0].asset_observation if record else None

        seen = d.wait("failure observation", failure_observation, timeout_s=180)  # the failure sensor: every 30 s
        meta = {k: v.value for k, v in seen.metadata.items()}
        assert meta["rebuild_status"] == "failed" and meta["failed_run_id"] == failed.dagster_run.run_id
        assert meta["failed_backfill"] == backfill.backfill_id
        assert any(c.startswith("negative_label_differs") for c in meta["failed_checks"])
        assert "gistforge: rebuild failed" in seen.description and "negative_label_differs" in seen.description
        assert f"gistforge: rebuild failed: run {failed.dagster_run.run_id}" in d.log.read_text(), "no log line"
        d.say(f"failure recorded: {seen.description[:300]}")
    finally:
        d.stop_daemon()
