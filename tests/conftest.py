"""Shared fixtures: tiny Hub caches and labelled files built in temp folders, offline; the embedded build, once.

Tiers: tests marked `slow` (a whole build, a subprocess, a browser, training) run in CI; `pytest -m "not slow"`
is the fast tier a developer runs (under a minute on 2 cores) and still touches every library module.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.pop("DAGSTER_HOME", None)  # builds record their runs under their own home, never the developer's
# where `openvino` is installed, the guide's converted graph is kept for the test runs, not in ~/.cache
OPENVINO_CACHE = Path(tempfile.gettempdir()) / f"gistforge-tests-openvino-{os.getuid()}"
os.environ["GISTFORGE_OPENVINO_CACHE"] = str(OPENVINO_CACHE)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BANKING_REV = "0fd18e25b25c072e09e0d92ab615fda904d66300"


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch):
    """No test sees another's (or the developer's) gistforge settings."""
    for key in [k for k in os.environ if k.startswith("GISTFORGE_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("GISTFORGE_OPENVINO_CACHE", str(OPENVINO_CACHE))


@pytest.fixture(scope="session")
def embedded_build(tmp_path_factory):
    """The README's first command (`gistforge build`, fine-tune included), run once per test session."""
    from gistforge.cli import build

    home = tmp_path_factory.mktemp("embedded-home")
    assert build(["build", "--home", str(home)]) == 0
    return home


def make_hub_repo(cache: Path, repo_id: str, revision: str, files: dict[str, str | bytes], ref: str = "main") -> Path:
    """A dataset repo in Hub-cache layout, as `snapshot_download` leaves it."""
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    snap = repo / "snapshots" / revision
    for name, content in files.items():
        path = snap / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content if isinstance(content, bytes) else content.encode())
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / ref).write_text(revision)
    return snap


def jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r) + "\n" for r in rows)


@pytest.fixture
def banking_like_rows() -> list[dict]:
    texts = {
        0: ["where is my card", "my card has not arrived", "card still not delivered", "when will the card come"],
        1: ["how do I top up", "top up with bank transfer", "can I add money by card", "topping up failed"],
        2: ["what is the exchange rate", "wrong exchange rate charged", "exchange rate for euros", "rate too high"],
    }
    names = {0: "card_arrival", 1: "top_up", 2: "exchange_rate"}
    return [{"text": t, "label": k, "label_text": names[k]} for k, ts in texts.items() for t in ts]


def clustered(n: int, labels: int, dim: int = 16, seed: int = 0, noise: float = 0.8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, labels, n)
    centers = rng.normal(size=(labels, dim))
    x = centers[y] + rng.normal(size=(n, dim)) * noise
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), y


def wait_for_text(path: Path, text: str, proc: subprocess.Popen, timeout_s: float = 300) -> None:
    """Until `text` appears in a subprocess's log file; fails if the process ends first or time runs out."""
    from tests.waiting import until

    until(repr(text), lambda: text in path.read_text(errors="replace"), timeout_s, proc=proc,
          log=lambda: path.read_text(errors="replace")[-3000:])
