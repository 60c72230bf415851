"""The mining asset: label-based triplets per task partition, guided by the guide model."""

import dagster as dg

from assets.ingest import OWNERS
from assets.metadata import account_metadata, reuse_metadata
from assets.resources import BuildResource, GuideModelResource
from pipeline.common.plots import png_markdown
from pipeline.road import mine


def mined_triplets_asset(partitions: dg.PartitionsDefinition,
                         op_tags: dict[str, str] | None = None) -> dg.AssetsDefinition:
    """`op_tags`: where the step runs (the guide queue on Celery; see `Deployment.guide_step_tags`)."""

    @dg.asset(group_name="mine", partitions_def=partitions, deps=["mteb_train_split"], kinds={"faiss", "pytorch"},
              owners=OWNERS, code_version=mine.SPEC.version, pool="guide_model", op_tags=op_tags,
              description="Label-based triplets for one task: guide-model positives, margin-guarded hard negatives.")
    def mined_triplets(context: dg.AssetExecutionContext, gistforge: BuildResource,
                       guide: GuideModelResource) -> dg.MaterializeResult:
        cfg, ws = gistforge.config(), gistforge.workspace()
        report = mine.mine_task(ws, cfg.task(context.partition_key), mining=cfg.mining, seed=cfg.seed,
                                decontamination=cfg.decontamination, guide_ref=guide.ref(cfg),
                                precision=guide.precision(), guide=lambda: guide.encoder(cfg, ws))
        stats = report.mining
        context.log.info("%s: %s", context.partition_key, stats)
        return dg.MaterializeResult(metadata={
            **reuse_metadata(report), **account_metadata(report.account),
            "mining": dg.MetadataValue.json(stats.model_dump(mode="json", exclude_none=True)),
            "similarity_plot": dg.MetadataValue.md(png_markdown(report.plot)),
            "texts_encoded": report.encode.encoded, "texts_from_cache": report.encode.cached,
            "guide_model": report.guide.name, "guide_revision": report.guide.revision,
            # approximate search only; low: raise mining.ivf_nprobe
            **({"ivf_recall_at_10": stats.recall_at_10} if stats.recall_at_10 is not None else {}),
        })

    return mined_triplets
