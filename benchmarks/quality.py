"""What the data does to an encoder: variants of gistforge's mining, each fine-tuned and scored, over seeds.

Usage: flock /tmp/gistforge-heavy.lock python benchmarks/quality.py [--data DIR] [--max-train N] [--seeds 3]
       [--tasks Banking77Classification slurp_intent jigsaw_toxic] [--variants ...] [--test-rows N]

Each task's train split goes through gistforge's own stages (`ingest_task`: cleaning and exact
decontamination against the task's test split; `mine_task`: guide embeddings, mining, label-noise audit),
with the bundled MiniLM as guide, once per variant and seed (the embedding cache is shared, so a task is
embedded once). The variant's rows (at most `--max-train` queries, a seeded sample) fine-tune the bundled
MiniLM for one epoch with MultipleNegativesRankingLoss (batch 32, lr 2e-5, warmup 0.1, NO_DUPLICATES batches,
`--max-seq-length` tokens), and `mteb`'s classification evaluation (logistic regression on 8 sampled train
texts per label, `--experiments` experiments, mteb's seed) scores it on the task's pinned test split:
Banking77 by mteb's own task object over the Hub-cache snapshot (`pipeline.road.evaluate.mteb_tasks`); a
local task (slurp_intent, jigsaw_toxic) by the same mteb classification task class with its data replaced by
the local train/test files. Variants:

- `gist`: GIST's recipe, `negative_strategy: uniform` (random other-label negatives, no guard);
- `default`: gistforge's default mining (guarded hard negatives, one per query);
- `ntuple2`, `ntuple4`: the `ntuple` config with k = 2 / 4 guarded negatives per row;
- `separate4`: the same queries and negatives as `ntuple4`, given as 4 separate triplet rows each (is a
  gain the n-tuple format, or the extra negatives?);
- `deep`: the default plus the deeper search (`mining.negative_max_depth: 1024`);
- `label_noise`: the default plus `clean.drop_label_noise: true`;
- `rounds2`: `mining.rounds: 2`, ANCE-style re-mining: the default's rows (at most `--round-train` queries)
  fine-tune the bundled MiniLM (the same trainer), and that encoder guides a second mining of the task
  (`Workspace.at_round(2, 2)`, guide named by its files' digest as `pipeline.road.rounds` names it); the
  second round's rows then fine-tune a fresh MiniLM, which is scored (as the pipeline's final fine-tune
  trains the base model on the last round's data).

Prints a table (mean ± sd of accuracy over seeds per task, and the paired difference against `gist`: per
seed, variant minus gist, averaged over tasks, then mean ± sd over seeds) and one JSON line at the end.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

VARIANTS: dict[str, dict] = {
    "gist": {"mining": {"negative_strategy": "uniform"}},
    "default": {},
    "ntuple2": {"mining": {"negatives_per_query": 2}, "format": "ntuple"},
    "ntuple4": {"mining": {"negatives_per_query": 4}, "format": "ntuple"},
    "separate4": {"mining": {"negatives_per_query": 4}, "format": "separate"},
    "deep": {"mining": {"negative_max_depth": 1024}},
    "label_noise": {"clean": {"drop_label_noise": True}},
    "rounds2": {"mining": {"rounds": 2}},
}

LOCAL = {  # the local labelled files of ../shared/data/raw, as gistforge task sources
    "slurp_intent": {"label_column": "intent"},
    "jigsaw_toxic": {"label_column": "label"},
}


def task_source(name: str, data: Path):
    from pipeline.config import TaskSource

    if name in LOCAL:
        folder = data / "raw" / name
        return TaskSource(name=name, kind="local", path=folder / "train.jsonl", test_path=folder / "test.jsonl",
                          label_text_column=None, license="see ../shared/data/README.md", **LOCAL[name])
    return TaskSource(name=name, cache_dir=data / "hf-hub-cache")


def local_mteb_task(src, test_rows: int | None, experiments: int):
    """mteb's classification task class (Banking77's, whose protocol is the generic one: 8 samples per label,
    logistic regression) over a local task's own train and test files, labels as integer codes."""
    import datasets
    import mteb
    import polars as pl

    from pipeline.road.evaluate import MtebTask

    col = src.label_column
    train, test = pl.read_ndjson(src.path), pl.read_ndjson(src.test_path)
    names = sorted(set(train[col].to_list()) | set(test[col].to_list()))
    code = {n: i for i, n in enumerate(names)}
    if test_rows is not None:
        test = test.head(test_rows)

    def ds(df):
        return datasets.Dataset.from_dict({"text": df["text"].to_list(), "label": [code[x] for x in df[col]]})

    task = copy.deepcopy(mteb.get_task("Banking77Classification"))
    task.dataset = datasets.DatasetDict({"train": ds(train), "test": ds(test)})
    task.data_loaded = True
    task.n_experiments = experiments
    return MtebTask(src.name, task, "local", test.height)


def training_rows(ws, src, fmt: str, k: int, max_train: int | None, seed: int):
    """The variant's rows as the trainer takes them: (anchor, positive, negative[_j]) columns only."""
    import datasets
    import polars as pl

    from pipeline.road.layout import MinedTables, derived_tables

    frame = pl.read_parquet(ws.triplets(src.name))
    if fmt == "triplets":
        df = frame.select(anchor="query", positive="pos", negative="neg")
    else:
        nt = pl.from_arrow(derived_tables(MinedTables([frame], k=k))["ntuple"]).drop("scores")
        df = nt
    if max_train and df.height > max_train:
        df = df.sample(max_train, seed=seed)
    if fmt == "separate":
        df = pl.concat([df.select("anchor", "positive", negative=f"negative_{j + 1}") for j in range(k)])
        df = df.sample(fraction=1.0, shuffle=True, seed=seed)
    return datasets.Dataset.from_polars(df)


def finetune(rows, base_path: str, seed: int, max_seq_length: int, out: Path):
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import (BatchSamplers,
                                                                          SentenceTransformerTrainingArguments)

    model = SentenceTransformer(base_path, device="cpu")
    model.max_seq_length = max_seq_length
    args = SentenceTransformerTrainingArguments(
        output_dir=str(out), num_train_epochs=1, per_device_train_batch_size=32, learning_rate=2e-5,
        warmup_steps=0.1, batch_sampler=BatchSamplers.NO_DUPLICATES, save_strategy="no", seed=seed,
        report_to="none", use_cpu=True, disable_tqdm=True, logging_steps=10_000, dataloader_drop_last=False)
    trainer = SentenceTransformerTrainer(model=model, args=args, train_dataset=rows,
                                         loss=MultipleNegativesRankingLoss(model))
    result = trainer.train()
    return model, trainer.state.global_step, float(result.training_loss)


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.fmean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--tasks", nargs="+", default=["Banking77Classification", "slurp_intent", "jigsaw_toxic"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--max-train", type=int, default=None, help="queries per task and variant (a seeded sample)")
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--test-rows", type=int, default=None, help="test rows scored per task (default: all)")
    p.add_argument("--experiments", type=int, default=10, help="mteb classification experiments")
    p.add_argument("--round-train", type=int, default=None,
                   help="rounds2: queries the first round's encoder trains on (default: all)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    data = Path(args.data)
    os.environ.update({"HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
    logging.basicConfig(level=logging.WARNING)

    from importlib.metadata import version

    from pipeline.config import BuildConfig, CleanConfig, MiningConfig
    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road.model_ref import resolve_model
    from pipeline.road.evaluate import mteb_scores, mteb_tasks
    from pipeline.road.mine import MineReport
    from pipeline.road.rounds import fine_tuned_ref
    from pipeline.road.stages import Road

    out = Path(args.out or tempfile.mkdtemp(prefix="gistforge-quality-"))
    ref = resolve_model(BUNDLED_MODEL)
    seeds = list(range(args.seeds))
    acc: dict[str, dict[str, list[float]]] = {v: {t: [] for t in args.tasks} for v in args.variants}
    facts: dict[str, dict] = {}
    t_start = time.time()
    for task in args.tasks:
        src = task_source(task, data)
        if task in LOCAL:
            evaluated = [local_mteb_task(src, args.test_rows, args.experiments)], {}
        else:
            evaluated = mteb_tasks([src], test_rows=args.test_rows, experiments=args.experiments)
        for variant in args.variants:
            spec = VARIANTS[variant]
            for seed in seeds:
                cfg = BuildConfig(profile=f"q-{task}-{variant}-{seed}", medi=None, guide_model=BUNDLED_MODEL,
                                  tasks=[src], mining=MiningConfig(**spec.get("mining", {})),
                                  clean=CleanConfig(**spec.get("clean", {})), seed=seed)
                # one round through the stages; the `rounds2` variant's round 2 is mined below with its own
                # short fine-tune (`--round-train`), not the `round1_encoder` stage's full one
                road = Road.at_home(cfg, out)
                ws = road.round(1)
                road.test_texts()
                road.split(src.name)
                mined: MineReport = road.mine(src.name)
                round_facts = {}
                if cfg.mining.rounds == 2:
                    t0 = time.time()
                    first = training_rows(ws, src, "triplets", 1, args.round_train, seed)
                    encoder, steps, _ = finetune(first, ref.path, seed, args.max_seq_length,
                                                 out / "runs" / cfg.profile / "round1")
                    encoder.max_seq_length = json.loads(  # the guide's own length, not the trainer's
                        (Path(ref.path) / "sentence_bert_config.json").read_text())["max_seq_length"]
                    encoder.save(str(out / "models" / cfg.profile / "round1"))
                    guide_ref = fine_tuned_ref(out / "models" / cfg.profile / "round1", "bundled MiniLM", 1)
                    ws = road.round(2)
                    first_pos = mined.mining.pos_sim.mean
                    mined = road.mine(src.name, r=2, ref=guide_ref)
                    round_facts = {"round1_rows": first.num_rows, "round1_steps": steps,
                                   "round1_s": round(time.time() - t0, 1), "round1_pos_sim": first_pos,
                                   "round2_pos_sim": mined.mining.pos_sim.mean}
                rows = training_rows(ws, src, spec.get("format", "triplets"), cfg.mining.negatives_per_query,
                                     args.max_train, seed)
                t0 = time.time()
                model, steps, loss = finetune(rows, ref.path, seed, args.max_seq_length,
                                              out / "runs" / cfg.profile)
                train_s = time.time() - t0
                score = mteb_scores(model, *evaluated).per_task[task]
                acc[variant][task].append(score.accuracy)
                neg = mined.mining.negatives
                facts[f"{task}/{variant}/{seed}"] = {
                    "rows": rows.num_rows, "steps": steps, "loss": round(loss, 4), "train_s": round(train_s, 1),
                    "eval_s": round(time.time() - t0 - train_s, 1), "accuracy": score.accuracy,
                    "fallback_share": round(neg.fallback_share, 4), "ntuple_queries": neg.ntuple_queries,
                    "queries": mined.mining.queries,
                    "label_noise_flagged": mined.label_noise.flagged if mined.label_noise else None,
                    "label_noise_dropped": mined.account.drops.get("label_noise", 0)} | round_facts
                print(f"[{time.time() - t_start:7.0f}s] {task} {variant} seed {seed}: "
                      f"{json.dumps(facts[f'{task}/{variant}/{seed}'])}", flush=True)

    def per_seed_mean(variant: str) -> list[float]:
        return [statistics.fmean(acc[variant][t][s] for t in args.tasks) for s in range(len(seeds))]

    table, summary = [], {}
    header = ["variant", *args.tasks, "mean", "paired diff vs gist"]
    for v in args.variants:
        cells = [v]
        for t in args.tasks:
            m, sd = mean_sd(acc[v][t])
            cells.append(f"{m * 100:.2f} ± {sd * 100:.2f}")
        m, sd = mean_sd(per_seed_mean(v))
        cells.append(f"{m * 100:.2f} ± {sd * 100:.2f}")
        entry = {"mean": round(m, 4), "sd": round(sd, 4),
                 "per_task": {t: [round(x, 4) for x in acc[v][t]] for t in args.tasks}}
        if "gist" in acc and v != "gist":
            diffs = [a - b for a, b in zip(per_seed_mean(v), per_seed_mean("gist"))]
            dm, dsd = mean_sd(diffs)
            cells.append(f"{dm * 100:+.2f} ± {dsd * 100:.2f}")
            entry |= {"diff_vs_gist": round(dm, 4), "diff_sd": round(dsd, 4), "wins": dm > dsd}
        else:
            cells.append("")
        table.append(cells)
        summary[v] = entry
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for row in table:
        print("| " + " | ".join(row) + " |")
    print(json.dumps({"variants": summary, "tasks": args.tasks, "seeds": len(seeds), "max_train": args.max_train,
                      "max_seq_length": args.max_seq_length, "test_rows": args.test_rows,
                      "experiments": args.experiments, "round_train": args.round_train, "evaluator": f"mteb {version('mteb')}",
                      "loss": "MultipleNegativesRankingLoss", "batch_size": 32, "lr": 2e-5, "warmup": 0.1,
                      "total_s": round(time.time() - t_start), "runs": facts}))


if __name__ == "__main__":
    main()
