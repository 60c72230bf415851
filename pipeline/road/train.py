"""Fine-tuning the encoder on a published version, GIST-style, and scoring it against its base.

The data is read back through `snapshot_download(repo, revision=tag)` + `load_dataset`, exactly as a
downstream trainer reads it, never from build intermediates, and through the configs it publishes: the
inputs are the `triplets` config (`anchor, positive, negative`, what `GISTEmbedLoss` takes), and each row's
task (and instructions, when they are used) is the same row of the `default` config, read for those columns
only. Training uses sentence-transformers' `SentenceTransformerTrainer` with `GISTEmbedLoss` (guide = the
build's guide model), one dataset per task with proportional sampling so that no batch mixes tasks, and no
duplicate texts within a batch.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import polars as pl
from pydantic import BaseModel, Field, field_validator

from pipeline.common import atomic
from pipeline.common.settings import Settings, checked_repo_id
from pipeline.road.model_ref import ModelRef, resolve_model
from pipeline.road.publish import Location
from pipeline.workspace import StageReport, StageSpec, Workspace

if TYPE_CHECKING:  # the build configuration composes this module's TrainConfig
    from pipeline.config import BuildConfig

log = logging.getLogger(__name__)


class TrainConfig(Settings):
    """Fine-tuning, with GIST's hyperparameters as defaults (lr 5e-6, warmup 0.1, batch 32, temperature 0.01)."""

    learning_rate: float = Field(5e-6, gt=0, description="peak learning rate (GIST: 5e-6)")
    warmup_ratio: float = Field(0.1, ge=0, lt=1, description="share of the steps spent warming the rate up")
    batch_size: int = Field(32, ge=2, description="triplets per batch: each query's in-batch negatives")
    temperature: float = Field(0.01, gt=0, description="GISTEmbedLoss's softmax temperature (GIST: 0.01)")
    epochs: float = Field(1.0, gt=0, description="passes over the training rows")
    max_steps: int = Field(-1, description="-1: train for `epochs`")
    loss: Literal["gist", "cached_gist"] = Field("gist", description="GISTEmbedLoss, or its cached (GradCache) "
                                                 "form for batches larger than memory allows")
    mini_batch_size: int = Field(32, ge=1, description="CachedGISTEmbedLoss only")
    use_instructions: bool = Field(False, description="prefix MEDI rows' instructions to their texts")
    save_steps: int = Field(500, ge=1, description="checkpoint every this many steps (a killed run resumes there)")
    save_total_limit: int = Field(2, ge=1, description="checkpoints kept")
    seed: int = Field(42, description="the trainer's seed")
    max_rows_per_task: int | None = Field(None, ge=1, description="cap each task's training rows (None: all)")
    max_seq_length: int | None = Field(None, ge=8, description="truncate training texts to this many tokens "
                                       "(None: the model's own limit); activation memory grows with it")
    eval_test_rows: int | None = Field(None, ge=10, description="test rows per task for the MTEB evaluation "
                                       "(None: the whole pinned test split, comparable with published results)")
    eval_experiments: int = Field(10, ge=1, description="MTEB classification experiments (MTEB's default: 10)")
    push_model_repo: str | None = Field(None, description="publish the model as 'org/name' through the publisher")

    @field_validator("push_model_repo")
    @classmethod
    def _repo(cls, v: str | None) -> str | None:
        return None if v is None else checked_repo_id(v, "push_model_repo")


def load_published(repo_id: str, tag: str, location: Location, config: str = "default",
                   columns: list[str] | None = None):
    """Config `config` of a published version (only `columns`, if given), the way a trainer reads it (from the
    Hub, or from a local hub folder)."""
    from datasets import load_dataset
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo_id, repo_type="dataset", revision=tag, cache_dir=location.local_hub,
                             local_files_only=not location.is_hub)
    return load_dataset(path, config, split="train", **({"columns": columns} if columns else {}))


_INSTRUCTIONS = {"anchor": "query_instruct", "positive": "pos_instruct", "negative": "neg_instruct"}


def task_columns(cfg: TrainConfig) -> list[str]:
    """What training reads of the `default` config besides the `triplets` config: each row's task, and its
    instructions when they are used."""
    return ["task_name", *(_INSTRUCTIONS.values() if cfg.use_instructions else ())]


def task_datasets(ds, cfg: TrainConfig, triplets=None) -> dict:
    """One (anchor, positive, negative) dataset per task: the multi-dataset sampler keeps batches homogeneous.

    `triplets` is the `triplets` config and `ds` the `default` config's `task_columns` (row i of one is row i of
    the other); without `triplets`, the inputs are `ds`'s own `query, pos, neg`."""
    import datasets

    from pipeline.schema import TRIPLET_COLUMNS

    if triplets is None:
        inputs = ds.select_columns(list(TRIPLET_COLUMNS)).to_polars().rename(TRIPLET_COLUMNS)
    else:
        if triplets.num_rows != ds.num_rows:
            raise ValueError(f"the triplets config has {triplets.num_rows} rows and the default config "
                             f"{ds.num_rows}: not the same version")
        inputs = triplets.select_columns(list(TRIPLET_COLUMNS.values())).to_polars()
    df = pl.concat([ds.select_columns(task_columns(cfg)).to_polars(), inputs], how="horizontal")
    out = {}
    for (task,), group in sorted(df.group_by("task_name", maintain_order=True), key=lambda kv: kv[0]):
        if cfg.max_rows_per_task:
            group = group.head(cfg.max_rows_per_task)
        if group.height < 2:
            continue
        cols = {}
        for dst, instruct in _INSTRUCTIONS.items():
            text = group[dst]
            if cfg.use_instructions:
                text = group[instruct] + text
            cols[dst] = text.to_list()
        out[str(task)] = datasets.Dataset.from_dict(cols)
    return out


def _last_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None


class TrainFacts(BaseModel):
    global_step: int
    resumed_from: str | None
    train_loss: float
    device: str


def train_encoder(train_sets: dict, base_path: str, guide_path: str, out_dir: Path, cfg: TrainConfig):
    """Train (resuming from the last checkpoint in `out_dir` if there is one); returns the training facts."""
    import torch
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import CachedGISTEmbedLoss, GISTEmbedLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers, MultiDatasetBatchSamplers, SentenceTransformerTrainingArguments)

    cuda = torch.cuda.is_available()
    model = SentenceTransformer(base_path, device="cuda" if cuda else "cpu")
    guide = SentenceTransformer(guide_path, device="cuda" if cuda else "cpu")
    if cfg.max_seq_length:
        model.max_seq_length = guide.max_seq_length = cfg.max_seq_length
    if cfg.loss == "cached_gist":
        loss = CachedGISTEmbedLoss(model, guide, temperature=cfg.temperature, mini_batch_size=cfg.mini_batch_size)
    else:
        loss = GISTEmbedLoss(model, guide, temperature=cfg.temperature)
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out_dir / "checkpoints"), num_train_epochs=cfg.epochs, max_steps=cfg.max_steps,
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.learning_rate,
        warmup_steps=float(cfg.warmup_ratio),  # a float in [0, 1) is a ratio of the total steps (transformers 5)
        fp16=cuda and not torch.cuda.is_bf16_supported(), bf16=cuda and torch.cuda.is_bf16_supported(),
        batch_sampler=BatchSamplers.NO_DUPLICATES, multi_dataset_batch_sampler=MultiDatasetBatchSamplers.PROPORTIONAL,
        save_strategy="steps", save_steps=cfg.save_steps, save_total_limit=cfg.save_total_limit,
        logging_steps=max(1, cfg.save_steps // 5), seed=cfg.seed, report_to="none", dataloader_drop_last=False,
        use_cpu=not cuda,
    )
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=train_sets, loss=loss)
    resume = _last_checkpoint(out_dir / "checkpoints")
    if resume:
        log.info("resuming from %s", resume)
    result = trainer.train(resume_from_checkpoint=resume)
    return model, TrainFacts(global_step=trainer.state.global_step, resumed_from=resume,
                             train_loss=float(result.training_loss), device="cuda" if cuda else "cpu")


# ------------------------------------------------------------------------------------------------ the stage


# Checkpoint cadence and the evaluation's settings never change the trained weights.
SPEC = StageSpec("finetune", version="2", ignore=frozenset({
    "training.save_steps", "training.save_total_limit", "training.eval_test_rows", "training.eval_experiments",
    "training.push_model_repo"}))


class TrainReport(StageReport):
    """A fine-tuned model: where it is, what it was trained on and from, and how training went."""

    model_dir: str
    dataset_repo: str
    tag: str
    base: ModelRef
    guide: ModelRef
    facts: TrainFacts


def finetune_on(ws: Workspace, cfg: BuildConfig, tag: str, location: Location) -> TrainReport:
    """`finetune` on version `tag` of the build's dataset repo, with the build's training settings and models."""
    return finetune(ws, repo_id=cfg.dataset_repo_id, tag=tag, location=location, training=cfg.training,
                    base_model=cfg.base_model or cfg.guide_model, guide_model=cfg.guide_model,
                    guide_revision=cfg.guide_revision)


def finetune(ws: Workspace, *, repo_id: str, tag: str, location: Location, training: TrainConfig,
             base_model: str, guide_model: str, guide_revision: str | None) -> TrainReport:
    """Fine-tune the base encoder on published version `tag`, read back as a trainer reads it.

    The same version and training settings reuse the model already trained; a build killed mid-training
    resumes from the last checkpoint of the same settings; other settings train again from the base.
    """
    base = resolve_model(base_model)
    guide = resolve_model(guide_model, guide_revision)
    ident = SPEC.identify({"training": training, "base": [base.name, base.revision],
                           "guide": [guide.name, guide.revision]}, {"dataset": [repo_id, tag]})
    out = ws.model_dir(tag)
    model_dir = out / "model"
    if (done := ws.reuse(model_dir, ident, TrainReport)) is not None:
        return done
    triplets = load_published(repo_id, tag, location, "triplets")
    tasks = load_published(repo_id, tag, location, "default", columns=task_columns(training))
    model, facts = train_encoder(task_datasets(tasks, training, triplets), base.path, guide.path, out / "runs" / ident.fingerprint,
                                 training)
    with atomic.atomic_dir(model_dir) as tmp:
        model.save(str(tmp))
    report = TrainReport(model_dir=str(model_dir), dataset_repo=repo_id, tag=tag, base=base, guide=guide, facts=facts,
                         fingerprint=ident.fingerprint)
    ws.save_report(report, model_dir, ident)
    return report
