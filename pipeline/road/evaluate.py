"""Scoring a fine-tuned encoder against its base on the included tasks' held-out test splits.

The probe is MTEB's classification protocol in small: logistic regression on train-split embeddings,
accuracy on the test split; kNN accuracy beside it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import polars as pl
from pydantic import BaseModel

from pipeline.common import atomic
from pipeline.config import TaskSource, TrainConfig
from pipeline.road.decontaminate import load_test_split
from pipeline.road.train import TrainReport
from pipeline.workspace import Workspace

log = logging.getLogger(__name__)


@dataclass
class EvalSplit:
    task: str
    train_texts: list[str]
    train_labels: list[str]
    test_texts: list[str]
    test_labels: list[str]


class TaskScore(BaseModel):
    logreg_accuracy: float
    knn_accuracy: float
    test_rows: int


class MeanScore(BaseModel):
    logreg_accuracy: float | None
    knn_accuracy: float | None


class Scores(BaseModel):
    per_task: dict[str, TaskScore]
    mean: MeanScore


class EvalReport(BaseModel):
    base: Scores
    finetuned: Scores


def probe_scores(model, splits: list[EvalSplit], batch_size: int = 64, k: int = 10) -> Scores:
    """Logistic regression on train-split embeddings scored on the test split, plus kNN (k=10)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier

    per_task = {}
    for s in splits:
        enc = lambda texts: model.encode(texts, batch_size=batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
        x_train, x_test = enc(s.train_texts), enc(s.test_texts)
        lr = LogisticRegression(max_iter=1000).fit(x_train, s.train_labels)
        knn = KNeighborsClassifier(n_neighbors=min(k, len(s.train_texts)), metric="cosine").fit(x_train, s.train_labels)
        per_task[s.task] = TaskScore(logreg_accuracy=round(float(lr.score(x_test, s.test_labels)), 4),
                                     knn_accuracy=round(float(knn.score(x_test, s.test_labels)), 4),
                                     test_rows=len(s.test_texts))
    mean = {m: round(float(np.mean([getattr(v, m) for v in per_task.values()])), 4) if per_task else None
            for m in ("logreg_accuracy", "knn_accuracy")}
    return Scores(per_task=per_task, mean=MeanScore(**mean))


def model_card_section(trained: TrainReport, cfg: TrainConfig, evaluation: EvalReport) -> str:
    rows = ["| task | base logreg | fine-tuned logreg | base kNN | fine-tuned kNN |", "|---|---|---|---|---|"]
    for task, ft in evaluation.finetuned.per_task.items():
        b = evaluation.base.per_task[task]
        rows.append(f"| {task} | {b.logreg_accuracy} | {ft.logreg_accuracy} | {b.knn_accuracy} | {ft.knn_accuracy} |")
    bm, fm = evaluation.base.mean, evaluation.finetuned.mean
    rows.append(f"| **mean** | {bm.logreg_accuracy} | {fm.logreg_accuracy} | {bm.knn_accuracy} | {fm.knn_accuracy} |")
    facts = trained.facts
    return "\n".join([
        "\n## gistforge fine-tune\n",
        f"- Training data: `{trained.dataset_repo}` at tag `{trained.tag}` (read with `snapshot_download` + "
        "`load_dataset`)",
        f"- Base model: `{trained.base.name}@{trained.base.revision}`; guide model (GISTEmbedLoss): "
        f"`{trained.guide.name}@{trained.guide.revision}`",
        f"- Steps: {facts.global_step} on {facts.device}"
        + (f", resumed from `{Path(facts.resumed_from).name}`" if facts.resumed_from else ""),
        "- Hyperparameters: `" + json.dumps(cfg.model_dump(), sort_keys=True) + "`",
        "",
        "### Evaluation (held-out test splits: logistic regression on train-split embeddings, kNN k=10)\n",
        *rows, "",
    ])


# ------------------------------------------------------------------------------------------------ the stage


def evaluate_finetune(ws: Workspace, trained: TrainReport, tasks: Sequence[TaskSource], cfg: TrainConfig) -> EvalReport:
    """Base vs fine-tuned on every included task with a test split; the model card gets the table."""
    from sentence_transformers import SentenceTransformer

    splits = []
    for src in tasks:
        test = load_test_split(src)
        if test is None or not ws.split(src.name).exists():
            continue
        tr = pl.read_parquet(ws.split(src.name)).head(cfg.probe_train_rows)
        te = test.filter(pl.col("text").is_not_null()).head(cfg.probe_test_rows)
        splits.append(EvalSplit(src.name, tr["text"].to_list(), tr["label"].to_list(),
                                te["text"].to_list(), te["label"].to_list()))
    evaluation = EvalReport(base=probe_scores(SentenceTransformer(trained.base.path, device="cpu"), splits),
                            finetuned=probe_scores(SentenceTransformer(trained.model_dir, device="cpu"), splits))
    atomic.write_text(Path(trained.model_dir).parent / "evaluation.json", evaluation.model_dump_json(indent=2))
    card = Path(trained.model_dir) / "README.md"
    card.write_text((card.read_text(encoding="utf-8") if card.exists() else "")
                    + model_card_section(trained, cfg, evaluation), encoding="utf-8")
    return evaluation


def last_finetune(ws: Workspace, tag: str) -> tuple[TrainReport, EvalReport]:
    """The fine-tune on version `tag` in this workspace, and its evaluation."""
    out = ws.model_dir(tag)
    return (TrainReport.model_validate_json((out / "train.json").read_text(encoding="utf-8")),
            EvalReport.model_validate_json((out / "evaluation.json").read_text(encoding="utf-8")))
