"""Regenerate the embedded sample shipped in `pipeline/sample/` from public data.

Usage: python scripts/make_sample.py ../shared/data /path/to/unzipped/chatterbot_corpus-1.3.3-wheel

The sample is small on purpose (the README's first command must finish in minutes on 2 CPU cores), and
deterministic (fixed seed), so re-running this script reproduces the committed files byte for byte.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1] / "pipeline" / "sample"
CACHE = ROOT / "hf-hub-cache"


def _sample_jsonl(src: Path, dst: Path, per_label: int, labels: int | None, seed: int) -> None:
    rows = [json.loads(line) for line in src.read_text(encoding="utf-8").splitlines() if line.strip()]
    by_label: dict[int, list[dict]] = defaultdict(list)
    for row in rows:
        by_label[row["label"]].append(row)
    keep = sorted(by_label)[:labels] if labels else sorted(by_label)
    rng = random.Random(seed)
    out = []
    for label in keep:
        out.extend(rng.sample(by_label[label], min(per_label, len(by_label[label]))))
    rng.shuffle(out)
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in out), encoding="utf-8")


def _copy_repo(shared: Path, repo: str, rev: str, splits: dict[str, tuple[int, int | None]]) -> None:
    folder = f"datasets--{repo.replace('/', '--')}"
    src = shared / "hf-hub-cache" / folder / "snapshots" / rev
    dst = CACHE / folder / "snapshots" / rev
    for split, (per_label, labels) in splits.items():
        _sample_jsonl(src / f"{split}.jsonl", dst / f"{split}.jsonl", per_label, labels, seed=17)
    (CACHE / folder / "refs").mkdir(parents=True, exist_ok=True)
    (CACHE / folder / "refs" / "main").write_text(rev)


def _chatterbot(wheel_dir: Path) -> None:
    categories = ["ai", "computers", "emotion", "food", "history", "literature", "money", "movies",
                  "politics", "psychology", "science", "sports"]
    rows = []
    for cat in categories:
        data = yaml.safe_load((wheel_dir / "chatterbot_corpus/data/english" / f"{cat}.yml").read_text())
        seen = set()
        for conv in data["conversations"]:
            text = str(conv[0]).strip()
            if text and text not in seen:
                seen.add(text)
                rows.append({"utterance": text, "topic": cat})
            if len(seen) >= 12:
                break
    random.Random(17).shuffle(rows)
    (ROOT / "chatterbot_topics.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def main() -> None:
    shared, wheel_dir = Path(sys.argv[1]), Path(sys.argv[2])
    _copy_repo(shared, "mteb/banking77", "0fd18e25b25c072e09e0d92ab615fda904d66300",
               {"train": (10, 16), "test": (4, 16)})
    _copy_repo(shared, "mteb/imdb", "3d86128a09e091d6018b6d26cad27f2739fc2db7",
               {"train": (60, None), "test": (20, None)})
    medi = "datasets--avsolatorio--medi-data"
    src = shared / "hf-hub-cache" / medi
    shutil.copytree(src, CACHE / medi, dirs_exist_ok=True)
    _chatterbot(wheel_dir)


if __name__ == "__main__":
    main()
