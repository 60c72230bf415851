"""Does the data help? Fine-tune the bundled MiniLM for one epoch on Banking77 triplets, two ways, and score.

Usage: python benchmarks/finetune_banking77.py [DATA] [--epochs 1] [--out DIR] [--test-rows N]

(a) gistforge's default triplets (softmax top-k positive, margin-guarded hard negative) and (b) the
miner's GIST-exact `uniform` mode, both mined from Banking77 train (decontaminated against its test
split) with the bundled model as guide, then trained with gistforge's trainer (GISTEmbedLoss, GIST's
hyperparameters) and scored with the `mteb` package's classification evaluator (logistic regression, 10
experiments) on Banking77's pinned test split, next to the base model. Ends with one JSON line:
base_accuracy, gistforge_accuracy, uniform_accuracy, the F1 figures and the evaluator's version.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--lr", type=float, default=5e-6)
    p.add_argument("--out", default=None)
    p.add_argument("--test-rows", type=int, default=None, help="test rows scored (default: the whole test split)")
    args = p.parse_args()
    os.environ.update({"HF_HUB_CACHE": str(Path(args.data) / "hf-hub-cache"), "HF_HUB_OFFLINE": "1",
                       "TOKENIZERS_PARALLELISM": "false"})

    from importlib.metadata import version

    import datasets
    import polars as pl
    from sentence_transformers import SentenceTransformer

    from pipeline.config import BuildConfig, MiningConfig, TaskSource, TrainConfig
    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road import train
    from pipeline.road.model_ref import resolve_model
    from pipeline.road.evaluate import mteb_scores, mteb_tasks
    from pipeline.road.stages import Road

    out = Path(args.out or tempfile.mkdtemp(prefix="gistforge-ft-"))
    ref = resolve_model(BUNDLED_MODEL)
    tc = TrainConfig(epochs=args.epochs, learning_rate=args.lr, save_steps=10_000, eval_test_rows=args.test_rows)
    task = "Banking77Classification"
    scores, facts = {}, {}
    split = src = None

    loaded = None

    def evaluate(model, src: TaskSource):
        """MTEB's classification scores on the task's pinned test split (loaded once, for every model)."""
        nonlocal loaded
        loaded = loaded or mteb_tasks([src], test_rows=tc.eval_test_rows, experiments=tc.eval_experiments)
        return mteb_scores(model, *loaded).per_task[task]

    for mode in ("hard", "uniform"):
        cfg = BuildConfig(profile=f"ft-{mode}", medi=None, guide_model=BUNDLED_MODEL, tasks=[TaskSource(name=task)],
                          mining=MiningConfig(negative_strategy=mode), training=tc)
        road = Road.at_home(cfg, out)
        ws, src = road.ws, cfg.task(task)
        road.test_texts()
        road.split(task)
        road.mine(task)  # the guide is loaded only when the triplets are not up to date
        triplets = pl.read_parquet(ws.triplets(task))
        sets = {task: datasets.Dataset.from_dict({"anchor": triplets["query"].to_list(),
                                                  "positive": triplets["pos"].to_list(),
                                                  "negative": triplets["neg"].to_list()})}
        t0 = time.time()
        model, trained = train.train_encoder(sets, ref.path, ref.path, out / f"model-{mode}", tc)
        facts[mode] = {"steps": trained.global_step, "train_s": round(time.time() - t0, 1),
                       "triplets": triplets.height, "loss": round(trained.train_loss, 4)}
        split = pl.read_parquet(ws.split(task))
        scores[mode] = evaluate(model, src)
    scores["base"] = evaluate(SentenceTransformer(ref.path, device="cpu"), src)
    print(json.dumps({
        "base_accuracy": scores["base"].accuracy, "gistforge_accuracy": scores["hard"].accuracy,
        "uniform_accuracy": scores["uniform"].accuracy,
        "base_f1": scores["base"].f1, "gistforge_f1": scores["hard"].f1, "uniform_f1": scores["uniform"].f1,
        "evaluator": f"mteb {version('mteb')}", "experiments": tc.eval_experiments,
        "dataset_revision": scores["base"].dataset_revision,
        "epochs": args.epochs, "lr": args.lr, "batch_size": tc.batch_size, "runs": facts,
        "train_rows": split.height, "test_rows": scores["base"].test_rows,
    }))


if __name__ == "__main__":
    main()
