"""Deployment settings: where a build keeps its files, where it publishes, which device the guide uses.

The dataset's recipe is a `pipeline.config.BuildConfig`; everything about *where* it runs is here. Both are
read from the environment in one place (`from_env`), by the code location's loader and the CLI, and handed
to `assets.definitions.build_definitions` explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict

from pipeline.config import BuildConfig
from pipeline.profiles import load_config
from pipeline.workspace import Workspace

# Celery settings shared by the executor (`assets.definitions.executor_for`) and the workers (deploy/celery.yaml).
# - An unreachable broker or result store fails within seconds instead of retrying forever.
# - A step's message is acknowledged when the step ends, not when it starts (acks_late, one message per
#   worker at a time): a worker that dies whole (node lost, pod evicted, SIGKILL) leaves its step's message
#   unacknowledged in Redis, and a live worker puts it back on the queue once it is `visibility_timeout`
#   seconds old, so the step runs again elsewhere instead of being lost. The timeout must be longer than any
#   step, or a healthy long step would be run twice (harmless, every output is written atomically and
#   content-addressed, but wasted). A pool process that dies under a live worker (an OOM kill) is not
#   redelivered: that step fails at once with WorkerLostError, since it would most likely die again.
STEP_VISIBILITY_TIMEOUT_S = 6 * 3600
CELERY_SETTINGS = {"broker_connection_timeout": 5, "redis_socket_connect_timeout": 5,
                   "redis_backend_health_check_interval": 10,
                   "task_acks_late": True, "worker_prefetch_multiplier": 1,
                   "broker_transport_options": {
                       "max_retries": 3, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5,  # dagster-celery's
                       "visibility_timeout": STEP_VISIBILITY_TIMEOUT_S, "unacked_restore_interval": 10,
                       "unacked_restore_throttle": 1}}


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    publish_target: Literal["local", "hub"] = "local"
    local_hub: Path | None = None  # default: <home>/hub
    hub_private: bool = True
    hub_endpoint: str | None = None
    guide_device: str | None = None  # None: CUDA (fp16) when present (every GPU when several), else the CPU
    # in_process: every step of a run in the run's own process (no start-up per step: a small box, the tests);
    # celery: dagster-celery workers; k8s: a pod per step
    executor: Literal["default", "in_process", "celery", "k8s"] = "default"
    celery_broker: str | None = None  # e.g. redis://host:6379/0
    celery_backend: str | None = None  # default: the broker's URL (Redis stores the results too)
    guide_queue: str | None = None  # Celery: the queue of the steps that load the guide model (GPU workers)

    def guide_step_tags(self) -> dict[str, str]:
        """Op tags of the steps that load the guide model (mining, fine-tuning): on Celery, the guide queue."""
        return {"dagster-celery/queue": self.guide_queue} if self.guide_queue else {}

    def workspace(self, cfg: BuildConfig) -> Workspace:
        """The profile's workspace as its last mining round sees it: the build and the publish are that round's."""
        return Workspace(self.home, cfg.profile).at_round(cfg.mining.rounds, cfg.mining.rounds)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, home: str | None = None) -> "Deployment":
        """`GISTFORGE_HOME` (default ./.gistforge), `GISTFORGE_PUBLISH_TARGET` (local | hub),
        `GISTFORGE_LOCAL_HUB`, `GISTFORGE_HUB_PRIVATE` (0 for a public repo), `GISTFORGE_GUIDE_DEVICE`,
        `GISTFORGE_EXECUTOR` (default: Dagster's multiprocess executor; `in_process`: one process per run;
        `celery`: dagster-celery workers, with
        `GISTFORGE_CELERY_BROKER`, optionally `GISTFORGE_CELERY_BACKEND`, and `GISTFORGE_GUIDE_QUEUE`, the queue
        that only the GPU workers serve, for the steps that load the guide model; `k8s`: one Kubernetes pod per step;
        see docs/deploy.md)."""
        return cls(home=Path(home or environ.get("GISTFORGE_HOME", ".gistforge")).resolve(),
                   publish_target=environ.get("GISTFORGE_PUBLISH_TARGET", "local"),
                   local_hub=environ.get("GISTFORGE_LOCAL_HUB") or None,
                   hub_private=environ.get("GISTFORGE_HUB_PRIVATE", "1") != "0",
                   hub_endpoint=environ.get("HF_ENDPOINT") or None,
                   guide_device=environ.get("GISTFORGE_GUIDE_DEVICE") or None,
                   executor=environ.get("GISTFORGE_EXECUTOR") or "default",
                   celery_broker=environ.get("GISTFORGE_CELERY_BROKER") or None,
                   celery_backend=environ.get("GISTFORGE_CELERY_BACKEND") or None,
                   guide_queue=environ.get("GISTFORGE_GUIDE_QUEUE") or None)


def config_from_env(environ: Mapping[str, str] = os.environ) -> BuildConfig:
    """`GISTFORGE_CONFIG` (a YAML `BuildConfig`) or `GISTFORGE_PROFILE` (default `embedded`)."""
    return load_config(environ.get("GISTFORGE_CONFIG") or None, environ.get("GISTFORGE_PROFILE") or None)
