"""gistforge: build GIST-style embedding training data, and look at the versions it publishes.

`gistforge build` runs the defined Dagster jobs in-process, in the rebuild plan's order, holding its home's
build lock, then says where it went; `versions`, `show`, `diff`, `plan`, `config` and `gc` are in
`gistforge.commands`. The order is `assets.automation.rebuild_plan`, the jobs are the definitions' own; this
module only chooses the configuration, runs them on one Dagster instance and prints what the runs' asset
materialisations recorded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import signal
import sys


BUILD_EPILOG = """\
environment variables read:
  GISTFORGE_PROFILE         profile when neither --profile nor --config is given (embedded, full)
  GISTFORGE_CONFIG          a YAML BuildConfig when neither --profile nor --config is given
  GISTFORGE_HOME            work folder, embedding cache, local hub, models (default ./.gistforge)
  GISTFORGE_PUBLISH_TARGET  local (default) or hub (the Hugging Face Hub; needs a token)
  GISTFORGE_LOCAL_HUB       the local hub folder (default <home>/hub)
  GISTFORGE_HUB_PRIVATE     create Hub repos private (default true)
  GISTFORGE_GUIDE_DEVICE    device of the guide model (default: CUDA when present, else the CPU)
  GISTFORGE_EXECUTOR        Dagster executor of `dg` runs (gistforge build always runs in-process)
  GISTFORGE_OPENVINO_CACHE  where the guide's OpenVINO graph is kept (default ~/.cache/gistforge/openvino)
  HF_TOKEN                  the Hub token (else the one `hf auth login` stored)
  HF_HUB_OFFLINE            1: read sources from the Hub cache only
  HF_HUB_CACHE              the Hub cache the sources are read from
  DAGSTER_HOME              the Dagster instance (default <home>/dagster)

exit codes:
  0    built (and published, unless the content was already published)
  1    a step failed: one line per failed step, then the path of the full log
  2    a problem found before any run (config file and field, unknown task, missing token, bad option)
  130  interrupted (Ctrl-C or SIGTERM); finished stages are kept and the next build resumes
"""


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("gistforge")
    except PackageNotFoundError:
        return "unknown (not installed)"


def _config_options(p: argparse.ArgumentParser) -> None:
    """--profile or --config (never both), and --home: how every subcommand finds its build."""
    from pipeline.profiles import PROFILES

    which = p.add_mutually_exclusive_group()
    which.add_argument("--profile", choices=sorted(PROFILES),
                       help="a built-in profile (default: GISTFORGE_PROFILE, else embedded)")
    which.add_argument("--config", metavar="FILE", help="a YAML BuildConfig file (default: GISTFORGE_CONFIG)")
    p.add_argument("--home", help="work folder, embedding cache and local hub (default ./.gistforge; GISTFORGE_HOME)")


def _target_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", choices=["local", "hub"],
                   help="where versions are read from (default: GISTFORGE_PUBLISH_TARGET, else local)")


def _parser() -> argparse.ArgumentParser:
    raw = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="gistforge", description=__doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--version", action="version", version=f"gistforge {_version()}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    b = sub.add_parser("build", help="build, publish and fine-tune (embedded profile unless told)", formatter_class=raw,
                       description="Build the GIST-style training set by materialising the Dagster asset graph "
                                   "in-process, publish it as a tagged version, then fine-tune and evaluate the "
                                   "encoder on it. Stages whose inputs did not change are reused "
                                   "(see `gistforge plan`).", epilog=BUILD_EPILOG)
    _config_options(b)
    b.add_argument("--tasks", nargs="*", help="only these task partitions (default: all included tasks)")
    b.add_argument("--log-level", default="INFO", help="console log level (default INFO; DEBUG also prints "
                   "tracebacks, which otherwise go to the log file under <home>/logs only)")
    b.add_argument("--no-finetune", action="store_true", help="stop after publishing the dataset")
    pl_ = sub.add_parser("plan", help="what the next build would reuse and redo, and why (runs nothing)",
                         description="Ask every stage, with its own fingerprint, whether the next build with this "
                                     "configuration would reuse its output or redo it, and why. Runs and writes "
                                     "nothing. Exit 0 either way.")
    _config_options(pl_)
    pl_.add_argument("--tasks", nargs="*", help="only these task partitions (as `build --tasks`)")
    pl_.add_argument("--no-finetune", action="store_true", help="as `build --no-finetune`")
    pl_.add_argument("--json", action="store_true", help="the plan as JSON")
    v = sub.add_parser("versions", help="every published version, newest first",
                       description="Every published version (tag, date, rows, tasks, content hash) and which one "
                                   "`main` points at, newest first, read from the versions' manifests.")
    _config_options(v)
    _target_option(v)
    v.add_argument("--json", action="store_true", help="as JSON")
    s = sub.add_parser("show", help="one version: rows per task, sources, drops, guide and mining settings",
                       description="One published version: rows per task, sources with their resolved commits and "
                                   "licences, drops by reason, the guide and the mining settings.")
    s.add_argument("tag", metavar="TAG")
    _config_options(s)
    _target_option(s)
    s.add_argument("--json", action="store_true", help="as JSON, for scripts")
    d = sub.add_parser("diff", help="rows added / removed / kept per task between two versions, and what differs",
                       description="Rows per task added, removed and kept going from version A to version B "
                                   "(from the row hashes each version stores), and the settings and source commits "
                                   "that differ. Exit 0 whether or not they differ.")
    d.add_argument("a", metavar="A")
    d.add_argument("b", metavar="B")
    _config_options(d)
    _target_option(d)
    d.add_argument("--json", action="store_true", help="as JSON")
    c = sub.add_parser("config", help="the BuildConfig JSON schema, or the resolved configuration as YAML",
                       description="`gistforge config show`: the resolved configuration, defaults filled in, as YAML "
                                   "(a starting point for --config). `gistforge config --schema`: the BuildConfig "
                                   "JSON schema, for editors.")
    c.add_argument("action", nargs="?", choices=["show"], help="show the resolved configuration")
    c.add_argument("--schema", action="store_true", help="print the BuildConfig JSON schema")
    _config_options(c)
    g = sub.add_parser("gc", help="sizes of caches, work folders and old versions; removes what nothing needs",
                       description="Sizes of the embedding cache, the work folders, old versions and models, and "
                                   "what no kept version or the current configuration needs. A dry run unless "
                                   "--delete is given.")
    _config_options(g)
    g.add_argument("--keep", type=int, default=5, help="local-hub versions to keep, newest first (default 5; "
                   "the one `main` points at is always kept)")
    g.add_argument("--delete", action="store_true", help="remove what is marked removable (default: only list)")
    return p


def _parse(argv: list[str] | None) -> argparse.Namespace:
    return _parser().parse_args(argv)


def _materialized(result) -> dict[str, dict]:
    """Each asset a run materialised, by name, with its metadata as plain values."""
    return {event.asset_key.to_user_string(): {k: v.value for k, v in event.materialization.metadata.items()}
            for event in result.get_asset_materialization_events()}


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


def resolve_config(args: argparse.Namespace):
    """The configuration a command acts on: --config or --profile (argparse refuses both), else
    GISTFORGE_CONFIG or GISTFORGE_PROFILE (both set is refused too), else the embedded profile."""
    from pipeline.profiles import ConfigError, load_config

    if args.config or args.profile:
        return load_config(args.config, args.profile)
    env_config, env_profile = os.environ.get("GISTFORGE_CONFIG"), os.environ.get("GISTFORGE_PROFILE")
    if env_config and env_profile:
        raise ConfigError(f"GISTFORGE_CONFIG={env_config} and GISTFORGE_PROFILE={env_profile} are both set: "
                          "unset one (or pass --config or --profile)")
    return load_config(env_config, env_profile)


def build(argv: list[str] | None = None) -> int:
    return run(argv)


def run(argv: list[str] | None = None) -> int:
    """Parse the command line and run the subcommand; its exit code."""
    args = _parse(argv)
    if args.command == "build":
        return _build(args)
    from gistforge import commands

    return commands.dispatch(args)


def _build(args: argparse.Namespace) -> int:
    from pipeline.profiles import ConfigError

    try:
        cfg = resolve_config(args)
    except ConfigError as exc:
        return _fail(str(exc).splitlines(), code=2)

    from assets.automation import rebuild_plan
    from assets.definitions import build_definitions
    from assets.settings import Deployment
    from gistforge.console import Console
    from gistforge.instance import cli_instance
    from gistforge.interrupts import SignalLatch
    from gistforge.orphans import build_lock, recover_orphaned_runs, run_tags
    from gistforge.pools import pools_of, wait_for_pools

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
    made: dict[str, dict] = {}
    tags = run_tags(deployment.home)
    with instance, console.installed(library_in_dagster_logs="pipeline" in instance.managed_python_loggers), \
            SignalLatch() as signals, build_lock(deployment.home, say):
        recover_orphaned_runs(instance, deployment.home)  # a killed earlier build must not hold a pool slot forever
        for step in rebuild_plan(tasks, finetune=not args.no_finetune, mining_rounds=cfg.mining.rounds):
            job = defs.resolve_job_def(step.job)
            wait_for_pools(instance, pools_of(job), say)
            result = job.execute_in_process(instance=instance, partition_key=step.partition, raise_on_error=False,
                                            tags=tags, run_config={"loggers": {"console": {}}})
            if signals.received():  # every SIGINT/SIGTERM, also one Dagster's handler took between two steps
                raise KeyboardInterrupt
            if not result.success:
                where = f"{step.job}[{step.partition}]" if step.partition else step.job
                lines = [f"{where} {line}" for line in _failures(result)] or [f"run {where} failed"]
                return _fail([*lines, f"the full log, tracebacks included: {console.log_file}"])
            made.update(_materialized(result))
    _print_result(made)
    return 0


def _print_result(made: dict[str, dict]) -> None:
    """Where the build went, from what the `published_dataset` (and `finetuned_encoder`) runs recorded."""
    if trained := made.get("finetuned_encoder"):
        ev = trained["evaluation"]
        print(f"\ngistforge: fine-tuned encoder ({trained['global_step']} steps) in {trained['model_dir']}: "
              f"{ev['evaluator']} accuracy {ev['base']['mean_accuracy']} -> {ev['finetuned']['mean_accuracy']} "
              f"(base -> fine-tuned, mean over {', '.join(ev['finetuned']['per_task'])})")
    published, rows = made["published_dataset"], made["triplet_dataset"]["dagster/row_count"]
    print(f"\ngistforge: {published['status']} {published['repo_id']}@{published['tag']} ({rows} rows) "
          f"in {published['location']}")
    print("Read it back with:\n")
    print(published["load_snippet"])


def say(message: str) -> None:
    """One line for the person at the terminal, on stderr: `gistforge: <message>`."""
    print(f"gistforge: {message}", file=sys.stderr, flush=True)


def _fail(lines: list[str], code: int = 1) -> int:
    for line in lines:
        say(line)
    return code


def main() -> None:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if not sys.stderr.isatty():  # progress bars only on a terminal: read by tqdm and the HF libraries at import
        for key in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS", "HF_DATASETS_DISABLE_PROGRESS_BARS"):
            os.environ.setdefault(key, "1")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop on SIGTERM as on Ctrl-C
    try:
        sys.exit(run())
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (Dagster maps it to SIGINT once a run has started)
        print("gistforge: interrupted; finished stages are kept and the next build resumes", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
