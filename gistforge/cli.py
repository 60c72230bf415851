"""`gistforge build`: run the defined Dagster jobs in-process, in the rebuild plan's order, then say where it went.

The order is `assets.automation.rebuild_plan`, the jobs are the definitions' own; this module only chooses
the configuration, runs them on one Dagster instance and prints what the typed stage reports say.
"""

from __future__ import annotations

import argparse
import datetime as dt
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
    b.add_argument("--log-level", default="INFO", help="console log level (default INFO; DEBUG also prints "
                   "tracebacks, which otherwise go to the log file under <home>/logs only)")
    b.add_argument("--no-finetune", action="store_true", help="stop after publishing the dataset")
    return p.parse_args(argv)


def _interrupted(result) -> bool:
    return any(event.is_step_failure and event.step_failure_data.error is not None
               and event.step_failure_data.error.cls_name == "DagsterExecutionInterruptedError"
               for event in result.all_events)


def _failures(result) -> list[str]:
    """One line per failed step: the library's own error (not Dagster's wrapper), without its module path."""
    lines = []
    for event in result.all_events:
        if event.is_step_failure and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:
                error = error.cause
            message = error.message.strip().splitlines()[0] if error.message.strip() else error.cls_name
            head, sep, rest = message.partition(": ")
            if sep and "." in head and " " not in head:  # "pipeline.road.sources.SourceError: ..." -> "SourceError: ..."
                message = f"{head.rsplit('.', 1)[1]}: {rest}"
            lines.append(f"step {event.step_key} failed: {message}")
    return lines


def _preflight(deployment) -> list[str]:
    """Problems that would fail a run later, found before any run starts."""
    if deployment.publish_target == "hub":
        from huggingface_hub import get_token

        try:
            found = bool(get_token())  # HF_TOKEN, else the login stored by `hf auth login` ($HF_HOME/token)
        except Exception as exc:  # noqa: BLE001 - e.g. HF_OIDC_RESOURCE set and the exchange failed
            return [f"GISTFORGE_PUBLISH_TARGET=hub: reading the Hugging Face token failed ({type(exc).__name__}); "
                    "run `hf auth login` or export HF_TOKEN"]
        if not found:
            return ["GISTFORGE_PUBLISH_TARGET=hub needs a Hugging Face token with write access to the dataset repo: "
                    "run `hf auth login` or export HF_TOKEN (or unset GISTFORGE_PUBLISH_TARGET to publish to the "
                    "local hub)"]
    return []


def build(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from pipeline.config import ConfigError, load_config

    try:
        cfg = load_config(args.config or os.environ.get("GISTFORGE_CONFIG"),
                          args.profile or os.environ.get("GISTFORGE_PROFILE"))
    except ConfigError as exc:
        return _fail(str(exc).splitlines(), code=2)

    from assets.automation import rebuild_plan
    from assets.definitions import build_definitions
    from assets.settings import Deployment
    from gistforge.console import Console
    from gistforge.instance import cli_instance
    from gistforge.interrupts import SignalLatch
    from gistforge.orphans import recover_orphaned_runs, run_tags
    from gistforge.pools import pools_of, wait_for_pools
    from pipeline.road.build import last_build
    from pipeline.road.evaluate import last_finetune
    from pipeline.road.publish import last_published

    deployment = Deployment.from_env(home=args.home)
    included = [t.name for t in cfg.included_tasks]
    tasks = args.tasks or included
    unknown = sorted(set(tasks) - set(included))
    problems = [f"unknown or excluded task partition(s) {unknown}; included: {included}"] if unknown else []
    problems += _preflight(deployment)
    stamp = dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    try:
        console = Console(args.log_level, deployment.home / "logs" / f"build-{stamp}.log")
    except ValueError as exc:
        problems.append(str(exc))
    if problems:
        return _fail(problems, code=2)

    instance = cli_instance(deployment.home)
    defs = build_definitions(cfg, deployment, loggers={"console": console.dagster_logger()})
    with instance, console.installed(library_in_dagster_logs="pipeline" in instance.managed_python_loggers), \
            SignalLatch() as signals:
        recover_orphaned_runs(instance)  # a killed earlier build must not hold a pool slot forever
        for step in rebuild_plan(tasks, finetune=not args.no_finetune):
            job = defs.resolve_job_def(step.job)
            wait_for_pools(instance, pools_of(job), lambda msg: print(msg, file=sys.stderr, flush=True))
            result = job.execute_in_process(instance=instance, partition_key=step.partition, raise_on_error=False,
                                            tags=run_tags(), run_config={"loggers": {"console": {}}})
            if _interrupted(result) or signals.received():
                raise KeyboardInterrupt
            if not result.success:
                where = f"{step.job}[{step.partition}]" if step.partition else step.job
                lines = [f"{where} {line}" for line in _failures(result)] or [f"run {where} failed"]
                return _fail([*lines, f"the full log, tracebacks included: {console.log_file}"])

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


def _fail(lines: list[str], code: int = 1) -> int:
    for line in lines:
        print(f"gistforge: {line}", file=sys.stderr)
    return code


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():  # progress bars only on a terminal: read by tqdm and the HF libraries at import
        for key in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(key, "1")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop on SIGTERM as on Ctrl-C
    try:
        sys.exit(build())
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (Dagster maps it to SIGINT once a run has started)
        print("gistforge: interrupted; finished stages are kept and the next build resumes", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
