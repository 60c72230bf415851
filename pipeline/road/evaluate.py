"""Scoring a fine-tuned encoder against its base with the field's own evaluator: the `mteb` package.

Each included MTEB task is loaded by mteb itself (`AbsTask.load_data`: `datasets.load_dataset(**metadata.dataset)`,
then the task's own `dataset_transform`, e.g. ToxicConversations' stratified 2,048-row test sample, with the
task's seed), from the same pinned Hub-cache snapshot the build read: the task's `metadata.dataset` names the
snapshot folder and revision, because `load_dataset` of a Hub id cannot read a Hub cache offline. So the splits,
the subsampling and the evaluator's seed are mteb's and the scores compare with published MTEB results (for
the revision the build reads; a revision other than mteb's own pin is logged). Local tasks have no MTEB
evaluation and are listed as not evaluated.
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
from pipeline.road.sources import SourceError, pin, snapshot
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


EVAL_SPEC = StageSpec("evaluate", version="2")  # 2: mteb's own loading and dataset_transform (subsampling)


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
    """The tasks mteb can score, loaded by mteb from the pinned snapshots, and the others with why they are
    not evaluated. `test_rows` caps each test split after mteb's own transform (None: mteb's split as is)."""
    import mteb

    skipped = {}
    for src in tasks:
        if why := "not an MTEB task: no MTEB evaluation" if not src.is_mteb else no_test_split(src):
            skipped[src.name] = why
    loaded = []
    for src in (s for s in tasks if s.name not in skipped):
        meta, (_, revision) = get_task(src.name), pin(src)
        task = mteb.get_task(src.name)
        pinned = dict(task.metadata.dataset)
        if pinned["revision"] != revision:
            log.warning("%s: mteb pins %s, this build reads %s: scores are for the build's revision", src.name,
                        pinned["revision"], revision)
        folder = snapshot(src)
        # the instance's own metadata (mteb restores the class's on unload_data): mteb's loader, our snapshot
        task.metadata = task.metadata.model_copy(update={"dataset": {**pinned, "path": str(folder),
                                                                     "revision": revision}})
        if task.metadata.is_multilingual:  # mteb loads one config per subset (language): only the build's
            task.hf_subsets = [meta.config]
        task.n_experiments = experiments
        try:
            task.load_data()
        except Exception as exc:  # noqa: BLE001 - datasets' and mteb's errors, named by task and snapshot
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise SourceError(f"{src.name} ({meta.hub_id}@{revision}): mteb cannot load the snapshot {folder} "
                              f"({type(exc).__name__}: {first}); it needs the config {meta.config or 'default'} "
                              f"with the splits {task.metadata.eval_splits} that mteb's task reads") from None
        rows = 0
        for data in _subsets(task):
            for split in task.metadata.eval_splits:
                if test_rows is not None and len(data[split]) > test_rows:
                    data[split] = data[split].select(range(test_rows))
                rows += len(data[split])
        loaded.append(MtebTask(src.name, task, revision, rows))
    return loaded, skipped


def _subsets(task) -> list:
    """The task's loaded data per evaluated subset (a multilingual task's data is keyed by subset)."""
    return [task.dataset[s] for s in task.hf_subsets] if task.metadata.is_multilingual else [task.dataset]


def device() -> str:
    """Where the evaluation encodes: CUDA when present."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


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

    ident = EVAL_SPEC.identify({"test_rows": cfg.eval_test_rows, "experiments": cfg.eval_experiments,
                                "tasks": [t.model_dump(mode="json") for t in tasks], "mteb": version("mteb")},
                               {"model": trained.fingerprint})
    output = Path(trained.model_dir).parent / "evaluation.json"
    if (done := ws.reuse(output, ident, EvalReport)) is not None:
        return done

    loaded, skipped = mteb_tasks(tasks, test_rows=cfg.eval_test_rows, experiments=cfg.eval_experiments)

    def scores(path: str) -> Scores:  # both models on the same loaded tasks
        return mteb_scores(SentenceTransformer(path, device=device()), loaded, skipped)

    evaluation = EvalReport(base=scores(trained.base.path), finetuned=scores(trained.model_dir),
                            evaluator=f"mteb {version('mteb')}", experiments=cfg.eval_experiments, fingerprint=ident.fingerprint)
    card = Path(trained.model_dir) / "README.md"
    text = card.read_text(encoding="utf-8").split(CARD_SECTION)[0] if card.exists() else ""
    atomic.write_text(card, text + model_card_section(trained, cfg, evaluation))
    ws.save_report(evaluation, output, ident)
    return evaluation


def last_finetune(ws: Workspace, tag: str) -> tuple[TrainReport, EvalReport]:
    """The fine-tune on version `tag` in this workspace, and its evaluation."""
    out = ws.model_dir(tag)
    return ws.load_report(out / "model", TrainReport), ws.load_report(out / "evaluation.json", EvalReport)
