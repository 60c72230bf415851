"""The mining asset: label-based triplets per task partition, guided by the guide model."""

import dagster as dg

from assets.ingest import OWNERS
from assets.metadata import (account_metadata, ivf_recall_check, ivf_recall_spec, numeric_mining_metadata,
                             reuse_metadata)
from assets.resources import BuildResource, GuideModelResource
from pipeline.common.plots import png_markdown
from pipeline.road import mine, rounds
from pipeline.road.mined import MiningStats
from pipeline.road.agreement import AGREEMENT_WARN, Agreement
from pipeline.road.deep_search import FALLBACK_WARN_SHARE

FALLBACK_CHECK = "fallback_share"


def fallback_check(stats: MiningStats) -> dg.AssetCheckResult:
    """Non-blocking: warns when many negatives are random fallbacks (GIST's easy negatives in disguise)."""
    neg = stats.negatives
    return dg.AssetCheckResult(
        check_name=FALLBACK_CHECK, passed=neg.fallback_share <= FALLBACK_WARN_SHARE,
        severity=dg.AssetCheckSeverity.WARN,
        description=f"{neg.fallback} of {neg.retrieved + neg.fallback} negatives are random fallbacks "
                    f"(warns above {FALLBACK_WARN_SHARE:.0%}); if high, set mining.negative_max_depth (deeper "
                    "search) or clean.drop_label_noise",
        metadata={"fallback_share": round(neg.fallback_share, 4), "fallback": neg.fallback,
                  "retrieved": neg.retrieved})


def negatives_metadata(report: mine.MineReport) -> dict:
    """The fallback share and the label-noise audit (the counts of retrieved and fallback negatives and of the
    `ntuple` coverage are `mining/negatives.*`, from `numeric_mining_metadata`)."""
    neg, noise = report.mining.negatives, report.label_noise
    return {"fallback_share": round(neg.fallback_share, 4),
            **({} if noise is None else {"label_noise_flagged": noise.flagged, "label_noise_dropped": noise.dropped,
                                         "label_noise": dg.MetadataValue.json(noise.model_dump(mode="json"))})}


AGREEMENT_CHECK = "guide_agreement"


def agreement_check(agreement: Agreement | None, precision: str) -> dg.AssetCheckResult:
    """Non-blocking: warns when the reduced-precision guide's top-10 neighbours follow fp32's less than
    `AGREEMENT_WARN` on the fixed sample (then set `guide_precision: fp32`)."""
    if agreement is None:
        return dg.AssetCheckResult(check_name=AGREEMENT_CHECK, passed=True, severity=dg.AssetCheckSeverity.WARN,
                                   description=f"the guide encodes in {precision}: nothing to compare")
    return dg.AssetCheckResult(
        check_name=AGREEMENT_CHECK, passed=agreement.ok, severity=dg.AssetCheckSeverity.WARN,
        description=f"{agreement.precision} vs fp32 on {agreement.sample} texts: top-10 neighbour overlap "
                    f"{agreement.top10_overlap:.4f} (warns below {AGREEMENT_WARN}); if low, set guide_precision: fp32",
        metadata={"top10_overlap": agreement.top10_overlap, "mean_cosine": agreement.mean_cosine,
                  "min_cosine": agreement.min_cosine, "sample": agreement.sample})


def agreement_metadata(agreement: Agreement | None, precision: str) -> dict:
    return {"guide_precision": precision, **({} if agreement is None else {
        "agreement_top10_overlap": agreement.top10_overlap, "agreement_mean_cosine": agreement.mean_cosine,
        "agreement_sample": agreement.sample})}


def mined_triplets_asset(partitions: dg.PartitionsDefinition, op_tags: dict[str, str] | None = None,
                         round: int = 1) -> dg.AssetsDefinition:
    """`op_tags`: where the step runs (the guide queue on Celery; see `Deployment.guide_step_tags`); `round`:
    which mining round (`mining.rounds`): round r > 1 is guided by round r-1's fine-tuned encoder."""
    name = rounds.mined_asset(round)
    deps = ["mteb_train_split", *([rounds.encoder_asset(round - 1)] if round > 1 else [])]

    @dg.asset(name=name, group_name="mine" if round == 1 else f"round{round}", partitions_def=partitions, deps=deps,
              kinds={"faiss", "pytorch"}, owners=OWNERS, code_version=mine.SPEC.version, pool="guide_model",
              op_tags=op_tags,
              check_specs=[dg.AssetCheckSpec(AGREEMENT_CHECK, asset=name, blocking=False,
                                             description="reduced-precision guide agrees with fp32 (warns < 0.98)"),
                           dg.AssetCheckSpec(FALLBACK_CHECK, asset=name, blocking=False,
                                             description="random fallback negatives stay a small share"),
                           ivf_recall_spec(name)],
              description="Label-based triplets for one task: guide-model positives, margin-guarded hard negatives."
                          + ("" if round == 1 else f" Round {round}: guided by the encoder fine-tuned on round "
                                                   f"{round - 1}'s build."))
    def mined_triplets(context: dg.AssetExecutionContext, gistforge: BuildResource,
                       guide: GuideModelResource) -> dg.MaterializeResult:
        road = gistforge.road(guide.device)
        cfg, precision = road.cfg, road.precision
        report = road.mine(context.partition_key, guide.loader(road), round)
        stats = report.mining
        context.log.info("%s: %s", context.partition_key, stats)
        return dg.MaterializeResult(check_results=[agreement_check(report.agreement, precision),
                                                   ivf_recall_check(stats.recall_at_10, cfg.mining.ivf_nprobe),
                                                   fallback_check(stats)],
                                    metadata={
            **reuse_metadata(report), **account_metadata(report.account),
            "mining": dg.MetadataValue.json(stats.model_dump(mode="json", exclude_none=True)),
            **numeric_mining_metadata(stats),  # each number its own entry: the UI plots them
            "similarity_plot": dg.MetadataValue.md(png_markdown(report.plot)),
            "texts_encoded": report.encode.encoded, "texts_from_cache": report.encode.cached,
            "guide_model": report.guide.name, "guide_revision": report.guide.revision,
            # approximate search only; low: raise mining.ivf_nprobe
            **({"ivf_recall_at_10": stats.recall_at_10} if stats.recall_at_10 is not None else {}),
            **agreement_metadata(report.agreement, precision),
            **negatives_metadata(report),
        })

    return mined_triplets
