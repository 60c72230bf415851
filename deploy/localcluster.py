"""A gistforge deployment on this machine's loopback, with real servers: PostgreSQL (runs, events, schedules and
sensors, concurrency pools), Redis (the Celery broker and result store), the Dagster daemon with the queued run
coordinator, and N dagster-celery workers. What tests/test_deployment.py and benchmarks/distributed_overhead.py
run; the same commands, instance file (deploy/dagster.yaml) and worker settings (deploy/celery.yaml) as a cluster.

    with LocalCluster(root, home, workers=2) as cluster:
        tag = cluster.build(["banking77", ...])    # ingest_medi, the task partitions at once, build_and_publish

Servers run as the current user in temporary folders (as `postgres` through `runuser` when that user is root,
because `initdb` refuses root). Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


class Unavailable(RuntimeError):
    """A server program this needs is not installed."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def pg_bin(name: str) -> str:
    for candidate in [shutil.which(name), *sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"), reverse=True)]:
        if candidate and Path(candidate).exists():
            return str(Path(candidate).resolve())
    raise Unavailable(f"PostgreSQL's {name} is not installed (apt-get install postgresql)")


def redis_bin() -> str:
    exe = shutil.which("redis-server") or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    if not exe:
        raise Unavailable("redis-server is not installed (apt-get install redis-server)")
    return exe


def check_servers() -> None:
    """Raises Unavailable naming the first server program that is missing."""
    pg_bin("initdb"), pg_bin("pg_ctl"), redis_bin()
    if os.geteuid() == 0 and not shutil.which("runuser"):
        raise Unavailable("running as root needs runuser to start PostgreSQL as the postgres user")


class Postgres:
    """A PostgreSQL server on 127.0.0.1:<free port>, data in a temporary folder, trust auth for loopback."""

    def __init__(self, user: str = "dagster", db: str = "dagster"):
        self.initdb, self.pg_ctl = pg_bin("initdb"), pg_bin("pg_ctl")
        self.user, self.db, self.port = user, db, free_port()
        self.as_postgres = os.geteuid() == 0
        self.dir = Path(tempfile.mkdtemp(prefix="gistforge-pg-"))
        self.data = self.dir / "data"

    def _run(self, args: list[str], **kw) -> subprocess.CompletedProcess:
        if self.as_postgres:
            args = ["runuser", "-u", "postgres", "--", *args]
        return subprocess.run(args, capture_output=True, text=True, **kw)

    def start(self) -> "Postgres":
        if self.as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")
        self.dir.chmod(0o755)
        r = self._run([self.initdb, "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8",
                       "--no-sync"], timeout=120)
        if r.returncode:
            raise RuntimeError(f"initdb failed: {r.stderr.strip()}")
        self.resume()
        r = self._run([str(Path(self.initdb).with_name("psql")), "-h", "127.0.0.1", "-p", str(self.port), "-U",
                       self.user, "-d", "postgres", "-c", f"CREATE DATABASE {self.db}"], timeout=60)
        if r.returncode:
            raise RuntimeError(f"creating database {self.db} failed: {r.stderr.strip()}")
        return self

    def resume(self) -> None:
        r = self._run([self.pg_ctl, "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60",
                       "-o", f"-h 127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=200",
                       "start"], timeout=90)
        if r.returncode:
            raise RuntimeError(f"pg_ctl start failed: {r.stderr.strip()} {r.stdout.strip()}")

    def stop(self, mode: str = "fast") -> None:
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "stop"], timeout=60)

    def query(self, sql: str) -> list[tuple]:
        import psycopg2

        with psycopg2.connect(host="127.0.0.1", port=self.port, user=self.user, dbname=self.db) as conn:
            with conn.cursor() as cur:
                cur.execute(sql)
                return cur.fetchall()

    def env(self) -> dict[str, str]:
        return {"DAGSTER_PG_HOST": "127.0.0.1", "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": "", "DAGSTER_PG_DB": self.db}

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.dir, ignore_errors=True)


class Redis:
    """redis-server on 127.0.0.1:<free port>, no persistence."""

    def __init__(self):
        self.exe, self.port, self.proc = redis_bin(), free_port(), None
        self.dir = Path(tempfile.mkdtemp(prefix="gistforge-redis-"))

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "Redis":
        self.proc = subprocess.Popen([self.exe, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                                      "--appendonly", "no", "--dir", str(self.dir)],
                                     stdout=open(self.dir / "redis.log", "w"), stderr=subprocess.STDOUT)
        _wait_port(self.port, "redis-server")
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(30)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class LocalCluster:
    """Postgres + Redis + the daemon + `workers` dagster-celery workers, all sharing `home` (GISTFORGE_HOME)."""

    def __init__(self, root: Path, home: Path, workers: int = 2, profile: str | None = "embedded",
                 config: Path | None = None, guide_slots: int | None = None, extra_env: dict | None = None,
                 queues: dict[str, list[str]] | None = None, visibility_timeout_s: int | None = None):
        """`queues`: a worker's Celery queues by name (default: `dagster` only); `visibility_timeout_s`: the
        workers' deploy/celery.yaml with that visibility timeout instead (how soon a dead worker's step is
        requeued)."""
        self.root, self.home, self.n_workers = Path(root), Path(home), workers
        self.queues, self.visibility_timeout_s = queues or {}, visibility_timeout_s
        self.guide_slots = guide_slots or workers  # one guide_model slot per worker (per GPU on a cluster)
        self.dagster_home = self.root / "dagster_home"
        self.logs = self.root / "logs"
        self.pg: Postgres | None = None
        self.redis: Redis | None = None
        self.daemon: subprocess.Popen | None = None
        self.workers: dict[str, subprocess.Popen] = {}
        self._profile, self._config, self._extra = profile, config, extra_env or {}
        self.instance = None

    # ------------------------------------------------------------------------------------------ lifecycle

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GISTFORGE_", "DAGSTER_"))}
        env.update(self.pg.env())
        env.update({"DAGSTER_HOME": str(self.dagster_home), "GISTFORGE_HOME": str(self.home),
                    "GISTFORGE_EXECUTOR": "celery", "GISTFORGE_CELERY_BROKER": self.redis.url,
                    "GISTFORGE_CELERY_BACKEND": self.redis.url, "HF_HUB_OFFLINE": "1",
                    "TOKENIZERS_PARALLELISM": "false", "PATH": f"{BIN}{os.pathsep}{env.get('PATH', '')}",
                    "PYTHONUNBUFFERED": "1"})
        if self._config:
            env["GISTFORGE_CONFIG"] = str(self._config)
        elif self._profile:
            env["GISTFORGE_PROFILE"] = self._profile
        if self.visibility_timeout_s is not None:
            env["GISTFORGE_CELERY_WORKER_YAML"] = str(self.root / "celery.yaml")
        env.update(self._extra)
        return env

    def __enter__(self) -> "LocalCluster":
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        self.dagster_home.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / "deploy" / "dagster.yaml", self.dagster_home / "dagster.yaml")
        if self.visibility_timeout_s is not None:
            import yaml

            celery = yaml.safe_load((REPO / "deploy" / "celery.yaml").read_text())
            celery["execution"]["config"]["config_source"]["broker_transport_options"].update(
                visibility_timeout=self.visibility_timeout_s, unacked_restore_interval=2)
            (self.root / "celery.yaml").write_text(yaml.safe_dump(celery))
        self.pg = Postgres().start()
        self.redis = Redis().start()
        self.instance = self.open_instance()
        self.instance.event_log_storage.set_concurrency_slots("guide_model", self.guide_slots)
        self.start_daemon()
        for i in range(self.n_workers):
            self.start_worker(f"w{i + 1}")
        self.wait_for_workers()

    def open_instance(self):
        from dagster import DagsterInstance

        os.environ.update({k: v for k, v in self.env().items() if k.startswith("DAGSTER_PG_")})
        return DagsterInstance.from_config(str(self.dagster_home))

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen:
        log = open(self.logs / f"{name}.log", "ab")
        return subprocess.Popen(args, cwd=REPO, env=self.env(), stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)

    def start_daemon(self) -> None:
        self.daemon = self._spawn("daemon", [str(BIN / "dagster-daemon"), "run", "-m", "assets.definitions",
                                             "-a", "defs"])

    def start_worker(self, name: str) -> None:
        # deploy/worker.sh: dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml -n NAME -q QUEUE..
        #   -- --concurrency=1 --without-gossip --without-mingle
        self.workers[name] = self._spawn(name, ["bash", str(REPO / "deploy" / "worker.sh"), name,
                                                *self.queues.get(name, [])])

    def wait_for_workers(self, timeout: float = 180) -> None:
        """Until every worker answers a ping through the broker."""
        from celery import Celery

        app = Celery(broker=self.redis.url, backend=self.redis.url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            replies = app.control.ping(timeout=1.0) or []
            names = {n.split("@")[0] for r in replies for n in r}
            if names >= set(self.workers):
                return
            dead = [n for n, p in self.workers.items() if p.poll() is not None]
            if dead:
                raise RuntimeError(f"workers {dead} exited; see {self.logs}")
        raise RuntimeError(f"workers did not answer within {timeout}s; see {self.logs}")

    def worker_pids(self, name: str) -> list[int]:
        """The processes of one worker: its launcher, the celery main process and its pool child."""
        out = subprocess.run(["ps", "-o", "pid=", "--sid", str(self.workers[name].pid)], capture_output=True,
                             text=True).stdout
        return [int(p) for p in out.split()]

    def kill_worker(self, name: str) -> None:
        os.killpg(self.workers[name].pid, signal.SIGKILL)
        self.workers[name].wait(30)

    def _stop(self, proc: subprocess.Popen | None) -> None:
        """SIGTERM to the process's whole group, then SIGKILL to what is left of it: the daemon's code server
        (`dagster api grpc`) shares its group and outlived a daemon that had exited on SIGTERM."""
        if proc is None:
            return
        with contextlib.suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)

    def close(self) -> None:
        for proc in [*self.workers.values(), self.daemon]:
            self._stop(proc)
        if self.instance is not None:
            self.instance.dispose()
        if self.redis:
            self.redis.cleanup()
        if self.pg:
            self.pg.cleanup()

    # ----------------------------------------------------------------------------------------------- runs

    def launch(self, job: str, partition: str | None = None, timeout: float = 120,
               tags: dict[str, str] | None = None) -> str:
        """Submit a run through the queued run coordinator (`dagster job launch`); returns its run id."""
        marker = uuid.uuid4().hex
        tags = {**(tags or {}), "gistforge/launch": marker,
                **({"dagster/partition": partition} if partition else {})}
        r = subprocess.run([str(BIN / "dagster"), "job", "launch", "-m", "assets.definitions", "-a", "defs",
                            "-j", job, "--tags", json.dumps(tags)], cwd=REPO, env=self.env(), capture_output=True,
                           text=True, timeout=timeout)
        if r.returncode:
            raise LaunchFailed(f"dagster job launch {job} failed ({r.returncode}): {r.stderr.strip()[-4000:]}")
        from dagster import RunsFilter

        runs = self.instance.get_runs(RunsFilter(tags={"gistforge/launch": marker}))
        assert len(runs) == 1, runs
        return runs[0].run_id

    def wait(self, run_ids: list[str], timeout: float = 900) -> dict[str, str]:
        """Until every run has finished; {run id: status}."""
        from dagster import DagsterRunStatus

        done = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
        deadline = time.monotonic() + timeout
        while True:
            runs = {r: self.instance.get_run_by_id(r) for r in run_ids}
            if all(run.status in done for run in runs.values()):
                return {r: run.status.value for r, run in runs.items()}
            if time.monotonic() > deadline:
                raise TimeoutError(f"runs not finished after {timeout}s: "
                                   f"{ {r: run.status.value for r, run in runs.items()} }")
            time.sleep(1)

    def build(self, tasks: list[str], timeout: float = 900) -> dict[str, str]:
        """The rebuild plan without fine-tuning, the task partitions launched together; {run id: status}."""
        statuses = self.wait([self.launch("ingest_medi")], timeout)
        if set(statuses.values()) != {"SUCCESS"}:
            return statuses
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(len(tasks)) as pool:  # `dagster job launch` loads the code location: launch at once
            ids = list(pool.map(lambda t: self.launch("ingest_and_mine", t), tasks))
        parts = self.wait(ids, timeout)
        statuses.update(parts)
        if set(parts.values()) != {"SUCCESS"}:
            return statuses
        statuses.update(self.wait([self.launch("build_and_publish")], timeout))
        return statuses

    def step_workers(self, run_id: str) -> dict[str, str]:
        """{step key: the Celery worker that ran it}, from the run's engine events."""
        from dagster import DagsterEventType

        out = {}
        for entry in self.instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
            md = entry.dagster_event.engine_event_data.metadata if entry.dagster_event else {}
            if "Celery worker" in md:
                out[entry.step_key] = md["Celery worker"].value
        return out

    def failure_text(self, run_id: str) -> str:
        """Every error message of a run, for assertions and reports."""
        lines = []
        for entry in self.instance.all_logs(run_id):
            event = entry.dagster_event
            data = getattr(event, "event_specific_data", None) if event else None
            error = getattr(data, "error", None)
            if error is not None:
                lines.append(error.to_string())
            elif event is not None and event.is_failure:
                lines.append(event.message or "")
            if event is not None and event.event_type_value == "ENGINE_EVENT" and event.message and \
                    "error" in event.message.lower():
                lines.append(event.message)
        return "\n".join(lines)


class LaunchFailed(RuntimeError):
    pass
