"""A build (no fine-tuning) in-process vs on two dagster-celery workers: one JSON line.

    python benchmarks/distributed_overhead.py [--workers 2]                      # the embedded profile
    HF_HUB_CACHE=../shared/data/hf-hub-cache python benchmarks/distributed_overhead.py \
        --config configs/shared-data.yaml --static-guide                         # the shared-data build

`--static-guide` swaps the guide for benchmarks/full_scale.py's seeded StaticEmbedding model, so that what is
compared is the orchestration, not two hours of MiniLM on IMDB's 25k reviews on two CPU cores (both sides use it).

In-process: `gistforge build --no-finetune` (the CLI runs the defined jobs with execute_in_process). Distributed:
deploy/localcluster.py's PostgreSQL + Redis + daemon (queued run coordinator) + N workers on loopback, the same
runs (ingest_medi, the three task partitions launched together, build_and_publish) through `dagster job launch`.
Both start from empty work folders; the cluster's start-up (servers, daemon, workers answering) is reported apart
and not counted in `distributed_s`. `overhead_ratio` = distributed_s / in_process_s; `run_wall_s` (each run, start
to end) and `queued_to_start_s` (submitted to started) show where the difference goes; the rest is
`dagster job launch` loading the code location. Needs PostgreSQL, redis-server and the deploy extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "deploy"))
sys.path.insert(0, str(Path(__file__).resolve().parent))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--config", help="a BuildConfig YAML (default: the embedded profile)")
    p.add_argument("--static-guide", action="store_true", help="a fast seeded StaticEmbedding guide on both sides")
    args = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    for key in [k for k in os.environ if k.startswith("GISTFORGE_")]:
        del os.environ[key]

    import contextlib
    import io

    from gistforge.cli import build
    from localcluster import LocalCluster
    from pipeline.profiles import load_config
    from pipeline.road.publish import last_published
    from pipeline.workspace import Workspace

    cfg = load_config(args.config, None if args.config else "embedded")
    root = Path(tempfile.mkdtemp(prefix="gistforge-overhead-"))
    if args.static_guide:
        from full_scale import static_guide

        cfg = cfg.model_copy(update={"guide_model": str(static_guide(root / "guide"))})
    config = root / "config.json"  # JSON is YAML
    config.write_text(cfg.model_dump_json())
    tasks = [t.name for t in cfg.included_tasks]

    t0 = time.monotonic()
    with contextlib.redirect_stdout(io.StringIO()):
        assert build(["build", "--config", str(config), "--home", str(root / "in-process"), "--no-finetune",
                      "--log-level", "WARNING"]) == 0
    in_process_s = time.monotonic() - t0
    tag_in_process = last_published(Workspace(root / "in-process", cfg.profile)).tag

    t0 = time.monotonic()
    with LocalCluster(root / "cluster", root / "cluster" / "home", workers=args.workers, profile=None,
                      config=config) as cluster:
        start_s = time.monotonic() - t0
        t0 = time.monotonic()
        statuses = cluster.build(tasks, timeout=1800)
        distributed_s = time.monotonic() - t0
        assert set(statuses.values()) == {"SUCCESS"}, statuses
        records = {r.dagster_run.run_id: r for r in cluster.instance.get_run_records()}
        names = {r: records[r].dagster_run.job_name + (f"[{records[r].dagster_run.tags['dagster/partition']}]"
                 if "dagster/partition" in records[r].dagster_run.tags else "") for r in statuses}
        runs = {names[r]: round(records[r].end_time - records[r].start_time, 1) for r in statuses}
        # submitted (`dagster job launch` done) to started: the daemon's dequeue plus the run process coming up
        queued = {names[r]: round(records[r].start_time - records[r].create_timestamp.timestamp(), 1)
                  for r in statuses}
        workers = sorted({w for r in statuses for w in cluster.step_workers(r).values()})
    tag = last_published(Workspace(root / "cluster" / "home", cfg.profile)).tag

    print(json.dumps({
        "benchmark": "distributed_overhead",
        "build": f"profile {cfg.profile}, gistforge build --no-finetune" + (", static guide" if args.static_guide else ""),
        "machine_cores": os.cpu_count(), "load_avg_1m": round(os.getloadavg()[0], 2),
        "in_process_s": round(in_process_s, 1), "workers": args.workers, "workers_used": workers,
        "cluster_start_s": round(start_s, 1), "distributed_s": round(distributed_s, 1),
        "overhead_ratio": round(distributed_s / in_process_s, 2), "run_wall_s": runs, "queued_to_start_s": queued,
        "same_tag": tag == tag_in_process, "tag": tag}))


if __name__ == "__main__":
    main()
