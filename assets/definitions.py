"""The asset graph: ingest MEDI and each task's split, mine triplets per task, build, publish.

Thin by design: each asset reads its inputs from the workspace, calls one `pipeline.stages` function
and records what it returned as metadata.
"""

import dagster as dg

from assets.metadata import account_metadata, reuse_metadata, schema_metadata, tasks_table, version_diff_table
from assets.automation import (build_and_publish_job, ingest_and_mine_job, ingest_medi_job,
                               upstream_pins_sensor, weekly_medi, weekly_rebuild)
from assets.partitions import task_partitions
from assets.resources import GistforgeResource, GuideModelResource, PublisherResource, publisher_from_env
from pipeline import stages
from pipeline.plots import png_markdown

OWNERS = ["team:gistforge"]
NETWORK_RETRY = dg.RetryPolicy(max_retries=3, delay=10, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)
BUILD_CHECKS = ["output_schema", "task_type_rule", "no_excluded_task", "negative_label_differs", "no_empty_text",
                "distinct_triplet_texts", "row_accounting", "no_test_leak", "shards_match_card"]


@dg.asset(group_name="ingest", kinds={"huggingface", "polars"}, owners=OWNERS, code_version="1",
          retry_policy=NETWORK_RETRY, tags={"network": "hub"},
          description="The test splits of the included MTEB tasks: evaluation data that training must not contain.")
def mteb_test_texts(context: dg.AssetExecutionContext, gistforge: GistforgeResource) -> dg.MaterializeResult:
    report = stages.collect_test_texts(gistforge.config(), gistforge.workspace())
    context.log.info("decontamination reference: %s test texts", report["test_texts"])
    return dg.MaterializeResult(metadata={**reuse_metadata(report), "dagster/row_count": report["test_texts"],
                                          "per_task": dg.MetadataValue.json(report["per_task"])})


@dg.asset(group_name="ingest", kinds={"polars", "parquet"}, owners=OWNERS, code_version="2",
          retry_policy=NETWORK_RETRY, tags={"network": "hub"}, deps=[mteb_test_texts],
          description="MEDI instruction triplets at the pinned revision, cleaned and decontaminated (drops counted).")
def medi_triplets(context: dg.AssetExecutionContext, gistforge: GistforgeResource,
                  guide: GuideModelResource) -> dg.MaterializeResult:
    cfg, ws = gistforge.config(), gistforge.workspace()
    report = stages.ingest_medi(cfg, ws, guide=lambda: guide.encoder(cfg, ws))  # loads only for the near-dup pass
    context.log.info("MEDI: %s", report["account"])
    return dg.MaterializeResult(metadata={**reuse_metadata(report), **account_metadata(report["account"]),
                                          "medi_tasks": report["tasks"]})


@dg.asset(group_name="ingest", partitions_def=task_partitions, kinds={"huggingface", "polars"},
          owners=OWNERS, code_version="2", retry_policy=NETWORK_RETRY, tags={"network": "hub"}, deps=[mteb_test_texts],
          description="One task's labelled train split at its pinned revision, cleaned for mining.")
def mteb_train_split(context: dg.AssetExecutionContext, gistforge: GistforgeResource) -> dg.MaterializeResult:
    report = stages.ingest_task(gistforge.config(), gistforge.workspace(), context.partition_key)
    context.log.info("%s: %s", context.partition_key, report["account"])
    return dg.MaterializeResult(metadata={**reuse_metadata(report), **account_metadata(report["account"]),
                                          "labels": report["labels"], "source": dg.MetadataValue.json(report["source"])})


@dg.asset(group_name="mine", partitions_def=task_partitions, deps=[mteb_train_split],
          kinds={"faiss", "pytorch"}, owners=OWNERS, code_version="2", pool="guide_model",
          description="Label-based triplets for one task: guide-model positives, margin-guarded hard negatives.")
def mined_triplets(context: dg.AssetExecutionContext, gistforge: GistforgeResource,
                   guide: GuideModelResource) -> dg.MaterializeResult:
    cfg, ws = gistforge.config(), gistforge.workspace()
    report = stages.mine_task(cfg, ws, context.partition_key, lambda: guide.encoder(cfg, ws))
    context.log.info("%s: %s", context.partition_key, report["mining"])
    recall = report["mining"].get("recall_at_10")  # approximate search only
    return dg.MaterializeResult(metadata={
        **reuse_metadata(report), **account_metadata(report["account"]),
        "mining": dg.MetadataValue.json(report["mining"]),
        "similarity_plot": dg.MetadataValue.md(png_markdown(report["plot"])),
        "texts_encoded": report["encode"]["encoded"], "texts_from_cache": report["encode"]["cached"],
        "guide_model": report["guide"]["name"], "guide_revision": report["guide"]["revision"],
        **({"ivf_recall_at_10": recall} if recall is not None else {}),  # low: raise mining.ivf_nprobe
    })


@dg.asset(group_name="publish", deps=[medi_triplets, mined_triplets], kinds={"parquet"}, owners=OWNERS,
          code_version="2", automation_condition=dg.AutomationCondition.eager(),
          check_specs=[dg.AssetCheckSpec(name, asset="triplet_dataset", blocking=True) for name in BUILD_CHECKS],
          description="MEDI + mined triplets in the published schema: shards and dataset card. Its checks block "
                      "publishing.")
def triplet_dataset(context: dg.AssetExecutionContext, gistforge: GistforgeResource) -> dg.MaterializeResult:
    info = stages.build_dataset(gistforge.config(), gistforge.workspace())
    context.log.info("built %s rows, content hash %s", info["rows"], info["content_hash"])
    return dg.MaterializeResult(check_results=[
        dg.AssetCheckResult(check_name=c.name, passed=c.passed, description=c.description,
                            metadata={k: dg.MetadataValue.json(v) if isinstance(v, (list, dict)) else v
                                      for k, v in c.metadata.items()})
        for c in info["checks"]
    ], metadata={
        "dagster/row_count": info["rows"], "content_hash": info["content_hash"], "shards": info["shards"],
        "rows_per_task": tasks_table(info["tasks"]), "excluded_tasks": dg.MetadataValue.json(info["excluded"]),
        **schema_metadata(),
    })


@dg.asset(group_name="publish", deps=[triplet_dataset], kinds={"huggingface"}, owners=OWNERS, code_version="2",
          retry_policy=NETWORK_RETRY, pool="hub_publish", automation_condition=dg.AutomationCondition.eager(),
          description="The build published as a tagged version (local Hub-cache folder by default).")
def published_dataset(context: dg.AssetExecutionContext, gistforge: GistforgeResource,
                      publisher: PublisherResource) -> dg.MaterializeResult:
    ws = gistforge.workspace()
    result = stages.publish(gistforge.config(), ws, publisher.publisher(ws))
    context.log.info("%s %s@%s at %s", result.status, result.repo_id, result.tag, result.location)
    return dg.MaterializeResult(metadata={
        "repo_id": result.repo_id, "tag": result.tag, "status": result.status, "location": result.location,
        "content_hash": result.content_hash, "previous_tag": result.previous_tag or "",
        "changes": dg.MetadataValue.md(version_diff_table(result.diff)),
        "load_dataset": dg.MetadataValue.md(f"```python\n{result.load_snippet()}\n```"),
    })


@dg.asset(group_name="train", deps=[published_dataset], kinds={"pytorch"}, owners=OWNERS, code_version="1",
          pool="guide_model",
          description="The encoder fine-tuned GIST-style on the latest published version, with a base-vs-tuned "
                      "evaluation on held-out test splits. Never scheduled: materialise it when you want a model.")
def finetuned_encoder(context: dg.AssetExecutionContext, gistforge: GistforgeResource,
                      publisher: PublisherResource) -> dg.MaterializeResult:
    event = context.instance.get_latest_materialization_event(dg.AssetKey("published_dataset"))
    if event is None or event.asset_materialization is None:
        raise dg.Failure("published_dataset has never been materialised: publish a version first")
    meta = event.asset_materialization.metadata
    ws = gistforge.workspace()
    report = stages.finetune(gistforge.config(), ws, meta["tag"].value, meta["location"].value,
                             publisher.publisher(ws))
    ev = report["evaluation"]
    context.log.info("fine-tuned on %s: %s -> %s", report["tag"], ev["base"]["mean"], ev["finetuned"]["mean"])
    return dg.MaterializeResult(metadata={
        "model_dir": report["model_dir"], "dataset_tag": report["tag"], "global_step": report["global_step"],
        "resumed_from": report["resumed_from"] or "", "train_loss": report["train_loss"],
        "base_logreg": ev["base"]["mean"]["logreg_accuracy"], "finetuned_logreg": ev["finetuned"]["mean"]["logreg_accuracy"],
        "base_knn": ev["base"]["mean"]["knn_accuracy"], "finetuned_knn": ev["finetuned"]["mean"]["knn_accuracy"],
        "evaluation": dg.MetadataValue.json(ev),
        "model_repo": dg.MetadataValue.json(report.get("model_repo") or {}),
    })


ALL_ASSETS = [mteb_test_texts, medi_triplets, mteb_train_split, mined_triplets, triplet_dataset, published_dataset,
              finetuned_encoder]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    jobs=[ingest_medi_job, ingest_and_mine_job, build_and_publish_job,
          dg.define_asset_job("finetune", selection=["finetuned_encoder"])],
    schedules=[weekly_medi, weekly_rebuild],
    sensors=[upstream_pins_sensor, dg.AutomationConditionSensorDefinition("build_after_ingest",
                                                                          target=[triplet_dataset, published_dataset])],
    resources={"gistforge": GistforgeResource(), "guide": GuideModelResource(), "publisher": publisher_from_env()},
)
