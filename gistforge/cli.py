"""`gistforge build`: run the defined Dagster jobs in-process, in the rebuild plan's order, then say where it went.

The order is `assets.automation.rebuild_plan`, the jobs are the definitions' own; this module only chooses
the configuration, runs them on one Dagster instance and prints what the typed stage reports say.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="gistforge", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="build and publish the dataset (embedded default profile unless told)")
    b.add_argument("--profile", help="embedded (default) or full (default: GISTFORGE_PROFILE)")
    b.add_argument("--config", help="a YAML BuildConfig file (default: GISTFORGE_CONFIG)")
    b.add_argument("--home", help="work folder, embedding cache and local hub (default ./.gistforge; GISTFORGE_HOME)")
    b.add_argument("--tasks", nargs="*", help="only these task partitions (default: all included tasks)")
    b.add_argument("--log-level", default="INFO", help="Dagster console log level (default INFO)")
    b.add_argument("--no-finetune", action="store_true", help="stop after publishing the dataset")
    return p.parse_args(argv)


def build(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    import dagster as dg

    from assets.automation import rebuild_plan
    from assets.definitions import build_definitions
    from assets.settings import Deployment
    from gistforge.orphans import recover_orphaned_runs, run_tags
    from gistforge.pools import pools_of, wait_for_pools
    from pipeline.config import ConfigError, load_config
    from pipeline.road.build import last_build
    from pipeline.road.evaluate import last_finetune
    from pipeline.road.publish import last_published

    try:
        cfg = load_config(args.config or os.environ.get("GISTFORGE_CONFIG"),
                          args.profile or os.environ.get("GISTFORGE_PROFILE"))
    except ConfigError as exc:
        for line in str(exc).splitlines():
            print(f"gistforge: {line}", file=sys.stderr)
        return 2
    deployment = Deployment.from_env(home=args.home)
    defs = build_definitions(cfg, deployment)
    included = [t.name for t in cfg.included_tasks]
    tasks = args.tasks or included
    unknown = sorted(set(tasks) - set(included))
    if unknown:
        print(f"gistforge: unknown or excluded task partition(s) {unknown}; included: {included}", file=sys.stderr)
        return 2

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    recover_orphaned_runs(instance)  # a killed earlier build must not hold a pool slot forever
    for step in rebuild_plan(tasks, finetune=not args.no_finetune):
        job = defs.resolve_job_def(step.job)
        wait_for_pools(instance, pools_of(job), lambda msg: print(msg, file=sys.stderr, flush=True))
        result = job.execute_in_process(instance=instance, partition_key=step.partition, raise_on_error=False,
                                        tags=run_tags(),
                                        run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}})
        if not result.success:
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data.error:
                    error = event.step_failure_data.error
                    while error.cause is not None:  # the library's own error, not Dagster's wrapper
                        error = error.cause
                    print(f"gistforge: step {event.step_key} failed: {error.message.strip()}", file=sys.stderr)
            where = f" (partition {step.partition})" if step.partition else ""
            raise SystemExit(f"gistforge: run {step.job} failed{where}")

    ws = deployment.workspace(cfg)
    published, built = last_published(ws), last_build(ws)
    if not args.no_finetune:
        trained, ev = last_finetune(ws, published.tag)
        print(f"\ngistforge: fine-tuned encoder ({trained.facts.global_step} steps) in {trained.model_dir}: "
              f"{ev.evaluator} accuracy {ev.base.mean_accuracy} -> {ev.finetuned.mean_accuracy} (base -> fine-tuned, "
              f"mean over {', '.join(ev.finetuned.per_task)})")
    print(f"\ngistforge: {published.status} {published.repo_id}@{published.tag} ({built.rows} rows) "
          f"in {published.location}")
    print("Read it back with:\n")
    print(published.load_snippet())
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop on SIGTERM as on Ctrl-C
    try:
        sys.exit(build())
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (Dagster maps it to SIGINT once a run has started)
        print("gistforge: interrupted; finished stages are kept and the next build resumes", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
