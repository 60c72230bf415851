"""Scoring a fine-tuned encoder against its base with the field's own evaluator: the `mteb` package.

Each included MTEB task's classification evaluation runs on its pinned test split, read offline from the
same Hub-cache snapshot the build read (mteb's own loader cannot read a Hub cache offline, so the split is
loaded here and handed to the task), so scores compare with published MTEB results. Local tasks have no
MTEB evaluation and are listed as not evaluated.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from pydantic import BaseModel

from pipeline.common import atomic
from pipeline.config import TaskSource, TrainConfig
from pipeline.registry import get_task
from pipeline.road.decontaminate import no_test_split
from pipeline.road.sources import pin, snapshot, split_dataset
from pipeline.road.train import TrainReport
from pipeline.workspace import StageReport, StageSpec, Workspace

log = logging.getLogger(__name__)


class TaskScore(BaseModel):
    """MTEB's classification scores on one task's test split (accuracy is its main score)."""

    accuracy: float
    f1: float
    test_rows: int
    dataset_revision: str


class Scores(BaseModel):
    per_task: dict[str, TaskScore]
    mean_accuracy: float | None
    not_evaluated: dict[str, str] = {}


EVAL_SPEC = StageSpec("evaluate", version="1")


class EvalReport(StageReport):
    base: Scores
    finetuned: Scores
    evaluator: str  # e.g. "mteb 2.26.24"
    experiments: int


@dataclass
class MtebTask:
    """One included task as mteb's task object, its pinned data loaded from the Hub cache once."""

    name: str
    task: object
    revision: str
    test_rows: int


def mteb_tasks(tasks: Sequence[TaskSource], *, test_rows: int | None = None,
               experiments: int = 10) -> tuple[list[MtebTask], dict[str, str]]:
    """The tasks mteb can score, loaded, and the others with why they are not evaluated."""
    import datasets
    import mteb

    skipped = {}
    for src in tasks:
        if why := "not an MTEB task: no MTEB evaluation" if not src.is_mteb else no_test_split(src):
            skipped[src.name] = why
    loaded = []
    for src in (s for s in tasks if s.name not in skipped):
        meta, (_, revision) = get_task(src.name), pin(src)
        task = mteb.get_task(src.name)
        if task.metadata.dataset["revision"] != revision:
            log.warning("%s: mteb pins %s, this build reads %s: scores are for the build's revision", src.name,
                        task.metadata.dataset["revision"], revision)
        folder, source = snapshot(src), f"{src.name} ({meta.hub_id}@{revision})"
        test = split_dataset(folder, f"{source} test", meta.config, meta.test_split)
        if test_rows is not None and len(test) > test_rows:
            test = test.select(range(test_rows))
        data = datasets.DatasetDict({"train": split_dataset(folder, source, meta.config, meta.split), "test": test})
        if task.metadata.is_multilingual:  # mteb keys a multilingual task's data by subset (the language config)
            task.hf_subsets = [meta.config]
            data = {meta.config: data}
        task.dataset, task.data_loaded, task.n_experiments = data, True, experiments
        loaded.append(MtebTask(src.name, task, revision, len(test)))
    return loaded, skipped


def mteb_scores(model, tasks: Sequence[MtebTask], not_evaluated: dict[str, str], batch_size: int = 64) -> Scores:
    """MTEB classification (logistic regression on sampled train embeddings, per experiment) for each task."""
    import mteb

    per_task: dict[str, TaskScore] = {}
    for t in tasks:
        result = mteb.evaluate(model, t.task, cache=None, co2_tracker=False, show_progress_bar=False,
                               encode_kwargs={"batch_size": batch_size})
        score = result.task_results[0].scores["test"][0]
        per_task[t.name] = TaskScore(accuracy=round(float(score["accuracy"]), 4), f1=round(float(score["f1"]), 4),
                                     test_rows=t.test_rows, dataset_revision=t.revision)
    mean = round(float(np.mean([s.accuracy for s in per_task.values()])), 4) if per_task else None
    return Scores(per_task=per_task, mean_accuracy=mean, not_evaluated=not_evaluated)


CARD_SECTION = "\n## gistforge fine-tune\n"


def model_card_section(trained: TrainReport, cfg: TrainConfig, evaluation: EvalReport) -> str:
    rows = ["| task | revision | test rows | base accuracy | fine-tuned accuracy | base F1 | fine-tuned F1 |",
            "|---|---|---|---|---|---|---|"]
    for task, ft in evaluation.finetuned.per_task.items():
        b = evaluation.base.per_task[task]
        rows.append(f"| {task} | `{ft.dataset_revision[:12]}` | {ft.test_rows} | {b.accuracy} | {ft.accuracy} | "
                    f"{b.f1} | {ft.f1} |")
    rows.append(f"| **mean** | | | {evaluation.base.mean_accuracy} | {evaluation.finetuned.mean_accuracy} | | |")
    rows += [f"\nNot evaluated: {task} ({why})." for task, why in evaluation.finetuned.not_evaluated.items()]
    facts = trained.facts
    return "\n".join([
        CARD_SECTION,
        f"- Training data: `{trained.dataset_repo}` at tag `{trained.tag}` (read with `snapshot_download` + "
        "`load_dataset`)",
        f"- Base model: `{trained.base.name}@{trained.base.revision}`; guide model (GISTEmbedLoss): "
        f"`{trained.guide.name}@{trained.guide.revision}`",
        f"- Steps: {facts.global_step} on {facts.device}"
        + (f", resumed from `{Path(facts.resumed_from).name}`" if facts.resumed_from else ""),
        "- Hyperparameters: `" + json.dumps(cfg.model_dump(), sort_keys=True) + "`",
        "",
        f"### Evaluation ({evaluation.evaluator} classification, {evaluation.experiments} experiments, on the "
        "pinned test splits)\n",
        *rows, "",
    ])


# ------------------------------------------------------------------------------------------------ the stage


def evaluate_finetune(ws: Workspace, trained: TrainReport, tasks: Sequence[TaskSource], cfg: TrainConfig) -> EvalReport:
    """Base vs fine-tuned on every included task MTEB knows; the model card gets the table (replacing an older one)."""
    from importlib.metadata import version

    from sentence_transformers import SentenceTransformer

    fp = EVAL_SPEC.fingerprint({"test_rows": cfg.eval_test_rows, "experiments": cfg.eval_experiments,
                                "tasks": [t.model_dump(mode="json") for t in tasks], "mteb": version("mteb")},
                               {"model": trained.fingerprint})
    output = Path(trained.model_dir).parent / "evaluation.json"
    if (done := ws.reuse(output, fp, EvalReport)) is not None:
        return done

    loaded, skipped = mteb_tasks(tasks, test_rows=cfg.eval_test_rows, experiments=cfg.eval_experiments)

    def scores(path: str) -> Scores:  # both models on the same loaded tasks
        return mteb_scores(SentenceTransformer(path, device="cpu"), loaded, skipped)

    evaluation = EvalReport(base=scores(trained.base.path), finetuned=scores(trained.model_dir),
                            evaluator=f"mteb {version('mteb')}", experiments=cfg.eval_experiments, fingerprint=fp)
    card = Path(trained.model_dir) / "README.md"
    text = card.read_text(encoding="utf-8").split(CARD_SECTION)[0] if card.exists() else ""
    atomic.write_text(card, text + model_card_section(trained, cfg, evaluation))
    ws.save_report(evaluation, output)
    return evaluation


def last_finetune(ws: Workspace, tag: str) -> tuple[TrainReport, EvalReport]:
    """The fine-tune on version `tag` in this workspace, and its evaluation."""
    out = ws.model_dir(tag)
    return ws.load_report(out / "model", TrainReport), ws.load_report(out / "evaluation.json", EvalReport)
