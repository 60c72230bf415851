"""`gistforge build`: materialise the whole asset graph in-process through Dagster, then say where it went.

Partitioned and unpartitioned assets cannot share one run, so the build is a short sequence of runs on
one Dagster instance: MEDI, then each task partition (ingest + mine), then build + publish.
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
    b.add_argument("--profile", help="embedded (default) or full; sets GISTFORGE_PROFILE")
    b.add_argument("--config", help="a YAML BuildConfig file; sets GISTFORGE_CONFIG")
    b.add_argument("--home", help="work folder, embedding cache and local hub (default ./.gistforge; GISTFORGE_HOME)")
    b.add_argument("--tasks", nargs="*", help="only these task partitions (default: all included tasks)")
    b.add_argument("--log-level", default="INFO", help="Dagster console log level (default INFO)")
    b.add_argument("--no-finetune", action="store_true", help="stop after publishing the dataset")
    return p.parse_args(argv)


def build(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    # Partitions are derived from the configuration when the definitions load: set it first.
    for flag, var in ((args.profile, "GISTFORGE_PROFILE"), (args.config, "GISTFORGE_CONFIG"), (args.home, "GISTFORGE_HOME")):
        if flag:
            os.environ[var] = flag
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

    import dagster as dg

    from assets.definitions import ALL_ASSETS, medi_triplets, mined_triplets, mteb_test_texts, mteb_train_split, \
        finetuned_encoder, published_dataset, triplet_dataset
    from assets.partitions import TASKS
    from assets.resources import GistforgeResource, GuideModelResource, publisher_from_env

    resources = {"gistforge": GistforgeResource(), "guide": GuideModelResource(), "publisher": publisher_from_env()}
    from gistforge.orphans import recover_orphaned_runs, run_tags
    from gistforge.pools import pools_of, wait_for_pools

    instance = dg.DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else dg.DagsterInstance.ephemeral()
    recover_orphaned_runs(instance)  # a killed earlier build must not hold a pool slot forever
    tasks = args.tasks or TASKS
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown:
        print(f"gistforge: unknown or excluded task partition(s) {unknown}; included: {TASKS}", file=sys.stderr)
        return 2

    def run(selection, partition_key=None):
        wait_for_pools(instance, pools_of(selection), lambda msg: print(msg, file=sys.stderr, flush=True))
        result = dg.materialize(ALL_ASSETS, selection=selection, partition_key=partition_key,
                                resources=resources, instance=instance, raise_on_error=False, tags=run_tags(),
                                run_config={"loggers": {"console": {"config": {"log_level": args.log_level}}}})
        if not result.success:
            where = f" (partition {partition_key})" if partition_key else ""
            for event in result.all_events:
                if event.is_step_failure and event.step_failure_data.error:
                    error = event.step_failure_data.error
                    while error.cause is not None:  # the library's own error, not Dagster's wrapper
                        error = error.cause
                    print(f"gistforge: step {event.step_key} failed: {error.message.strip()}", file=sys.stderr)
            raise SystemExit(f"gistforge: run failed{where}")
        return result

    run([mteb_test_texts, medi_triplets])
    for task in tasks:
        run([mteb_train_split, mined_triplets], partition_key=task)
    result = run([triplet_dataset, published_dataset])
    model = None
    if not args.no_finetune:
        model = run([finetuned_encoder]).asset_materializations_for_node("finetuned_encoder")[0].metadata
    meta = result.asset_materializations_for_node("published_dataset")[0].metadata
    tag, location, status = meta["tag"].value, meta["location"].value, meta["status"].value
    rows = result.asset_materializations_for_node("triplet_dataset")[0].metadata["dagster/row_count"].value
    if model is not None:
        print(f"\ngistforge: fine-tuned encoder ({model['global_step'].value} steps) in {model['model_dir'].value}: "
              f"logreg accuracy {model['base_logreg'].value} -> {model['finetuned_logreg'].value}, "
              f"kNN {model['base_knn'].value} -> {model['finetuned_knn'].value} (base -> fine-tuned)")
    where = "on the Hugging Face Hub" if location == "hub" else f"in local hub {location}"
    print(f"\ngistforge: {status} {meta['repo_id'].value}@{tag} ({rows} rows) {where}")
    print("Read it back with:\n")
    print(meta["load_dataset"].value.removeprefix("```python\n").removesuffix("\n```"))
    return 0


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # stop on SIGTERM as on Ctrl-C
    try:
        sys.exit(build())
    except KeyboardInterrupt:  # Ctrl-C, or SIGTERM (Dagster maps it to SIGINT once a run has started)
        print("gistforge: interrupted; finished stages are kept and the next build resumes", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
