"""Ingest assets: the decontamination reference, MEDI, and each task's train split (one partition per task)."""

from contextlib import contextmanager

import dagster as dg

from assets.metadata import account_metadata, read_from_metadata, reuse_metadata
from assets.resources import BuildResource, GuideModelResource
from pipeline.road import decontaminate, ingest
from pipeline.road.sources import SourceError

OWNERS = ["team:gistforge"]


@contextmanager
def fail_fast():
    """A bad or missing source (a `SourceError`) can never succeed on retry, and transient Hub faults were
    already retried within the config's `network.retry_budget_s`: fail the step at once, without a Dagster
    retry that would multiply the wait."""
    try:
        yield
    except SourceError as exc:
        raise dg.Failure(description=str(exc), allow_retries=False) from exc


@dg.asset(group_name="ingest", kinds={"huggingface", "polars"}, owners=OWNERS,
          code_version=decontaminate.SPEC.version, tags={"network": "hub"},
          description="The test splits of the included MTEB tasks: evaluation data that training must not contain.")
def mteb_test_texts(context: dg.AssetExecutionContext, gistforge: BuildResource) -> dg.MaterializeResult:
    with fail_fast():
        report = gistforge.road().test_texts()
    context.log.info("decontamination reference: %s test texts", report.test_texts)
    return dg.MaterializeResult(metadata={**reuse_metadata(report), "dagster/row_count": report.test_texts,
                                          "per_task": dg.MetadataValue.json(report.per_task),
                                          "not_decontaminated": dg.MetadataValue.json(report.not_decontaminated)})


def medi_triplets_asset(guide_op_tags: dict[str, str] | None = None) -> dg.AssetsDefinition:
    """`guide_op_tags` given (the optional near-duplicate pass loads the guide here): the step joins the
    `guide_model` pool and runs where those tags send it, like mining (`Deployment.guide_step_tags`)."""

    @dg.asset(group_name="ingest", kinds={"polars", "parquet"}, owners=OWNERS, code_version=ingest.MEDI_SPEC.version,
              tags={"network": "hub"}, deps=[mteb_test_texts], op_tags=guide_op_tags,
              pool="guide_model" if guide_op_tags is not None else None,
              description="MEDI instruction triplets at the pinned revision, cleaned and decontaminated (drops "
                          "counted).")
    def medi_triplets(context: dg.AssetExecutionContext, gistforge: BuildResource,
                      guide: GuideModelResource) -> dg.MaterializeResult:
        road = gistforge.road(guide.device)
        with fail_fast():
            report = road.medi(guide.loader(road))
        context.log.info("MEDI: %s", report.account)
        return dg.MaterializeResult(metadata={**reuse_metadata(report), **account_metadata(report.account),
                                              "medi_tasks": report.tasks, **read_from_metadata(report)})

    return medi_triplets


def train_split_asset(partitions: dg.PartitionsDefinition) -> dg.AssetsDefinition:
    @dg.asset(group_name="ingest", partitions_def=partitions, kinds={"huggingface", "polars"}, owners=OWNERS,
              code_version=ingest.TASK_SPEC.version, tags={"network": "hub"},
              deps=[mteb_test_texts],
              description="One task's labelled train split at its pinned revision, cleaned for mining.")
    def mteb_train_split(context: dg.AssetExecutionContext, gistforge: BuildResource) -> dg.MaterializeResult:
        with fail_fast():
            report = gistforge.road().split(context.partition_key)
        context.log.info("%s: %s", context.partition_key, report.account)
        source = dg.MetadataValue.json(report.source.model_dump(exclude_none=True))
        return dg.MaterializeResult(metadata={**reuse_metadata(report), **account_metadata(report.account),
                                              "labels": report.labels, "source": source,
                                              **read_from_metadata(report)})

    return mteb_train_split
