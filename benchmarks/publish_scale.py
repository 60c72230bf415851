"""Build and publish (local hub) a synthetic dataset of the full GIST size: 1.82M rows, realistic lengths.

Usage: python benchmarks/publish_scale.py [--rows 1820000] [--out DIR]

Rows stream through Arrow/Polars (no Python lists of dicts): ~330 MEDI-like tasks plus 11 MTEB-like
tasks, query ~60-200 chars, pos/neg ~100-1,500 chars. Ends with one JSON line:
`rows`, `build_s`, `publish_s`, `peak_rss_mb`, `shards`, `bytes`, and the blocking checks' time and peak RSS
(in a child process) beside the peak of reading every shard at once. Goal on 2 CPU cores: <= 5 min end to
end and <= 8 GB peak RSS.
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipeline.road.build import assemble, write_build  # noqa: E402
from pipeline.road.local_hub import LocalHub  # noqa: E402
from pipeline.schema import PL_SCHEMA  # noqa: E402

WORDS = np.array("the of and to in is was for on that with as by at from his her an be this are which or have "
                 "card payment account transfer movie review great terrible bank money query document passage "
                 "answer question model embedding training data label intent emotion tweet product".split())


def _texts(rng: np.random.Generator, n: int, lo: int, hi: int, pool: int = 50_000) -> pl.Series:
    """n distinct texts whose lengths are uniform in [lo, hi] characters (a shared pool plus a unique prefix)."""
    lengths = rng.integers(lo // 6, hi // 6, pool)
    base = [" ".join(rng.choice(WORDS, k)) for k in lengths]
    pick = rng.integers(0, pool, n)
    return pl.select(pl.concat_str([pl.int_range(n).cast(pl.String), pl.Series(base)[pick]], separator=" "))[:, 0]


def synthetic(rows: int, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    medi = int(rows * 1_435_000 / 1_820_000)
    tasks = np.r_[rng.integers(0, 330, medi), 330 + rng.integers(0, 11, rows - medi)]
    is_mteb = tasks >= 330
    frame = pl.DataFrame({"query": _texts(rng, rows, 60, 200), "pos": _texts(rng, rows, 100, 1500),
                          "neg": _texts(rng, rows, 100, 1500), "task": pl.Series(tasks), "mteb": pl.Series(is_mteb),
                          "pos_score": rng.random(rows, dtype=np.float32),
                          "neg_score": rng.random(rows, dtype=np.float32)})
    mteb = pl.col("mteb")
    instruct = pl.when(mteb).then(pl.lit("")).otherwise(pl.lit("Represent the document for retrieval: "))
    return frame.select(
        "query", "pos", "neg",
        task_name=pl.when(mteb).then(pl.format("MtebTask{}Classification", pl.col("task") - 330))
        .otherwise(pl.format("medi_task_{}", "task")),
        task_type=pl.when(mteb).then(pl.format("mteb_task{}", pl.col("task") - 330)).otherwise(pl.lit("medi")),
        query_instruct=pl.when(mteb).then(pl.lit("")).otherwise(pl.lit("Represent the question for retrieval: ")),
        pos_instruct=instruct, neg_instruct=instruct, symmetric=mteb,
        source=pl.when(mteb).then(pl.lit("mteb")).otherwise(pl.lit("medi")),
        query_label=pl.when(mteb).then(pl.format("l{}", pl.col("task") % 7)),
        neg_label=pl.when(mteb).then(pl.format("m{}", pl.col("task") % 5)),
        pos_score="pos_score", neg_score="neg_score",
    ).cast(PL_SCHEMA)


VERIFY = """
from pipeline.road.checks import verify_build
outcomes = verify_build(folder, excluded={}, accounts=[], test_keys=None)
result = {"passed": f"{sum(o.passed for o in outcomes)}/{len(outcomes)}"}
"""
READ_ALL = """
import polars as pl
result = {"rows": pl.read_parquet(sorted((folder / "data").glob("*.parquet"))).height}
"""


def _child(code: str, folder: Path) -> dict:
    """Run `code` on the build folder in a fresh process and report its own peak RSS.

    VmHWM, not ru_maxrss: Linux carries ru_maxrss over from the forking parent (this process, holding the
    whole table), which would hide the child's figure.
    """
    script = (f"import json, sys, time; sys.path.insert(0, {str(ROOT)!r}); from pathlib import Path\n"
              f"folder = Path({str(folder)!r}); t0 = time.time()\n{code}\n"
              "hwm = next(line for line in open('/proc/self/status') if line.startswith('VmHWM'))\n"
              "result.update(s=round(time.time() - t0, 1), peak_rss_mb=round(int(hwm.split()[1]) / 1024))\n"
              "print(json.dumps(result))")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rows", type=int, default=1_820_000)
    p.add_argument("--out", default=None)
    p.add_argument("--max-shard-mb", type=int, default=500)
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="gistforge-scale-"))
    t0 = time.time()
    df = synthetic(args.rows)
    gen_s = time.time() - t0

    t0 = time.time()
    table = assemble([df], seed=42)
    del df
    card = f"---\nlicense: other\ndataset_info:\n  splits:\n  - name: train\n    num_examples: {table.num_rows}\n---\n"
    digest = write_build(table, lambda size: f"{card}# synthetic, {size} bytes\n", out / "build",
                         args.max_shard_mb * 1024**2)
    build_s = time.time() - t0
    nbytes = table.nbytes()
    del table

    t0 = time.time()
    result = LocalHub(out / "hub").publish(out / "build", "bench/synthetic")
    publish_s = time.time() - t0
    shards = len(list((out / "build" / "data").glob("*.parquet")))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    verify = _child(VERIFY, out / "build")
    whole = _child(READ_ALL, out / "build")  # the peer: what reading every shard at once costs
    print(json.dumps({"rows": args.rows, "generate_s": round(gen_s, 1), "build_s": round(build_s, 1),
                      "publish_s": round(publish_s, 1), "total_s": round(gen_s + build_s + publish_s, 1),
                      "peak_rss_mb": round(peak), "verify_s": verify["s"], "checks_passed": verify["passed"],
                      "verify_peak_rss_mb": verify["peak_rss_mb"], "read_all_shards_peak_rss_mb": whole["peak_rss_mb"],
                      "shards": shards, "bytes": nbytes, "tag": result.tag,
                      "content_hash": digest[:12]}))
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
