"""Build on the real data in ../shared/data through the Dagster CLI, then verify the published version.

Usage: python benchmarks/real_data_build.py [--data ../shared/data] [--home /tmp/gistforge-real]

Checks (the foundation issue's acceptance): every eligible Banking77 row yields a triplet, no negative
shares its query's label, no excluded task appears, and every source's row accounting adds up. Ends with
one JSON line of figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CONFIG = ROOT / "configs" / "shared-data.yaml"


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data"))
    p.add_argument("--home", default=None)
    args = p.parse_args()
    home = Path(args.home or tempfile.mkdtemp(prefix="gistforge-real-")).resolve()  # the CLI runs in ROOT
    env = {**os.environ, "HF_HUB_CACHE": str(Path(args.data) / "hf-hub-cache"), "HF_HUB_OFFLINE": "1",
           "GISTFORGE_HOME": str(home)}
    t0 = time.time()
    subprocess.run([sys.executable, "-m", "gistforge.cli", "build", "--config", str(CONFIG)],
                   cwd=ROOT, env=env, check=True)
    build_s = time.time() - t0

    os.environ.update(env)
    from datasets import load_dataset
    from huggingface_hub import snapshot_download
    from pipeline.profiles import load_config
    from pipeline.road.build import last_build
    from pipeline.road.ingest import SplitReport
    from pipeline.road.publish import last_published
    from pipeline.workspace import Workspace

    cfg = load_config(CONFIG)
    ws = Workspace(home, cfg.profile)
    published = last_published(ws)  # what this build published (or found unchanged), as the CLI reports it
    repo, tag = published.repo_id, published.tag
    path = snapshot_download(repo, repo_type="dataset", revision=tag, cache_dir=published.location.local_hub,
                             local_files_only=not published.location.is_hub)
    ds = load_dataset(path, split="train").to_polars()

    accounts = last_build(ws).accounts  # every source's account at every stage, as the build checked them
    balanced = all(a.balanced for a in accounts)
    eligible = ws.load_report(ws.split("Banking77Classification"), SplitReport).account.rows_out
    import polars as pl

    banking = ds.filter(pl.col("task_name") == "Banking77Classification", pl.col("source") == "mteb")
    mined = ds.filter(pl.col("source") != "medi")
    same_label = int((mined["query_label"] == mined["neg_label"]).sum())
    excluded = int((ds["task_name"] == "AmazonPolarityClassification").sum())
    non_mteb_tagged = int(ds.filter(pl.col("source") != "mteb")["task_type"].str.starts_with("mteb_").sum())
    figures = {
        "tag": tag, "status": published.status, "location": str(published.location), "rows": ds.height,
        "build_s": round(build_s, 1),
        "banking77_eligible": eligible, "banking77_triplets": banking.height,
        "banking77_coverage": round(banking.height / eligible, 4),
        "imdb_triplets": int((ds["task_name"] == "ImdbClassification").sum()),
        "medi_rows": int((ds["source"] == "medi").sum()),
        "test_leaks_removed": {a.source: a.drops.get("test_leak", 0) for a in accounts},
        "same_label_negatives": same_label, "excluded_task_rows": excluded,
        "non_mteb_rows_tagged_mteb": non_mteb_tagged, "accounts_balanced": balanced,
        "accounts": {a.source: {"in": a.rows_in, "out": a.rows_out, "drops": a.drops} for a in accounts},
    }
    ok = banking.height == eligible and same_label == 0 and excluded == 0 and balanced and non_mteb_tagged == 0
    print(json.dumps({**figures, "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
