"""The optional near-duplicate pass over MEDI (`decontamination.near_duplicate_threshold`), measured alone.

Usage: python benchmarks/near_duplicates.py [--rows 143500] [--tests 56052] [--block 65536]

MEDI-like rows from benchmarks/full_scale.py's generator (query ~100, pos/neg ~700 characters; a tenth of GIST's
1,435,000 rows by default) and as many MTEB test texts as the full profile's reference holds, a few planted as
paraphrases in MEDI. The pass is the library's (`decontaminate.near_duplicate_texts`, as `ingest_medi` runs it),
with the real `GuideEncoder` (embedding cache included) over full_scale's seeded StaticEmbedding guide, so the
figures are the pass's own cost: distinct texts, their encode, the blocked similarity search. Prints one JSON
line with seconds per phase, peak RSS, and the same scaled linearly to the full MEDI (both phases are linear in
MEDI's distinct texts); the guide's encode is the part a GPU and a real bge model change, see the note printed.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from full_scale import MEDI_ROWS, _texts, _vocabulary, static_guide  # noqa: E402

from pipeline.road.decontaminate import near_duplicate_texts  # noqa: E402
from pipeline.road.embed import GuideEncoder  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=MEDI_ROWS // 10)
    p.add_argument("--tests", type=int, default=56_052)
    p.add_argument("--block", type=int, default=65_536)
    p.add_argument("--threshold", type=float, default=0.95)
    args = p.parse_args()
    rng = np.random.default_rng(0)
    words = _vocabulary(rng, 30_000)
    tests = [f"test {t}" for t in _texts(rng, words, args.tests, 120)]
    pool = min(args.rows, 200_000)
    queries, bodies = _texts(rng, words, pool, 100), _texts(rng, words, pool, 700)
    n = args.rows
    medi = pl.DataFrame({"query": [f"{i} q {queries[j]}" for i, j in enumerate(rng.integers(0, pool, n))],
                         "pos": [f"{i} p {bodies[j]}" for i, j in enumerate(rng.integers(0, pool, n))],
                         "neg": [f"{i} n {bodies[j]}" for i, j in enumerate(rng.integers(0, pool, n))]})
    planted = 20  # near copies of test texts: one word changed
    medi = medi.with_columns(query=pl.when(pl.int_range(n) < planted)
                             .then(pl.Series([t.rsplit(" ", 1)[0] + " changed" for t in tests[:planted]]
                                             + [""] * (n - planted)))
                             .otherwise(pl.col("query")))

    with tempfile.TemporaryDirectory() as tmp:
        guide = GuideEncoder(str(static_guide(Path(tmp) / "guide")), None, Path(tmp) / "cache", batch_size=256)
        rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        t0 = time.time()
        texts = pl.concat([medi.get_column(c) for c in ("query", "pos", "neg")]).unique(maintain_order=True)
        distinct_s = time.time() - t0
        encode = {"s": 0.0}

        def vectors(batch: list[str]) -> np.ndarray:
            t = time.time()
            out = guide.vectors(batch)
            encode["s"] += time.time() - t
            return out

        t0 = time.time()
        near = near_duplicate_texts(texts, tests, vectors, args.threshold, block=args.block)
        pass_s = time.time() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    scale = MEDI_ROWS / n
    search_s = pass_s - encode["s"]
    print(json.dumps({
        "rows": n, "distinct_texts": texts.len(), "test_texts": len(tests), "threshold": args.threshold,
        "flagged": len(near), "planted_found": sum(q in near for q in medi["query"][:planted]),
        "distinct_s": round(distinct_s, 1), "encode_s": round(encode["s"], 1), "search_s": round(search_s, 1),
        "total_s": round(distinct_s + pass_s, 1), "peak_rss_mb": peak_mb,
        "rss_before_pass_mb": rss0 // 1024,
        "full_medi_estimate_s": {"encode": round(encode["s"] * scale), "search": round(search_s * scale),
                                 "total": round((distinct_s + pass_s) * scale)},
    }))


if __name__ == "__main__":
    main()
