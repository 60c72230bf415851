"""The earlier rounds of `mining.rounds` > 1: each round's encoder, fine-tuned on that round's build, guides the
next round's mining (`pipeline.road.rounds`). One asset per round, in a group of its own."""

import dagster as dg

from assets.ingest import OWNERS
from assets.resources import BuildResource
from pipeline.road import build, publish, rounds, train


def round_code_version() -> str:
    """The asset builds, publishes to the round's own hub and fine-tunes: bumping any of those specs makes it stale."""
    return ".".join(s.version for s in (rounds.SPEC, build.SPEC, publish.SPEC, train.SPEC))


def round_encoder_asset(r: int, op_tags: dict[str, str] | None = None) -> dg.AssetsDefinition:
    """`op_tags`: where the step runs (the guide queue on Celery; see `Deployment.guide_step_tags`)."""

    @dg.asset(name=rounds.encoder_asset(r), group_name=f"round{r}", deps=["medi_triplets", rounds.mined_asset(r)],
              kinds={"pytorch"}, owners=OWNERS, code_version=round_code_version(), pool="guide_model",
              op_tags=op_tags,
              description=f"Round {r}'s build (MEDI + its triplets, checked), published to the round's own hub, and "
                          f"the encoder fine-tuned on it: the guide of round {r + 1}'s mining. Never published.")
    def round_encoder(context: dg.AssetExecutionContext, gistforge: BuildResource) -> dg.MaterializeResult:
        try:
            report = gistforge.road().train_round(r)
        except rounds.RoundFailed as exc:  # the same data fails the same check again: no retry
            raise dg.Failure(description=str(exc), allow_retries=False) from exc
        context.log.info("round %d: encoder %s trained on %s rows", r, report.guide.revision, report.rows)
        # The data version is the weights' digest: an encoder retrained to the same weights leaves round r+1 fresh.
        return dg.MaterializeResult(data_version=dg.DataVersion(report.guide.revision), metadata={
            "guide_model": report.guide.name, "guide_revision": report.guide.revision, "rows": report.rows,
            "content_hash": report.content_hash, "round_tag": report.tag, "train_loss": report.train_loss,
            "global_step": report.global_step, "reused_training": report.reused_training,
            "model_dir": dg.MetadataValue.path(report.guide.path),
        })

    return round_encoder
