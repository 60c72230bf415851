#!/usr/bin/env bash
# One gistforge Celery worker: one step at a time (one process per GPU or per two CPU cores).
#   deploy/worker.sh NAME [QUEUE ...]        e.g. deploy/worker.sh gpu0 dagster
# Needs the same environment as the daemon and the runs: DAGSTER_HOME (with deploy/dagster.yaml in it),
# DAGSTER_PG_*, GISTFORGE_HOME on shared storage, GISTFORGE_CELERY_BROKER/BACKEND, GISTFORGE_CONFIG or _PROFILE,
# and the repository installed (the worker imports assets.definitions:defs to rebuild the job).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?worker name}; shift
queues=(); for q in "${@:-dagster}"; do queues+=(-q "$q"); done
exec dagster-celery worker start -A dagster_celery.app -y deploy/celery.yaml -n "$name" "${queues[@]}" \
  -- --concurrency=1 --without-gossip --without-mingle
