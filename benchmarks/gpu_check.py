"""GPU check: the guide, FAISS, the rehearsal, the multi-GPU pool and the fine-tune on one CUDA machine.

Usage: python benchmarks/gpu_check.py [--tiny] [--skip-rehearsal] [--rehearsal-scale 1.0] [--budget-s 450]

On a CUDA machine with this repo installed with the `gpu` extra (`pip install -e '.[gpu]'`), in under 8
minutes, measures and prints one JSON line of:

* `encode`: the pipeline's `GuideEncoder` (token-sorted batches, the precision `guide_precision: auto` picks:
  fp16 on CUDA) on texts shaped like the embedded sample's (Banking77 utterances and IMDB reviews), texts/s
  and tokens/s, for the bundled MiniLM and for a bge-base-sized BERT (12 layers, 768 wide, 512 tokens,
  CLS pooling) built here with seeded random weights: its speed is bge-base's, its vectors mean nothing.
* `faiss`: exact inner-product search (`pipeline.road.search.flat_index`, on every GPU FAISS sees) of 1M
  x 768 normalised vectors, queries/s at k = 10.
* `rehearsal`: `benchmarks/full_scale.py` (the whole Dagster graph at GISTEmbed's size, static guide) at
  `--rehearsal-scale`, in a child process given what is left of `--budget-s`; its JSON line's totals.
* `multi_gpu_pool`: with more than one CUDA device, the guide over every device through the multi-process
  pool, texts/s (else skipped, saying why).
* `finetune`: 20 steps of `pipeline.road.train.train_encoder` (GISTEmbedLoss, MiniLM guided by itself,
  batch 32, 128 tokens), steps/s over the whole call (model loading included).

The bge-base-sized model is built on the CPU before anything is timed.

`--tiny` runs every part on the CPU at toy sizes (a 2-layer BERT, 2,000 x 32 vectors, the pool on two CPU
processes, a rehearsal at scale 0.0005, 20 steps of the toy BERT at batch 4): the test suite runs it so the script never
rots. A part that fails is recorded under `errors` and the script exits 1 after printing the line.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SAMPLE = ROOT / "pipeline" / "sample" / "hf-hub-cache"


def sample_texts(n: int) -> list[str]:
    """`n` distinct texts with the embedded sample's mix of lengths (its Banking77 and IMDB train rows, numbered)."""
    rows = []
    for path in sorted(SAMPLE.glob("datasets--mteb--*/snapshots/*/train.jsonl")):
        rows += [json.loads(line)["text"] for line in path.read_text().split("\n") if line]
    return [f"{rows[i % len(rows)]} ({i})" for i in range(n)]


def bert_sized(out: Path, tiny: bool, seed: int = 0) -> Path:
    """A sentence-transformers folder: a BERT of bge-base's shape (or a toy one), seeded random weights, the
    bundled MiniLM's tokenizer (the same 30,522-token uncased vocabulary), CLS pooling, normalised."""
    import torch
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize, Pooling, Transformer
    from transformers import AutoTokenizer, BertConfig, BertModel

    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road.model_ref import resolve_model

    shape = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64) if tiny else \
        dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072)
    torch.manual_seed(seed)
    raw = out / "raw"
    BertModel(BertConfig(vocab_size=30522, max_position_embeddings=512, **shape)).save_pretrained(raw)
    AutoTokenizer.from_pretrained(resolve_model(BUNDLED_MODEL).path).save_pretrained(raw)
    folder = out / "st"
    SentenceTransformer(modules=[Transformer(str(raw), max_seq_length=512), Pooling(shape["hidden_size"], "cls"),
                                 Normalize()], device="cpu").save(str(folder))
    return folder


def part_encode(model: str, texts: list[str], cache: Path, batch_size: int) -> dict:
    """The pipeline's guide, as a mining step runs it: warmed up on a few texts, then every text once."""
    from pipeline.road.embed import GuideEncoder, token_lengths

    guide = GuideEncoder(model, None, cache, batch_size=batch_size)
    guide.vectors([f"warm-up {i}" for i in range(batch_size)])  # CUDA context, kernels, allocator
    tokens = int(token_lengths(guide.model, texts).sum())
    _sync()
    t0 = time.time()
    _, stats = guide.embed(texts)
    _sync()
    s = time.time() - t0
    return {"device": guide.devices[0], "precision": guide.precision, "texts": stats.encoded, "tokens": tokens,
            "s": round(s, 2), "texts_per_s": round(stats.encoded / s, 1), "tokens_per_s": round(tokens / s)}


def part_faiss(n: int, dim: int, queries: int) -> dict:
    from pipeline.road.search import flat_index, gpu_count, search

    rng = np.random.default_rng(0)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):
        block = rng.standard_normal((min(n, s + 100_000) - s, dim), dtype=np.float32)
        x[s:s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    t0 = time.time()
    index = flat_index(x)
    add_s = time.time() - t0
    q = x[rng.choice(n, queries, replace=False)]
    search(index, q[:min(queries, 1000)], 10, 4096)  # warm-up
    t1 = time.time()
    _, ids = search(index, q, 10, 4096)
    s = time.time() - t1
    return {"n": n, "dim": dim, "queries": queries, "gpus": gpu_count(), "add_s": round(add_s, 2),
            "search_s": round(s, 3), "queries_per_s": round(queries / s), "self_found": float((ids[:, 0] >= 0).mean())}


def part_rehearsal(scale: float, timeout_s: float) -> dict:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    t0 = time.time()
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "full_scale.py"), "--scale", str(scale)],
                         capture_output=True, text=True, cwd=ROOT, env=env, timeout=max(timeout_s, 1))
    if out.returncode:
        raise RuntimeError(f"full_scale.py exited {out.returncode}: {out.stderr[-2000:]}")
    r = json.loads(out.stdout.strip().splitlines()[-1])
    slowest = sorted(r["assets"], key=lambda a: -a["s"])[:3]
    return {"scale": scale, "wall_s": round(time.time() - t0, 1), "total_s": r["total_s"],
            "peak_rss_mb": r["peak_rss_mb"], "rows": r["rows"],
            "slowest": [{k: a.get(k) for k in ("asset", "partition", "s")} for a in slowest]}


def part_pool(model: str, texts: list[str], cache: Path, devices: list[str], batch_size: int) -> dict:
    from pipeline.road.embed import PoolEncoder, embed_texts, load_encoder
    from pipeline.road.model_ref import resolve_model

    pool = PoolEncoder(load_encoder(resolve_model(model), devices[0]), devices)
    try:
        embed_texts(pool, texts[:batch_size * len(devices)], None, batch_size)  # starts the processes
        t0 = time.time()
        _, stats = embed_texts(pool, texts, None, batch_size)
        s = time.time() - t0
    finally:
        pool.close()
    return {"devices": devices, "texts": stats.encoded, "s": round(s, 2), "texts_per_s": round(stats.encoded / s, 1)}


def part_finetune(model: str, texts: list[str], out: Path, steps: int, batch_size: int, max_seq_length: int) -> dict:
    import datasets

    from pipeline.config import TrainConfig
    from pipeline.road.model_ref import resolve_model
    from pipeline.road.train import train_encoder

    n = steps * batch_size
    rows = {"anchor": texts[:n], "positive": [f"{t} again" for t in texts[:n]],
            "negative": [texts[(i + n // 2) % len(texts)] + " other" for i in range(n)]}
    path = resolve_model(model).path
    cfg = TrainConfig(max_steps=steps, batch_size=batch_size, save_steps=10 * steps, max_seq_length=max_seq_length,
                      warmup_ratio=0.0)
    t0 = time.time()
    _, facts = train_encoder({"check": datasets.Dataset.from_dict(rows)}, path, path, out, cfg)
    s = time.time() - t0
    return {"device": facts.device, "steps": facts.global_step, "batch_size": batch_size, "s": round(s, 2),
            "steps_per_s": round(facts.global_step / s, 2), "train_loss": round(facts.train_loss, 4)}


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tiny", action="store_true", help="every part on the CPU at toy sizes (the test suite's run)")
    p.add_argument("--skip-rehearsal", action="store_true")
    p.add_argument("--rehearsal-scale", type=float, default=None, help="default 1.0 (--tiny: 0.0005)")
    p.add_argument("--budget-s", type=float, default=450, help="the whole run's time; the rehearsal gets the rest")
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road.embed import cuda_device_count
    from pipeline.road.precision import resolve_precision

    start = time.time()
    cuda = cuda_device_count()
    if not cuda and not args.tiny:
        print("gpu_check: no CUDA device is visible; run it on a GPU machine (or --tiny on the CPU)", file=sys.stderr)
        return 2
    tiny = args.tiny
    figures: dict = {"mode": "tiny-cpu" if tiny else "gpu", "torch": torch.__version__, "cuda_devices": cuda,
                     "device_names": [torch.cuda.get_device_name(i) for i in range(cuda)],
                     "auto_precision": resolve_precision(), "errors": {}}

    def run(name: str, fn) -> None:
        t0 = time.time()
        try:
            figures[name] = fn()
        except Exception as exc:  # a check records what failed and goes on with the other parts
            figures["errors"][name] = f"{type(exc).__name__}: {exc}"[:2000]
            traceback.print_exc()
        print(f"gpu_check: {name} in {time.time() - t0:.1f} s: {json.dumps(figures.get(name))}", file=sys.stderr,
              flush=True)

    texts = sample_texts(64 if tiny else 20_000)
    with tempfile.TemporaryDirectory(prefix="gistforge-gpu-check-") as tmp:
        work = Path(tmp)
        figures["encode"] = {}

        def encode(key: str, model: str) -> None:
            run(f"encode_{key}", lambda: part_encode(model, texts, work / f"cache-{key}", 16 if tiny else 256))
            figures["encode"][key] = figures.pop(f"encode_{key}", None)

        encode("minilm", BUNDLED_MODEL)
        big = str(bert_sized(work / "bge-base-sized", tiny))
        encode("bge_base_sized", big)
        run("faiss", lambda: part_faiss(2_000, 32, 200) if tiny else part_faiss(1_000_000, 768, 20_000))
        devices = ["cpu", "cpu"] if tiny else [f"cuda:{i}" for i in range(cuda)]
        if len(devices) > 1:
            run("multi_gpu_pool", lambda: part_pool(BUNDLED_MODEL, texts if tiny else texts * 3, work, devices,
                                                    16 if tiny else 256))
        else:
            figures["multi_gpu_pool"] = {"skipped": "one CUDA device visible"}
        batch = 4 if tiny else 32  # tiny: the toy BERT guided by itself; else MiniLM by itself
        run("finetune", lambda: part_finetune(big if tiny else BUNDLED_MODEL, sample_texts(20 * batch),
                                              work / "finetune", 20, batch, 32 if tiny else 128))
        if args.skip_rehearsal:
            figures["rehearsal"] = {"skipped": "--skip-rehearsal"}
        else:
            scale = args.rehearsal_scale or (0.0005 if tiny else 1.0)
            run("rehearsal", lambda: part_rehearsal(scale, args.budget_s - (time.time() - start)))
    figures["total_s"] = round(time.time() - start, 1)
    print(json.dumps(figures))
    return 1 if figures["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
