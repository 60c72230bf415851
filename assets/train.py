"""The fine-tune asset: the encoder trained GIST-style on the version the publisher serves, then evaluated."""

import dagster as dg

from assets.ingest import OWNERS
from assets.publish import published_dataset
from assets.resources import BuildResource, PublisherResource
from pipeline.road import evaluate, train


def finetune_code_version() -> str:
    """The asset runs two stages, the fine-tune and its evaluation: bumping either's spec makes it stale."""
    return f"{train.SPEC.version}.{evaluate.EVAL_SPEC.version}"


def finetuned_encoder_asset(op_tags: dict[str, str] | None = None) -> dg.AssetsDefinition:
    """`op_tags`: where the step runs (the guide queue on Celery; see `Deployment.guide_step_tags`)."""

    @dg.asset(group_name="train", deps=[published_dataset], kinds={"pytorch"}, owners=OWNERS,
              code_version=finetune_code_version(),
              pool="guide_model", op_tags=op_tags,
              description="The encoder fine-tuned GIST-style on the latest published version, with a base-vs-tuned "
                          "evaluation on held-out test splits. Never scheduled: materialise it when you want a model.")
    def finetuned_encoder(context: dg.AssetExecutionContext, gistforge: BuildResource,
                          publisher: PublisherResource) -> dg.MaterializeResult:
        cfg = gistforge.config()
        target = publisher.publisher(cfg.network)
        tag = target.latest(cfg.dataset_repo_id)
        if tag is None:
            raise dg.Failure(f"{cfg.dataset_repo_id} has no published version in {target.location}: publish one first")
        road = gistforge.road()
        trained = road.finetune(tag, target.location)
        ev = road.evaluate(trained)
        pushed = target.publish_model(trained.model_dir, cfg.training.push_model_repo, tag) \
            if cfg.training.push_model_repo else None
        context.log.info("fine-tuned on %s: %s -> %s", tag, ev.base.mean_accuracy, ev.finetuned.mean_accuracy)
        return dg.MaterializeResult(metadata={
            "model_dir": dg.MetadataValue.path(trained.model_dir), "dataset_tag": tag, "global_step": trained.facts.global_step,
            "resumed_from": trained.facts.resumed_from or "", "train_loss": trained.facts.train_loss,
            "base_accuracy": ev.base.mean_accuracy, "finetuned_accuracy": ev.finetuned.mean_accuracy,
            "evaluation": dg.MetadataValue.json(ev.model_dump(mode="json")),
            "model_repo": dg.MetadataValue.json(pushed.model_dump(mode="json") if pushed else {}),
        })

    return finetuned_encoder
