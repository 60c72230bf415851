"""Publishing a build as an immutable, tagged version.

The local hub (the default, offline target) is a folder in the Hugging Face Hub cache layout
(`datasets--org--name/refs/<tag>`, `snapshots/<sha>/...`), so that with `HF_HUB_CACHE` pointing at it,
`snapshot_download(repo_id, repo_type="dataset", revision=tag)` + `load_dataset(path)` read a version
exactly as a downstream trainer reads one from the Hub.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from pipeline.build import read_build_hash


@dataclass(frozen=True)
class PublishResult:
    repo_id: str
    tag: str
    revision: str
    status: str  # "published" | "unchanged"
    location: str
    content_hash: str

    def load_snippet(self) -> str:
        return load_snippet(self.repo_id, self.tag, self.location)


def load_snippet(repo_id: str, tag: str, cache_dir: str | None) -> str:
    if cache_dir:
        return (
            "import os; os.environ['HF_HUB_OFFLINE'] = '1'\n"
            "from huggingface_hub import snapshot_download\nfrom datasets import load_dataset\n"
            f"path = snapshot_download({repo_id!r}, repo_type='dataset', revision={tag!r}, cache_dir={cache_dir!r})\n"
            "ds = load_dataset(path, split='train')"
        )
    return f"from datasets import load_dataset\nds = load_dataset({repo_id!r}, revision={tag!r}, split='train')"


def make_tag(content_hash: str, today: dt.date | None = None) -> str:
    """`YYYY.MM.DD-<first 8 hex of the content hash>`: sortable by date, unique by content."""
    return f"{(today or dt.date.today()):%Y.%m.%d}-{content_hash[:8]}"


def version_section(repo_id: str, tag: str, content_hash: str, cache_dir: str | None) -> str:
    return (f"\n## Version\n\nTag `{tag}`, content hash `{content_hash}`.\n\n"
            f"```python\n{load_snippet(repo_id, tag, cache_dir)}\n```\n")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(tmp, path)


class LocalHub:
    """A Hub-cache-layout folder holding every published version of each dataset repo."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / f"datasets--{repo_id.replace('/', '--')}"

    def tags(self, repo_id: str) -> dict[str, str]:
        refs = self.repo_dir(repo_id) / "refs"
        if not refs.is_dir():
            return {}
        return {p.name: p.read_text().strip() for p in sorted(refs.iterdir())
                if p.is_file() and not p.name.startswith(".") and p.name != "main"}

    def publish(self, build_dir: Path, repo_id: str, today: dt.date | None = None) -> PublishResult:
        content_hash = read_build_hash(build_dir)
        sha = content_hash[:40]
        repo = self.repo_dir(repo_id)
        for tag, rev in self.tags(repo_id).items():
            if rev == sha:
                _atomic_write(repo / "refs" / "main", sha)
                return PublishResult(repo_id, tag, sha, "unchanged", str(self.root), content_hash)
        tag = make_tag(content_hash, today)
        snap = repo / "snapshots" / sha
        if not snap.exists():  # a rerun after a crash between rename and ref reuses the snapshot
            snap.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=f".{sha}.", dir=snap.parent))
            try:
                shutil.copytree(build_dir, tmp, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".*"))
                card = (tmp / "README.md").read_text(encoding="utf-8")
                (tmp / "README.md").write_text(card + version_section(repo_id, tag, content_hash, str(self.root)),
                                               encoding="utf-8")
                os.replace(tmp, snap)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        _atomic_write(repo / "refs" / tag, sha)
        _atomic_write(repo / "refs" / "main", sha)
        return PublishResult(repo_id, tag, sha, "published", str(self.root), content_hash)
