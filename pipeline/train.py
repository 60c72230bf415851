"""Fine-tuning the encoder on a published version, GIST-style, and scoring it against its base.

The data is read back through `snapshot_download(repo, revision=tag)` + `load_dataset`, exactly as a
downstream trainer reads it, never from build intermediates. Training uses sentence-transformers'
`SentenceTransformerTrainer` with `GISTEmbedLoss` (guide = the build's guide model), one dataset per
task with proportional sampling so that no batch mixes tasks, and no duplicate texts within a batch.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.config import TrainConfig

log = logging.getLogger(__name__)


def load_published(repo_id: str, tag: str, cache_dir: str | None = None):
    """A published version, the way a trainer reads it (`cache_dir` = a local hub, or None for the Hub)."""
    from datasets import load_dataset
    from huggingface_hub import snapshot_download

    path = snapshot_download(repo_id, repo_type="dataset", revision=tag, cache_dir=cache_dir,
                             local_files_only=cache_dir is not None)
    return load_dataset(path, split="train")


def task_datasets(ds, cfg: TrainConfig) -> dict:
    """One (anchor, positive, negative) dataset per task: the multi-dataset sampler keeps batches homogeneous."""
    import datasets

    df = ds.to_polars()
    out = {}
    for (task,), group in sorted(df.group_by("task_name"), key=lambda kv: kv[0]):
        if cfg.max_rows_per_task:
            group = group.head(cfg.max_rows_per_task)
        if group.height < 2:
            continue
        cols = {}
        for src, dst in (("query", "anchor"), ("pos", "positive"), ("neg", "negative")):
            text = group[src]
            if cfg.use_instructions:
                text = group[f"{src}_instruct"] + text
            cols[dst] = text.to_list()
        out[str(task)] = datasets.Dataset.from_dict(cols)
    return out


def _last_checkpoint(out_dir: Path) -> str | None:
    from transformers.trainer_utils import get_last_checkpoint

    return get_last_checkpoint(str(out_dir)) if out_dir.is_dir() else None


def train_encoder(train_sets: dict, base_path: str, guide_path: str, out_dir: Path, cfg: TrainConfig) -> dict:
    """Train (resuming from the last checkpoint in `out_dir` if there is one); returns the training facts."""
    import torch
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import CachedGISTEmbedLoss, GISTEmbedLoss
    from sentence_transformers.sentence_transformer.training_args import (
        BatchSamplers, MultiDatasetBatchSamplers, SentenceTransformerTrainingArguments)

    cuda = torch.cuda.is_available()
    model = SentenceTransformer(base_path, device="cuda" if cuda else "cpu")
    guide = SentenceTransformer(guide_path, device="cuda" if cuda else "cpu")
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
    return {"model": model, "global_step": trainer.state.global_step, "resumed_from": resume,
            "train_loss": float(result.training_loss), "device": "cuda" if cuda else "cpu"}


# ------------------------------------------------------------------------------------------------ evaluation


@dataclass
class EvalSplit:
    task: str
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


def probe_scores(model, splits: list[EvalSplit], batch_size: int = 64, k: int = 10) -> dict:
    """MTEB-style probe: logistic regression on train-split embeddings scored on the test split, plus kNN."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    per_task = {}
    for s in splits:
        enc = lambda texts: model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
        x_train, x_test = enc(s.train_texts), enc(s.test_texts)
        lr = LogisticRegression(max_iter=1000).fit(x_train, s.train_labels)
        knn = KNeighborsClassifier(n_neighbors=min(k, len(s.train_texts)), metric="cosine").fit(x_train, s.train_labels)
        per_task[s.task] = {"logreg_accuracy": round(float(lr.score(x_test, s.test_labels)), 4),
                            "knn_accuracy": round(float(knn.score(x_test, s.test_labels)), 4),
                            "test_rows": len(s.test_texts)}
    mean = {m: round(float(np.mean([v[m] for v in per_task.values()])), 4) if per_task else None
            for m in ("logreg_accuracy", "knn_accuracy")}
    return {"per_task": per_task, "mean": mean}


def model_card_section(*, dataset_repo: str, tag: str, guide: str, base: str, cfg: TrainConfig, facts: dict,
                       evaluation: dict) -> str:
    rows = ["| task | base logreg | fine-tuned logreg | base kNN | fine-tuned kNN |", "|---|---|---|---|---|"]
    for task, ft in evaluation["finetuned"]["per_task"].items():
        b = evaluation["base"]["per_task"][task]
        rows.append(f"| {task} | {b['logreg_accuracy']} | {ft['logreg_accuracy']} | {b['knn_accuracy']} | "
                    f"{ft['knn_accuracy']} |")
    bm, fm = evaluation["base"]["mean"], evaluation["finetuned"]["mean"]
    rows.append(f"| **mean** | {bm['logreg_accuracy']} | {fm['logreg_accuracy']} | {bm['knn_accuracy']} | "
                f"{fm['knn_accuracy']} |")
    return "\n".join([
        "\n## gistforge fine-tune\n",
        f"- Training data: `{dataset_repo}` at tag `{tag}` (read with `snapshot_download` + `load_dataset`)",
        f"- Base model: `{base}`; guide model (GISTEmbedLoss): `{guide}`",
        f"- Steps: {facts['global_step']} on {facts['device']}"
        + (f", resumed from `{Path(facts['resumed_from']).name}`" if facts.get("resumed_from") else ""),
        "- Hyperparameters: `" + json.dumps(cfg.model_dump(), sort_keys=True) + "`",
        "",
        "### Evaluation (held-out test splits: logistic regression on train-split embeddings, kNN k=10)\n",
        *rows, "",
    ])
