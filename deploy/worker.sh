#!/usr/bin/env bash
# One gistforge Celery worker: one step at a time (one process per GPU or per two CPU cores).
#   deploy/worker.sh NAME [QUEUE ...]        e.g. deploy/worker.sh cpu0 dagster
#                                                 deploy/worker.sh gpu0 guide dagster
# Queues: `dagster` (the default) takes every step; with GISTFORGE_GUIDE_QUEUE=guide set for the code location,
# the steps that load the guide model (mining, fine-tuning) go to `guide` only, so give that queue to the workers
# that have a GPU. GISTFORGE_CELERY_WORKER_YAML overrides deploy/celery.yaml (tests shorten the visibility timeout).
# Needs the same environment as the daemon and the runs: DAGSTER_HOME (with deploy/dagster.yaml in it),
# DAGSTER_PG_*, GISTFORGE_HOME on shared storage, GISTFORGE_CELERY_BROKER/BACKEND, GISTFORGE_CONFIG or _PROFILE,
# and the repository installed (the worker imports assets.definitions:defs to rebuild the job).
set -euo pipefail
cd "$(dirname "$0")/.."
name=${1:?worker name}; shift
# one -q with the queues comma-joined: dagster-celery turns each -q into a -Q, and Celery 5 keeps only the last -Q
queues=$(IFS=,; echo "${*:-dagster}")
exec dagster-celery worker start -A dagster_celery.app -y "${GISTFORGE_CELERY_WORKER_YAML:-deploy/celery.yaml}" -n "$name" -q "$queues" \
  -- --concurrency=1 --without-gossip --without-mingle
