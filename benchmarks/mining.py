"""Mining benchmark: gistforge vs sentence-transformers' mine_hard_negatives vs GIST's reference recipe.

Usage: python benchmarks/mining.py [DATA] [--precision auto|fp32|bf16|fp16] [--skip-gist] [--skip-search | --search-only] [--search-sizes 200000,1000000] [--nprobe N]

DATA defaults to ../shared/data (Banking77 train as a Hub cache). Every method runs in its own subprocess
(so peak RSS is its own) on the same texts with the same guide model (the bundled all-MiniLM-L6-v2):

* gistforge, at the precision `guide_precision: auto` chooses here (`--precision` to force one) and at fp32:
  unique texts encoded once into a fresh embedding cache by the pipeline's `GuideEncoder`, the agreement of a
  reduced precision with fp32 measured on its fixed 256-text sample (as every mining step does), then
  `mine_triplets` (hard negatives, relative margin 0.05); `warm`: the same again with other mining parameters,
  reading the cache. Agreement over all texts: each text's 10 nearest neighbours among all of them, reduced
  precision against fp32, and the mean cosine between each text's two vectors. Where the chosen bf16 runs in
  OpenVINO (`openvino` installed), the same bf16 under torch.autocast too (`torch_autocast_bf16`). OpenVINO
  converts the guide once per machine and keeps the graph; the run converts it first, in its own process
  (`openvino_convert_s`), so the timed parts read it as every build after the first does
  (`ratio_vs_sentence_transformers_with_conversion` counts the conversion in, as a machine's first step pays it).
* sentence-transformers: `mine_hard_negatives(use_faiss=True, num_negatives=1, relative_margin=0.05)`,
  anchor = each text, positive = a random same-label text; at its default fp32, and again inside
  `torch.autocast` at the chosen reduced precision (the only way it takes one).
* GIST's recipe: the N x N similarity matrix, positive sampled by softmax(sim / 0.05) over the top-100
  same-label texts, negative a uniformly random other-label text.
* IVF recall on real embeddings: Banking77's vectors from the cold run's cache, IVF forced (~sqrt(N) lists),
  recall@10 against exact at nprobe 4, 8, 16, 32.
* search stage alone: synthetic normalised 768-d vectors in 5 labels, clustered like real embeddings (see
  `synthetic_vectors`), negatives' search (exact at 200k, IVF at 1M with recall@10 against exact on a sample).

Ends with one JSON line holding every figure.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load(data: Path):
    from pipeline.config import TaskSource
    from pipeline.road.clean import clean_labelled
    from pipeline.road.sources import load_task_split

    df, _ = clean_labelled(load_task_split(TaskSource(name="Banking77Classification")), "bench")
    return df["text"].to_list(), df["label"].cast(int).to_numpy()


def _model():
    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road.embed import load_encoder
    from pipeline.road.model_ref import resolve_model

    ref = resolve_model(BUNDLED_MODEL)
    return ref, load_encoder(ref, "cpu", precision="float32")  # fp32 weights: the peers' default


def _cache(root: Path, ref, model, precision: str = "auto"):
    """The embedding cache under the key the pipeline itself would use for this model on the CPU."""
    from pipeline.road.precision import resolve_precision
    from pipeline.road.embedding_cache import EmbeddingCache, cache_key

    return EmbeddingCache(root, cache_key(ref, model.max_seq_length, resolve_precision(precision, "cpu")))


def _result(t0: float, **kw) -> dict:
    return {"s": round(time.time() - t0, 2), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            **kw}


def part_gistforge(data: Path, cache: Path, warm: bool, precision: str = "auto") -> dict:
    """What a mining step does (model loading aside): encode through the cache, measure agreement, mine.

    `precision` `bf16-torch`: bf16 under torch.autocast even where OpenVINO is installed (the comparison)."""
    from pipeline.config import MiningConfig
    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road import openvino_guide
    from pipeline.road.embed import GuideEncoder
    from pipeline.road.miner import mine_triplets

    if precision == "bf16-torch":
        openvino_guide.openvino_available = lambda: False
        precision = "bf16"
    texts, labels = _load(data)
    guide = GuideEncoder(BUNDLED_MODEL, None, cache, batch_size=64, device="cpu", precision=precision)
    t0 = time.time()
    emb, stats = guide.embed(texts)
    encode_s = time.time() - t0
    t1 = time.time()
    agreement = guide.agreement(texts)
    agreement_s = time.time() - t1
    cfg = MiningConfig(negative_strategy="topk_random" if warm else "hard", margin=0.05)
    t2 = time.time()
    r = mine_triplets(emb, labels, cfg, seed=42, task="Banking77Classification")
    mine_s = time.time() - t2
    return _result(t0, precision=guide.precision, encode_s=round(encode_s, 2), agreement_s=round(agreement_s, 2),
                   mine_s=round(mine_s, 2), texts_encoded=stats.encoded,
                   encode_texts_per_s=round(stats.encoded / encode_s, 1) if stats.encoded else None,
                   agreement=agreement.model_dump() if agreement else None,
                   triplets=int(len(r.query)), eligible=len(texts),
                   same_label_negatives=int((labels[r.query] == labels[r.neg]).sum()))


def part_convert() -> dict:
    """OpenVINO's conversion of the guide, as the first step on a machine pays it once: the graph is kept
    (`GISTFORGE_OPENVINO_CACHE`, here inside the run's temporary folder) for every later process."""
    from pipeline.road.openvino_guide import ir_folder, load_graph

    ref, model = _model()
    folder = ir_folder(ref.name, ref.revision)
    t0 = time.time()
    load_graph(model[0], folder, {"name": ref.name, "revision": ref.revision})
    return _result(t0, kept=(folder / "model.xml").is_file())


def part_agreement(data: Path, cache: Path, precision: str) -> dict:
    """Agreement of the reduced-precision vectors with fp32 over all texts, read from the two cold runs' caches."""
    from pipeline.road.agreement import measure_agreement
    from pipeline.road.embed import embed_texts
    from pipeline.road.precision import is_reduced

    texts, _ = _load(data)
    ref, model = _model()
    label = _label(precision)
    vectors = {}
    for name, setting in (("reduced", precision), ("fp32", "fp32")):
        vectors[name], stats = embed_texts(model, texts, _cache(cache, ref, model, setting), 64)
        assert stats.encoded == 0, f"{name}: every vector should come from the cold run's cache"
    if not is_reduced(label):
        return {"top10_overlap": 1.0, "mean_cosine": 1.0, "min_cosine": 1.0, "texts": len(set(texts))}
    uniq = np.unique(texts, return_index=True)[1]  # each text once, as the sample-based measure counts them
    a = measure_agreement(vectors["reduced"][uniq], vectors["fp32"][uniq], label)
    return {"top10_overlap": a.top10_overlap, "mean_cosine": a.mean_cosine, "min_cosine": a.min_cosine,
            "texts": a.sample}


def _label(precision: str) -> str:
    from pipeline.road.precision import resolve_precision

    return resolve_precision(precision, "cpu")


def part_sentence_transformers(data: Path, autocast: str | None = None) -> dict:
    """`autocast`: a precision label (e.g. bfloat16-autocast) to run the whole call under torch.autocast."""
    import contextlib

    import torch
    from datasets import Dataset
    from sentence_transformers.util import mine_hard_negatives

    texts, labels = _load(data)
    _, model = _model()
    rng = np.random.default_rng(0)
    by_label = {lab: np.flatnonzero(labels == lab) for lab in np.unique(labels)}
    pos = [texts[rng.choice(by_label[lab][by_label[lab] != i])] for i, lab in enumerate(labels)]
    dtype = torch.bfloat16 if autocast and autocast.startswith("bfloat16") else torch.float16
    t0 = time.time()
    with torch.autocast("cpu", dtype=dtype) if autocast else contextlib.nullcontext():
        out = mine_hard_negatives(Dataset.from_dict({"anchor": texts, "positive": pos}), model, num_negatives=1,
                                  relative_margin=0.05, use_faiss=True, verbose=False, batch_size=64)
    label_of = dict(zip(texts, labels))
    same = sum(label_of.get(a) == label_of.get(n) for a, n in zip(out["anchor"], out["negative"]))
    encoded = len(set(texts)) + len(set(pos))  # it encodes the anchors and the corpus (positives) separately
    return _result(t0, triplets=len(out), eligible=len(texts), same_label_negatives=int(same), texts_encoded=encoded)


def part_gist(data: Path) -> dict:
    texts, labels = _load(data)
    _, model = _model()
    t0 = time.time()
    emb = model.encode(texts, batch_size=64, normalize_embeddings=True, convert_to_numpy=True)
    sim = emb @ emb.T  # GIST's script: the full N x N matrix
    rng = np.random.default_rng(0)
    n = len(texts)
    pos, neg = np.empty(n, int), np.empty(n, int)
    for i in range(n):
        same = np.flatnonzero(labels == labels[i])
        same = same[same != i]
        top = same[np.argsort(-sim[i, same])[:100]]
        p = np.exp(sim[i, top] / 0.05)
        pos[i] = rng.choice(top, p=p / p.sum())
        neg[i] = rng.choice(np.flatnonzero(labels != labels[i]))
    return _result(t0, triplets=n, eligible=n, same_label_negatives=int((labels == labels[neg]).sum()), texts_encoded=n)


def synthetic_vectors(n: int, labels: int = 5, dim: int = 768, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Normalised vectors shaped like a classification task's embeddings, label-sorted.

    ~sqrt(n)/labels topics; each topic holds one sub-cluster per label (so a text's nearest other-label
    neighbours are the same topic's other labels, as with fine-grained intents), and each vector is its
    sub-cluster's centre plus noise. Uniform random vectors would be useless here: in 768-d they have no
    near neighbours at all (every similarity ~0), which makes any approximate index's recall meaningless.
    """
    rng = np.random.default_rng(seed)

    def unit(m: np.ndarray) -> np.ndarray:
        return m / np.linalg.norm(m, axis=-1, keepdims=True)

    topics = unit(rng.standard_normal((max(1, int(np.sqrt(n)) // labels), dim), dtype=np.float32))
    subs = unit(topics[:, None, :] + 0.6 * unit(rng.standard_normal((len(topics), labels, dim), dtype=np.float32)))
    y = np.sort(rng.integers(0, labels, n))
    topic = rng.integers(0, len(topics), n)
    x = np.empty((n, dim), dtype=np.float32)
    for s in range(0, n, 100_000):  # in chunks: one extra block of memory, not a second copy
        e = min(n, s + 100_000)
        block = 0.6 * unit(rng.standard_normal((e - s, dim), dtype=np.float32)) + subs[topic[s:e], y[s:e]]
        x[s:e] = unit(block)
    return x, y


def part_search(n: int, nprobe: int | None = None) -> dict:
    from pipeline.config import MiningConfig
    from pipeline.road.search import OtherLabelSearch

    cfg = MiningConfig(**({"ivf_nprobe": nprobe} if nprobe else {}))
    x, labels = synthetic_vectors(n)
    rng = np.random.default_rng(1)
    bounds = np.flatnonzero(np.r_[True, labels[1:] != labels[:-1], True])
    t0 = time.time()
    s = OtherLabelSearch(x, approx_above=cfg.approx_above, nlist=cfg.ivf_nlist, nprobe=cfg.ivf_nprobe, batch=cfg.query_batch)
    recalls = []
    for a, b in zip(bounds[:-1], bounds[1:]):
        s.search(x[a:b], int(a), int(b), 10)
        if s.approximate:
            recalls.append(s.recall_at(x[a:b], int(a), int(b), 10, 200, rng))
        print(f"search {n}: label {len(recalls) or a} done at {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    return _result(t0, n=n, approximate=s.approximate, nprobe=cfg.ivf_nprobe if s.approximate else None,
                   recall_at_10=round(float(np.mean(recalls)), 4) if recalls else 1.0)


def part_real_recall(data: Path, cache: Path, precision: str = "auto") -> dict:
    """Recall@10 of the IVF negatives' search on real guide embeddings (Banking77, read from the cold run's cache).

    Banking77 is far below `approx_above`, so the IVF is forced here: ~sqrt(N) lists, as at full scale.
    """
    from pipeline.road.embed import embed_texts
    from pipeline.road.search import OtherLabelSearch

    texts, labels = _load(data)
    ref, model = _model()
    emb, stats = embed_texts(model, texts, _cache(cache, ref, model, precision), 64)
    order = np.argsort(labels, kind="stable")
    x, y = emb[order], labels[order]
    bounds = np.flatnonzero(np.r_[True, y[1:] != y[:-1], True])
    recall = {}
    for nprobe in (4, 8, 16, 32):
        s = OtherLabelSearch(x, approx_above=0, nlist=None, nprobe=nprobe, batch=4096)
        rng = np.random.default_rng(1)
        r = [s.recall_at(x[a:b], int(a), int(b), 10, 50, rng) for a, b in zip(bounds[:-1], bounds[1:])]
        recall[str(nprobe)] = round(float(np.mean(r)), 4)
    return {"n": len(x), "nlist": s.lists, "texts_encoded": stats.encoded, "recall_at_10_by_nprobe": recall}


def _part(data: str, *part: str) -> dict:
    """One method in its own process, so that its peak RSS is its own."""
    env = {**os.environ, "HF_HUB_CACHE": str(Path(data) / "hf-hub-cache"), "HF_HUB_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}  # read by huggingface_hub at import: set before the child starts
    out = subprocess.run([sys.executable, __file__, data, "--part", *part], capture_output=True, text=True, cwd=ROOT,
                         env=env)
    if out.returncode:
        sys.stderr.write(out.stderr[-4000:])
        raise SystemExit(f"benchmark part {part} failed")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"part {' '.join(part[:1] + part[2:] if part[0] in ('gistforge', 'agreement') else part)}: {json.dumps(result)}",
          file=sys.stderr, flush=True)  # each part as it ends: a long run is never all-or-nothing
    return result


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("data", nargs="?", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--part", nargs="*")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="gistforge's guide_precision (default: auto, what a build picks on this machine)")
    p.add_argument("--skip-search", action="store_true")
    p.add_argument("--skip-gist", action="store_true", help="leave out GIST's N x N reference recipe")
    p.add_argument("--search-sizes", default="200000,1000000")
    p.add_argument("--nprobe", type=int, default=None, help="IVF lists probed (default: MiningConfig's)")
    p.add_argument("--search-only", action="store_true", help="only the search stage on synthetic vectors")
    args = p.parse_args()
    if args.part:
        name, rest = args.part[0], args.part[1:]
        fn = {"gistforge": lambda: part_gistforge(Path(args.data), Path(rest[0]), rest[1] == "warm", rest[2]),
              "agreement": lambda: part_agreement(Path(args.data), Path(rest[0]), rest[1]),
              "recall": lambda: part_real_recall(Path(args.data), Path(rest[0]), rest[1]),
              "convert": part_convert,
              "st": lambda: part_sentence_transformers(Path(args.data), rest[0] if rest else None),
              "gist": lambda: part_gist(Path(args.data)),
              "search": lambda: part_search(int(rest[0]), int(rest[1]) if len(rest) > 1 else None)}[name]
        print(json.dumps(fn()))
        return
    figures: dict = {}
    if not args.search_only:
        label = _label(args.precision)
        with tempfile.TemporaryDirectory() as cache:
            # a fresh place for OpenVINO's converted graph: converted once here, read by every part after
            os.environ["GISTFORGE_OPENVINO_CACHE"] = str(Path(cache) / "openvino")
            convert = _part(args.data, "convert") if label.endswith("-openvino") else None
            cold = _part(args.data, "gistforge", cache, "cold", args.precision)
            warm = _part(args.data, "gistforge", cache, "warm", args.precision)
            real = _part(args.data, "recall", cache, args.precision)
            fp32 = _part(args.data, "gistforge", cache, "cold", "fp32")
            # where OpenVINO runs the chosen bf16, the same bf16 under torch.autocast, for comparison
            torch_bf16 = (_part(args.data, "gistforge", cache, "cold", "bf16-torch")
                          if label.endswith("-openvino") else None)
            agreement = _part(args.data, "agreement", cache, args.precision)
        st = _part(args.data, "st")
        # sentence-transformers takes a reduced precision only as torch.autocast around its call
        st_label = label.replace("-openvino", "-autocast")
        st_autocast = _part(args.data, "st", st_label) if st_label.endswith("-autocast") else None
        gist = None if args.skip_gist else _part(args.data, "gist")
        figures.update({
            "precision": cold["precision"],
            "gistforge_s": cold["s"], "sentence_transformers_s": st["s"],
            "ratio_vs_sentence_transformers": round(cold["s"] / st["s"], 3),
            "coverage": round(cold["triplets"] / cold["eligible"], 4),
            "same_label_negatives": cold["same_label_negatives"],
            "encode_texts_per_s": cold["encode_texts_per_s"],
            "agreement": {"top10_overlap": agreement["top10_overlap"], "mean_cosine": agreement["mean_cosine"],
                          "min_cosine": agreement["min_cosine"], "texts": agreement["texts"],
                          "sample_256": cold["agreement"]},
            "fp32": {"gistforge_s": fp32["s"], "encode_s": fp32["encode_s"],
                     "encode_texts_per_s": fp32["encode_texts_per_s"],
                     "ratio_vs_sentence_transformers": round(fp32["s"] / st["s"], 3),
                     "coverage": round(fp32["triplets"] / fp32["eligible"], 4),
                     "same_label_negatives": fp32["same_label_negatives"]},
            "speedup_vs_fp32": round(fp32["s"] / cold["s"], 3),
            **({"openvino_convert_s": convert["s"],
                "ratio_vs_sentence_transformers_with_conversion": round((cold["s"] + convert["s"]) / st["s"], 3)}
               if convert else {}),
            **({"torch_autocast_bf16": {
                "gistforge_s": torch_bf16["s"], "encode_s": torch_bf16["encode_s"],
                "encode_texts_per_s": torch_bf16["encode_texts_per_s"],
                "ratio_vs_sentence_transformers": round(torch_bf16["s"] / st["s"], 3),
                "sample_256": torch_bf16["agreement"], "same_label_negatives": torch_bf16["same_label_negatives"]}}
               if torch_bf16 else {}),
            **({"sentence_transformers_autocast_s": st_autocast["s"],
                "ratio_vs_sentence_transformers_autocast": round(cold["s"] / st_autocast["s"], 3),
                "sentence_transformers_autocast_same_label_negative_fraction":
                    round(st_autocast["same_label_negatives"] / max(st_autocast["triplets"], 1), 4)}
               if st_autocast else {}),
            "sentence_transformers_coverage": round(st["triplets"] / st["eligible"], 4),
            "same_label_negative_fraction": round(cold["same_label_negatives"] / max(cold["triplets"], 1), 4),
            "sentence_transformers_same_label_negative_fraction": round(st["same_label_negatives"] / max(st["triplets"], 1), 4),
            "encode_s": cold["encode_s"], "agreement_s": cold["agreement_s"], "mine_s": cold["mine_s"],
            "beyond_encode_fraction": round((cold["s"] - cold["encode_s"]) / cold["encode_s"], 4),
            "warm_s": warm["s"], "warm_texts_encoded": warm["texts_encoded"],
            "warm_fraction_of_cold": round(warm["s"] / cold["s"], 4),
            "real_ivf_recall_at_10": real["recall_at_10_by_nprobe"], "real_ivf_nlist": real["nlist"],
            "texts_encoded": {"gistforge": cold["texts_encoded"], "sentence_transformers": st["texts_encoded"]},
            "peak_rss_mb": {"gistforge": cold["peak_rss_mb"], "sentence_transformers": st["peak_rss_mb"]},
        })
        if gist is not None:
            figures.update({"gist_reference_s": gist["s"],
                            "gist_same_label_negative_fraction": round(gist["same_label_negatives"] / gist["triplets"], 4)})
            figures["texts_encoded"]["gist_reference"] = gist["texts_encoded"]
            figures["peak_rss_mb"]["gist_reference"] = gist["peak_rss_mb"]
    if not args.skip_search:
        for n in (int(v) for v in args.search_sizes.split(",")):
            r = _part(args.data, "search", str(n), *([str(args.nprobe)] if args.nprobe else []))
            key = "1m" if n >= 1_000_000 else f"{n // 1000}k"
            figures[f"search_{key}_s"] = r["s"]
            figures[f"search_{key}_peak_rss_mb"] = r["peak_rss_mb"]
            if r["approximate"]:
                figures[f"recall_at_10_{key}"], figures[f"nprobe_{key}"] = r["recall_at_10"], r["nprobe"]
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
