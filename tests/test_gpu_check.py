"""The GPU check script runs end to end in its tiny CPU mode, so it is ready when a CUDA machine is at hand."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_gpu_check_runs_every_part_in_tiny_mode():
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--tiny"], capture_output=True,
                         text=True, cwd=ROOT, timeout=900)
    assert out.returncode == 0, out.stderr[-4000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["mode"] == "tiny-cpu" and r["errors"] == {}
    for key in ("minilm", "bge_base_sized"):
        enc = r["encode"][key]
        assert enc["texts"] == 64 and enc["tokens"] > enc["texts"] and enc["texts_per_s"] > 0
        assert enc["precision"] == r["auto_precision"]
    assert r["faiss"]["queries_per_s"] > 0 and r["faiss"]["self_found"] == 1.0
    assert r["multi_gpu_pool"]["devices"] == ["cpu", "cpu"] and r["multi_gpu_pool"]["texts"] == 64
    assert r["finetune"]["steps"] == 20 and r["finetune"]["steps_per_s"] > 0
    assert r["rehearsal"]["rows"] > 0 and r["rehearsal"]["total_s"] > 0


def test_without_cuda_the_full_mode_refuses_at_once():
    if __import__("torch").cuda.is_available():
        pytest.skip("a CUDA device is visible: the full mode would run")
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py")], capture_output=True, text=True,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 2 and "no CUDA device" in out.stderr and out.stdout == ""
