"""Peak memory of reading MEDI's original `medi-data.json`: the old whole-file `json.loads` vs the `ijson`
streaming loader (`pipeline.road.sources.medi._medi_json`), on a synthetic file of `--rows` triplets.

Each method runs in a fresh child process (`ru_maxrss` of the waited-for child); a third child only imports
the same modules, so `*_over_imports_mb` is what reading the file itself costs. Prints one JSON line.

    python benchmarks/medi_json_memory.py [--rows 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
IMPORTS = "import polars as pl, ijson; from pipeline.road.sources import medi as sources; from pipeline.schema import MEDI_COLUMNS\n"
METHODS = {
    "imports": "",
    # the loader as it was before issue 23: the whole list parsed, then copied into column lists
    "json_loads": """
records = json.loads(Path(path).read_text(encoding="utf-8-sig"))
cols = {c: [] for c in MEDI_COLUMNS}
for rec in records:
    for key in ("query", "pos", "neg"):
        cols[f"{key}_instruct"].append(rec[key][0])
        cols[key].append(rec[key][1])
    cols["task_name"].append(str(rec.get("task_name", rec.get("task_id"))))
df = pl.DataFrame(cols, schema={c: pl.String for c in MEDI_COLUMNS})
""",
    "ijson_stream": "df = sources._medi_json(Path(path), 'bench')\n",
}


def write_medi(path: Path, rows: int, seed: int = 0) -> None:
    """A medi-data.json of `rows` triplets with MEDI-like lengths (short query, passage-length pos/neg)."""
    rng = random.Random(seed)
    words = [f"w{i}" for i in range(5000)]
    text = lambda n: " ".join(rng.choices(words, k=n))
    with open(path, "w", encoding="utf-8") as f:
        f.write("[")
        for i in range(rows):
            rec = {"query": ["Represent the question for retrieving documents:", text(10)],
                   "pos": ["Represent the document for retrieval:", text(60)],
                   "neg": ["Represent the document for retrieval:", text(60)], "task_name": f"task{i % 330}"}
            f.write(("," if i else "") + json.dumps(rec))
        f.write("]")


def measure(method: str, path: Path) -> dict:
    code = f"import json\nfrom pathlib import Path\n{IMPORTS}path = {str(path)!r}\n{METHODS[method]}"
    if method != "imports":
        code += "assert df.height > 0\n"
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    _, status, usage = os.wait4(proc.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{method} failed")
    return {"peak_rss_mb": round(usage.ru_maxrss / 1024), "wall_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "medi-data.json"
        write_medi(path, args.rows)
        size_mb = path.stat().st_size / 2**20
        got = {m: measure(m, path) for m in METHODS}
    base = got["imports"]["peak_rss_mb"]
    print(json.dumps({"rows": args.rows, "file_mb": round(size_mb), "imports_peak_rss_mb": base,
                      **{f"{m}_{k}": v for m in ("json_loads", "ijson_stream") for k, v in got[m].items()},
                      **{f"{m}_over_imports_mb": got[m]["peak_rss_mb"] - base for m in ("json_loads", "ijson_stream")},
                      "ratio_over_imports": round((got["json_loads"]["peak_rss_mb"] - base)
                                                  / max(1, got["ijson_stream"]["peak_rss_mb"] - base), 2)}))


if __name__ == "__main__":
    main()
