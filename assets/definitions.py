"""The Dagster definitions of gistforge, built from a configuration handed in explicitly.

`build_definitions(cfg, deployment)` is the one factory: partitions come from `cfg`, resources are built
once from both. `defs` is what `dg dev` / `dagster dev -m assets` load: it reads the configuration named by
the environment when the code location loads, never at import.
"""

import dagster as dg

from assets import automation
from assets.ingest import medi_triplets_asset, mteb_test_texts, train_split_asset
from assets.mine import mined_triplets_asset
from assets.publish import published_dataset, triplet_dataset_asset
from assets.rounds import round_encoder_asset
from assets.resources import BuildResource, GuideModelResource, HfHubPublisher, LocalHubPublisher, PublisherResource
from assets.settings import CELERY_SETTINGS, Deployment, config_from_env
from assets.train import finetuned_encoder_asset
from pipeline.config import BuildConfig
from pipeline.road import rounds


def publisher_for(deployment: Deployment) -> PublisherResource:
    if deployment.publish_target == "hub":
        # token: huggingface_hub.get_token() when the publisher is made (HF_TOKEN or the stored `hf auth login`)
        return HfHubPublisher(private=deployment.hub_private, endpoint=deployment.hub_endpoint)
    return LocalHubPublisher(root=str(deployment.local_hub or deployment.home / "hub"))


def guide_steps(cfg: BuildConfig) -> list[str]:
    """The steps that load the guide model: mining and fine-tuning; MEDI's ingest only for the optional
    near-duplicate pass. They share the `guide_model` pool, the guide queue and, on Kubernetes, a GPU each."""
    medi = ["medi_triplets"] if cfg.decontamination.near_duplicate_threshold is not None else []
    later = [name for r in range(2, cfg.mining.rounds + 1)
             for name in (rounds.encoder_asset(r - 1), rounds.mined_asset(r))]
    return [*medi, "mined_triplets", *later, "finetuned_encoder"]


def k8s_executor_config(deployment: Deployment, steps: list[str]) -> dict:
    """One pod per step, at most 8 at once; the guide `steps` get one GPU each (unless the guide is pinned to
    the CPU)."""
    gpu = {"container_config": {"resources": {"limits": {"nvidia.com/gpu": 1}}}}
    per_step = {} if deployment.guide_device == "cpu" else {s: gpu for s in steps}
    return {"max_concurrent": 8, "per_step_k8s_config": per_step}


def executor_for(deployment: Deployment, steps: list[str]) -> dg.ExecutorDefinition | None:
    """None: Dagster's default (multiprocess) executor; `celery`: each step goes to a dagster-celery worker;
    `k8s`: each step is a Kubernetes job (docs/deploy.md). `gistforge build` runs in-process and ignores this."""
    if deployment.executor == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor.configured(k8s_executor_config(deployment, steps), name="k8s")
    if deployment.executor == "in_process":
        return dg.in_process_executor
    if deployment.executor != "celery":
        return None
    if not deployment.celery_broker:
        raise ValueError("GISTFORGE_EXECUTOR=celery needs GISTFORGE_CELERY_BROKER (e.g. redis://host:6379/0)")
    from dagster_celery import celery_executor

    return celery_executor.configured({"broker": deployment.celery_broker,
                                       "backend": deployment.celery_backend or deployment.celery_broker,
                                       "config_source": CELERY_SETTINGS}, name="celery")


def build_definitions(cfg: BuildConfig, deployment: Deployment,
                      rebuild: automation.Rebuild = automation.Rebuild(),
                      loggers: dict[str, dg.LoggerDefinition] | None = None) -> dg.Definitions:
    """Assets, checks, jobs and sensors for one build configuration and deployment; `rebuild` says when the
    scheduled rebuild (sensor `weekly_rebuild`) ticks."""
    tasks = [t.name for t in cfg.included_tasks]
    partitions = dg.StaticPartitionsDefinition(tasks)
    steps, tags = guide_steps(cfg), deployment.guide_step_tags()
    n = cfg.mining.rounds
    later_rounds = [a for r in range(2, n + 1)
                    for a in (round_encoder_asset(r - 1, tags), mined_triplets_asset(partitions, tags, round=r))]
    return dg.Definitions(
        assets=rebuild.apply([mteb_test_texts, medi_triplets_asset(tags if "medi_triplets" in steps else None),
                              train_split_asset(partitions), mined_triplets_asset(partitions, tags), *later_rounds,
                              triplet_dataset_asset(n), published_dataset, finetuned_encoder_asset(tags)], n),
        jobs=automation.jobs(partitions, n),
        sensors=[rebuild.sensor(n), automation.rebuild_failure_sensor, automation.upstream_pins_sensor],
        resources={"gistforge": BuildResource.of(cfg, deployment.home),
                   "guide": GuideModelResource(device=deployment.guide_device),
                   "publisher": publisher_for(deployment)},
        loggers=loggers,  # None: Dagster's console logger; the CLI passes its short one
        executor=executor_for(deployment, steps),
    )


@dg.definitions
def defs() -> dg.Definitions:
    return build_definitions(config_from_env(), Deployment.from_env(), automation.Rebuild.from_env())
