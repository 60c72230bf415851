"""The production deployment on real servers (issue 14, part 2): PostgreSQL for the instance, Redis as the Celery
broker, the Dagster daemon with the queued run coordinator, and two dagster-celery workers sharing one work folder
and embedding cache (deploy/localcluster.py starts them on loopback; deploy/dagster.yaml, deploy/celery.yaml).

The module's tests share one cluster and run in file order: a worker's step process killed mid-step, a whole
worker killed mid-step, then the embedded build (no fine-tuning) across both workers, its tag against the
in-process build's, a rebuild that publishes nothing new, then the broker and the database stopped. They skip, with the reason, only when PostgreSQL, redis-server or the deploy extra is not installed.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from pipeline.road.embedding_cache import EmbeddingCache
from tests.waiting import until

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "deploy"))


# ------------------------------------------------------------------ the shared cache under concurrent writers


def _writer(root: str, seed: int, rounds: int) -> None:
    rng = np.random.default_rng(seed)
    cache = EmbeddingCache(Path(root), "k")
    for r in range(rounds):
        # overlapping chunks: every writer stores chunk `r` of the same texts (same name) and one of its own
        for ids in (np.arange(r * 50, r * 50 + 50), np.arange(10_000 * (seed + 1) + r * 7, 10_000 * (seed + 1) + r * 7 + 7)):
            hashes = np.array([int(i).to_bytes(32, "big") for i in ids], dtype="S32")
            vecs = np.repeat(ids[:, None].astype(np.float32), 8, axis=1) + rng.normal(0, 1e-7, (len(ids), 8))
            cache.store(hashes, vecs.astype(np.float32))


def test_embedding_cache_stays_correct_with_two_concurrent_writers(tmp_path):
    """Two processes writing the same content-addressed cache at once (same chunks and their own): every chunk a
    reader sees is whole, every vector belongs to its text, and no temporary file is left visible as a chunk."""
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), seed, 40)) for seed in (0, 1)]
    for p in procs:
        p.start()
    reader = EmbeddingCache(tmp_path, "k")
    while any(p.is_alive() for p in procs):  # a reader meanwhile only ever sees whole chunks
        reader.refresh()
    for p in procs:
        p.join()
        assert p.exitcode == 0
    fresh = EmbeddingCache(tmp_path, "k")
    assert len(fresh) == 40 * 50 + 2 * 40 * 7
    ids = np.array(sorted({*range(2000), *(10_000 + r * 7 + j for r in range(40) for j in range(7)),
                           *(20_000 + r * 7 + j for r in range(40) for j in range(7))}))
    vecs, found = fresh.lookup(np.array([int(i).to_bytes(32, "big") for i in ids], dtype="S32"))
    assert found.all()
    np.testing.assert_allclose(vecs[:, 0], ids, atol=1e-3)
    assert not [f for f in (tmp_path / "k").iterdir() if not f.name.startswith("chunk-")]
    reader.refresh()
    assert len(reader) == len(fresh)


# ---------------------------------------------------------------- executor choice and the deployment's files


@pytest.mark.parametrize("env, executor", [
    ({}, "multi_or_in_process_executor"),  # unchanged default
    ({"GISTFORGE_EXECUTOR": "celery", "GISTFORGE_CELERY_BROKER": "redis://127.0.0.1:1/0"}, "celery"),
    ({"GISTFORGE_EXECUTOR": "k8s"}, "k8s"),
    ({"GISTFORGE_EXECUTOR": "k8s", "GISTFORGE_GUIDE_DEVICE": "cpu"}, "k8s"),
])
def test_executor_choice_resolves_for_every_job(env, executor, tmp_path):
    import dagster as dg

    from assets.automation import rebuild_plan
    from assets.definitions import build_definitions, guide_steps, k8s_executor_config
    from assets.settings import Deployment
    from pipeline.profiles import load_config

    if executor in ("celery", "k8s"):
        pytest.importorskip("dagster_celery" if executor == "celery" else "dagster_k8s",
                            reason="the deploy extra is not installed: pip install -e '.[deploy]'")
    cfg = load_config(None, "embedded")
    deployment = Deployment.from_env(env, home=str(tmp_path))
    defs = build_definitions(cfg, deployment)
    for step in rebuild_plan([t.name for t in cfg.included_tasks]):
        job = defs.resolve_job_def(step.job)
        assert job.executor_def.name == executor
        resolved = dg.validate_run_config(job, {})  # Dagster resolves the executor's own config schema
        assert "execution" in resolved and job.graph.node_dict
    if executor == "k8s":
        per_step = k8s_executor_config(deployment, guide_steps(cfg))["per_step_k8s_config"]
        assert set(per_step) == (set() if deployment.guide_device == "cpu" else {"mined_triplets", "finetuned_encoder"})
        assert set(guide_steps(cfg)) <= {key for job in defs.resolve_all_job_defs() for key in job.graph.node_dict}


def test_celery_without_a_broker_is_a_clear_error(tmp_path):
    from assets.definitions import executor_for
    from assets.settings import Deployment

    with pytest.raises(ValueError, match="GISTFORGE_CELERY_BROKER"):
        executor_for(Deployment.from_env({"GISTFORGE_EXECUTOR": "celery"}, home=str(tmp_path)), [])


def test_guide_steps_go_to_the_guide_queue_only_when_one_is_set(tmp_path):
    """The steps that load the guide (MEDI's ingest too when the near-duplicate pass is on) go to the guide
    queue and share the `guide_model` pool; no queue is named when none is set."""
    from assets.definitions import build_definitions
    from assets.settings import Deployment, config_from_env
    from pipeline.config import DecontaminationConfig

    embedded = config_from_env({})
    near = embedded.model_copy(update={"decontamination": DecontaminationConfig(near_duplicate_threshold=0.95)})

    def steps(cfg, environ: dict) -> dict[str, tuple[str | None, str | None]]:
        defs = build_definitions(cfg, Deployment.from_env(environ, home=str(tmp_path)))
        jobs = defs.get_repository_def().get_all_jobs()
        return {n.name: (n.tags.get("dagster-celery/queue"), n.definition.pool)
                for j in jobs for n in j.graph.node_dict.values()}

    for cfg, guided in ((embedded, {"mined_triplets", "finetuned_encoder"}),
                        (near, {"medi_triplets", "mined_triplets", "finetuned_encoder"})):
        tagged = steps(cfg, {"GISTFORGE_GUIDE_QUEUE": "guide"})
        assert {n for n, (q, _) in tagged.items() if q} == guided
        assert {n for n, (_, pool) in tagged.items() if pool == "guide_model"} == guided
        assert {q for q, _ in tagged.values() if q} == {"guide"}
        assert not any(q for q, _ in steps(cfg, {}).values())


def test_deploy_files_agree():
    """deploy/dagster.yaml queues runs; the worker settings are the executor's; the Helm values
    run the same code location with the k8s executor, GISTFORGE_HOME on the shared volume, the queued coordinator."""
    import yaml

    from assets.settings import CELERY_SETTINGS

    instance = yaml.safe_load((REPO / "deploy" / "dagster.yaml").read_text())
    assert instance["run_coordinator"]["class"] == "QueuedRunCoordinator"  # Dagster opens it in the next test
    celery = yaml.safe_load((REPO / "deploy" / "celery.yaml").read_text())["execution"]["config"]
    assert celery["config_source"] == CELERY_SETTINGS

    values = yaml.safe_load((REPO / "deploy" / "helm-values.yaml").read_text())
    (code,) = values["dagster-user-deployments"]["deployments"]
    assert code["dagsterApiGrpcArgs"] == ["-m", "assets.definitions", "-a", "defs"]
    env = {e["name"]: e["value"] for e in code["env"]}
    assert env["GISTFORGE_EXECUTOR"] == "k8s"
    mounts = {m["mountPath"] for m in code["volumeMounts"]}
    launcher = values["runLauncher"]
    assert launcher["type"] == "K8sRunLauncher"
    assert {m["mountPath"] for m in launcher["config"]["k8sRunLauncher"]["volumeMounts"]} == mounts
    assert any(env["GISTFORGE_HOME"].startswith(m + "/") for m in mounts)
    assert values["dagsterDaemon"]["runCoordinator"]["type"] == "QueuedRunCoordinator"
    assert values["postgresql"]["enabled"] is False


@pytest.mark.slow
@pytest.mark.parametrize("source", ["deploy/dagster.yaml", "docs/deploy.md"])
def test_the_postgres_instance_settings_open_a_real_instance(source, tmp_path, monkeypatch):
    """deploy/dagster.yaml and the storage block docs/deploy.md shows are read by Dagster itself against a
    PostgreSQL server started on loopback (skipped where Debian's postgresql is not installed)."""
    import re

    import dagster as dg

    pytest.importorskip("dagster_postgres", reason="the deploy extra is not installed: pip install -e '.[deploy]'")
    from localcluster import Postgres, Unavailable, pg_bin

    try:
        pg_bin("initdb")
    except Unavailable as exc:
        pytest.skip(str(exc))
    text = (REPO / source).read_text()
    if source.endswith(".md"):
        text = re.search(r"```yaml\n(storage:.*?)```", text, re.S).group(1)
    (tmp_path / "dagster.yaml").write_text(text)
    server = Postgres().start()
    try:
        for key, value in server.env().items():
            monkeypatch.setenv(key, value)
        with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
            assert type(instance.run_storage).__name__ == "PostgresRunStorage"
            assert instance.get_runs() == []  # the schema was created and answers
            if source == "deploy/dagster.yaml":
                assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
    finally:
        server.cleanup()


# ------------------------------------------------------------------------------------------- the cluster

TASKS = ["Banking77Classification", "ImdbClassification", "ChatterbotTopics"]
VISIBILITY_S = 45


def _cluster_or_skip(root: Path, home: Path):
    try:
        import dagster_celery  # noqa: F401
        import dagster_postgres  # noqa: F401
        import redis  # noqa: F401
    except ImportError as exc:
        pytest.skip(f"the deploy extra is not installed ({exc.name}): pip install -e '.[deploy]'")
    from localcluster import LocalCluster, Unavailable, check_servers

    try:
        check_servers()
    except Unavailable as exc:
        pytest.skip(str(exc))
    # w2 stands for a GPU worker: it alone serves the guide queue (mining, fine-tuning); a dead worker's step is
    # requeued after VISIBILITY_S (6 h in deploy/celery.yaml), longer than any step of this build
    return LocalCluster(root, home, workers=2, queues={"w2": ["guide", "dagster"]}, visibility_timeout_s=VISIBILITY_S,
                        extra_env={"GISTFORGE_GUIDE_QUEUE": "guide"})


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    root = tmp_path_factory.mktemp("cluster")
    with _cluster_or_skip(root, root / "home") as c:
        yield c


@pytest.fixture(scope="module")
def in_process_tag(tmp_path_factory):
    """The tag of the same build run in-process by `gistforge build --no-finetune`."""
    from gistforge.cli import build
    from pipeline.profiles import load_config
    from pipeline.road.publish import last_published
    from pipeline.workspace import Workspace

    home = tmp_path_factory.mktemp("in-process")
    assert build(["build", "--home", str(home), "--no-finetune"]) == 0
    return last_published(Workspace(home, load_config(None, "embedded").profile)).tag


def _versions(home: Path) -> list[str]:
    return sorted(p.name for p in home.glob("hub/datasets--*/refs/*") if p.name != "main")


def _visible_partials(home: Path) -> list[Path]:
    """Files a reader could mistake for results: anything but the hidden temporaries atomic writes use."""
    return [p for p in home.rglob("*") if p.is_file() and any(s in p.name for s in (".tmp", ".partial"))
            and not p.name.startswith(".")]


def _step_started_on_a_worker(cluster, run: str, timeout: float = 300) -> tuple[str, str]:
    """Waits until a step of `run` has started on a worker; (step key, worker name)."""
    from dagster import DagsterEventType

    def started() -> tuple[str, str] | None:
        where = cluster.step_workers(run)
        return next(((e.step_key, where[e.step_key].split("@")[0])
                     for e in cluster.instance.all_logs(run, of_type=DagsterEventType.STEP_START)
                     if e.step_key in where), None)

    return until(f"step of run {run} started on a worker", started, timeout, every_s=0.05)


def _pool_children(cluster, worker: str) -> list[int]:
    """The Celery pool process(es) of a worker: the processes that run steps."""
    leader = cluster.workers[worker].pid
    out = subprocess.run(["ps", "-o", "pid=,ppid=", "--sid", str(leader)], capture_output=True, text=True).stdout
    rows = [tuple(map(int, line.split())) for line in out.splitlines() if line.strip()]
    main = {pid for pid, ppid in rows if ppid == leader}
    return [pid for pid, ppid in rows if ppid in main]


@pytest.mark.slow
def test_worker_killed_mid_step_fails_the_step_and_publishes_nothing(cluster):
    medi = cluster.launch("ingest_medi")
    assert cluster.wait([medi], 600)[medi] == "SUCCESS", cluster.failure_text(medi)[-2000:]
    run = cluster.launch("ingest_and_mine", TASKS[0])
    step, worker = _step_started_on_a_worker(cluster, run)
    children = _pool_children(cluster, worker)
    assert children, f"no pool process under worker {worker}"
    for pid in children:
        os.kill(pid, 9)  # the process running the step dies mid-step (as an OOM kill would do it)
    status = cluster.wait([run], 300)[run]
    text = cluster.failure_text(run)
    assert status == "FAILURE", f"the run survived the kill of {worker} in step {step} (it finished first?)"
    assert "WorkerLostError" in text or "SIGKILL" in text or "signal 9" in text, text[-2000:]
    assert _versions(cluster.home) == []  # nothing published
    assert _visible_partials(cluster.home) == []
    cluster.wait_for_workers()  # the worker's main process replaced its pool process: both workers serve again


@pytest.mark.slow
def test_whole_worker_killed_its_step_runs_again_on_a_live_worker(cluster):
    """The whole worker (main process and pool) killed mid-step, as when its machine is lost: the step's message
    was never acknowledged (acks_late), so a live worker requeues it once it is older than the visibility timeout
    and the step runs again there; the run succeeds, and nothing half-written is ever visible."""
    from dagster import DagsterEventType

    run = cluster.launch("ingest_and_mine", TASKS[1])
    step, worker = _step_started_on_a_worker(cluster, run)
    cluster.kill_worker(worker)
    killed = time.monotonic()
    replaced = step == "mined_triplets"  # only the killed worker serves the guide queue: its replacement takes it
    if replaced:
        cluster.start_worker(worker)
    until(f"second run of {step}", lambda: step in {
        e.step_key for e in cluster.instance.all_logs(run, of_type=DagsterEventType.STEP_SUCCESS)},
        killed + VISIBILITY_S + 300 - time.monotonic(), every_s=1)
    waited = time.monotonic() - killed
    ran_on = cluster.step_workers(run)[step].split("@")[0]
    if not replaced:
        cluster.start_worker(worker)  # the replacement a cluster's supervisor starts (the run's next step needs it)
    assert cluster.wait([run], 300)[run] == "SUCCESS", cluster.failure_text(run)[-2000:]
    assert replaced or ran_on != worker, f"{step} ran on {ran_on}, the worker that was killed"
    assert waited >= VISIBILITY_S - 5, "the step finished before its message could have been requeued"
    assert _visible_partials(cluster.home) == []
    assert _versions(cluster.home) == []
    print(f"\nwhole worker {worker} killed in step {step}: run again on {ran_on} {waited:.0f} s later "
          f"(visibility timeout {VISIBILITY_S} s); the run succeeded")
    cluster.wait_for_workers()


@pytest.mark.slow
def test_build_on_two_workers_publishes_the_in_process_tag(cluster, in_process_tag):
    from pipeline.road.publish import last_published
    from pipeline.workspace import Workspace

    started = time.monotonic()
    statuses = cluster.build(TASKS, timeout=900)
    wall = time.monotonic() - started
    assert set(statuses.values()) == {"SUCCESS"}, {r: cluster.failure_text(r)[-1500:] for r in statuses}
    tag = last_published(Workspace(cluster.home, "embedded")).tag
    # the same content hash; a tag's date is the day it was published, so the two builds' dates differ when
    # they straddle midnight
    assert tag.split("-", 1)[1] == in_process_tag.split("-", 1)[1], (tag, in_process_tag)
    assert _versions(cluster.home) == [tag]

    # steps ran on both workers; task partitions were in flight at the same time
    workers = {w for r in statuses for w in cluster.step_workers(r).values()}
    assert len(workers) == 2, workers
    # the guide-model steps went to the guide queue, which only w2 (the "GPU" worker) serves
    mined = {cluster.step_workers(r).get("mined_triplets") for r in statuses}
    assert {w.split("@")[0] for w in mined if w} == {"w2"}, mined
    records = {r.dagster_run.run_id: r for r in cluster.instance.get_run_records()}
    parts = [records[r] for r in statuses if records[r].dagster_run.tags.get("dagster/partition")]
    assert len(parts) == 3
    # a partition the earlier tests already mined is reused and can finish before the last one starts, so the
    # claim is that runs were in flight together, not that all three were
    spans = sorted((r.start_time, r.end_time) for r in parts)
    assert any(b[0] < a[1] for a, b in zip(spans, spans[1:])), f"no two partition runs overlapped: {spans}"

    # runs, materialisations, pools and sensor state live in Postgres
    pg = cluster.pg
    assert pg.query("select count(*) from runs where status = 'SUCCESS'")[0][0] >= 5
    mats = pg.query("select count(*) from event_logs where dagster_event_type = 'ASSET_MATERIALIZATION'")[0][0]
    assert mats >= 10
    pools = dict(pg.query('select concurrency_key, "limit" from concurrency_limits'))
    assert pools["guide_model"] == 2 and pools["hub_publish"] == 1
    assert pg.query("select count(*) from concurrency_slots where run_id is not null")[0][0] == 0  # all given back
    assert pg.query("select count(*) from instigators")[0][0] >= 1  # the daemon's sensors (rebuild_failure_sensor)
    assert pg.query("select count(*) from job_ticks")[0][0] >= 1
    print(f"\ndistributed embedded build: {wall:.1f} s on 2 workers, tag {tag}")


@pytest.mark.slow
def test_a_rebuild_on_the_workers_publishes_no_second_version(cluster):
    from pipeline.road.publish import last_published
    from pipeline.workspace import Workspace

    before = _versions(cluster.home)
    run = cluster.launch("build_and_publish")
    assert cluster.wait([run], 600)[run] == "SUCCESS"
    result = last_published(Workspace(cluster.home, "embedded"))
    assert result.status == "unchanged" and _versions(cluster.home) == before


@pytest.mark.slow
def test_broker_stopped_fails_the_run_with_a_clear_message(cluster):
    cluster.redis.stop()
    try:
        started = time.monotonic()
        run = cluster.launch("build_and_publish")
        status = cluster.wait([run], 180)[run]
        text = cluster.failure_text(run)
        assert status == "FAILURE"
        assert time.monotonic() - started < 180
        clear = [line for line in text.splitlines()
                 if any(s in line for s in ("Connection refused", "Error 111", "OperationalError", "connecting to"))]
        assert clear, text[-2000:]
        print(f"\nbroker stopped: run failed in {time.monotonic() - started:.1f} s: {clear[0].strip()}")
    finally:
        cluster.redis.start()  # same port: the workers reconnect by themselves


@pytest.mark.slow
def test_database_stopped_fails_a_launch_with_a_clear_message(cluster):
    from localcluster import LaunchFailed

    cluster.pg.stop()
    try:
        started = time.monotonic()
        with pytest.raises(LaunchFailed) as failed:
            cluster.launch("build_and_publish", timeout=120)
        assert time.monotonic() - started < 120
        message = str(failed.value)
        assert "DB connection" in message or "Connection refused" in message, message
        print(f"\ndatabase stopped: launch failed in {time.monotonic() - started:.1f} s: {message.splitlines()[-1]}")
    finally:
        cluster.pg.resume()
