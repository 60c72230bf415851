"""Wall time and peak RSS of the README's first command (the embedded default), with and without the fine-tune.

Each build runs `gistforge build` in a fresh child process and a fresh home, so the peak is that child's
own (`ru_maxrss` of the waited-for child). Prints one line per run, then one JSON line.

    python benchmarks/embedded_rss.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time


def run(args: list[str]) -> dict:
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "GISTFORGE_HOME": home}
        env.pop("DAGSTER_HOME", None)
        start = time.perf_counter()
        proc = subprocess.Popen([sys.executable, "-m", "gistforge.cli", "build", *args], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"gistforge build {' '.join(args)} failed")
    return {"wall_s": round(wall, 1), "peak_rss_mb": round(usage.ru_maxrss / 1024)}


def main() -> None:
    full = run([])
    print(f"gistforge build (with fine-tune + mteb evaluation): {full}", flush=True)
    data = run(["--no-finetune"])
    print(f"gistforge build --no-finetune: {data}", flush=True)
    print(json.dumps({"full_wall_s": full["wall_s"], "full_peak_rss_mb": full["peak_rss_mb"],
                      "no_finetune_wall_s": data["wall_s"], "no_finetune_peak_rss_mb": data["peak_rss_mb"],
                      "rss_ratio_full_vs_no_finetune": round(full["peak_rss_mb"] / data["peak_rss_mb"], 2)}))


if __name__ == "__main__":
    main()
