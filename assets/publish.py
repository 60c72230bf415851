"""Build and publish assets: the dataset in the published schema with its blocking checks, then a version."""

import dagster as dg

from assets.ingest import OWNERS
from assets.metadata import schema_metadata, tasks_table, version_diff_table, version_location
from assets.resources import BuildResource, PublisherResource
from pipeline.road import build, publish, rounds

BUILD_CHECKS = ["output_schema", "task_type_rule", "no_excluded_task", "negative_label_differs", "no_empty_text",
                "distinct_triplet_texts", "row_accounting", "no_test_leak", "shards_match_card"]


def _json(value):
    return dg.MetadataValue.json(value) if isinstance(value, (list, dict)) else value


def triplet_dataset_asset(mining_rounds: int = 1) -> dg.AssetsDefinition:
    """The build of the last mining round's triplets (`mining.rounds`)."""

    @dg.asset(name="triplet_dataset", group_name="publish", deps=["medi_triplets", rounds.mined_asset(mining_rounds)],
              kinds={"parquet"}, owners=OWNERS, code_version=build.SPEC.version,
              check_specs=[dg.AssetCheckSpec(name, asset="triplet_dataset", blocking=True) for name in BUILD_CHECKS],
              description="MEDI + mined triplets in the published schema: shards and dataset card. Its checks block "
                          "publishing.")
    def triplet_dataset(context: dg.AssetExecutionContext, gistforge: BuildResource) -> dg.MaterializeResult:
        report = gistforge.road().build()
        context.log.info("built %s rows, content hash %s", report.rows, report.content_hash)
        return dg.MaterializeResult(data_version=dg.DataVersion(report.content_hash), check_results=[
            dg.AssetCheckResult(check_name=c.name, passed=c.passed, description=c.description,
                                metadata={k: _json(v) for k, v in c.metadata.items()})
            for c in report.checks
        ], metadata={
            "dagster/row_count": report.rows, "content_hash": report.content_hash, "shards": report.shards,
            "rows_per_task": tasks_table(report.tasks), "excluded_tasks": dg.MetadataValue.json(report.excluded),
            **schema_metadata(),
        })

    return triplet_dataset


@dg.asset(group_name="publish", deps=["triplet_dataset"], kinds={"huggingface"}, owners=OWNERS,
          code_version=publish.SPEC.version,
          pool="hub_publish",
          description="The build published as a tagged version (local Hub-cache folder by default).")
def published_dataset(context: dg.AssetExecutionContext, gistforge: BuildResource,
                      publisher: PublisherResource) -> dg.MaterializeResult:
    cfg = gistforge.config()
    try:
        result = gistforge.road().publish(publisher.publisher(cfg.network))
    except publish.PublishError as exc:  # refused credentials, or still failing after the retry budget
        raise dg.Failure(description=str(exc), allow_retries=False) from exc
    context.log.info("%s %s@%s in %s", result.status, result.repo_id, result.tag, result.location)
    # The data version is the content: an unchanged publish records the same one, so what depends on it (the
    # fine-tune) is not marked stale.
    return dg.MaterializeResult(data_version=dg.DataVersion(result.content_hash), metadata={
        "repo_id": result.repo_id, "tag": result.tag, "status": result.status, "location": str(result.location),
        "version": version_location(result.repo_id, result.tag, result.revision, result.location.local_hub),
        "content_hash": result.content_hash, "previous_tag": result.previous_tag or "",
        "changes": dg.MetadataValue.md(version_diff_table(result.diff)),
        "load_dataset": dg.MetadataValue.md(f"```python\n{result.load_snippet()}\n```"),
        "load_snippet": dg.MetadataValue.text(result.load_snippet()),  # what `gistforge build` prints
    })
