"""The local hub: a folder in the Hugging Face Hub cache layout holding every published version.

`datasets--org--name/refs/<tag>` and `snapshots/<sha>/...`, so that
`snapshot_download(repo_id, repo_type="dataset", revision=tag, cache_dir=root)` + `load_dataset(path)` read
a version exactly as a downstream trainer reads one from the Hub, offline.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from contextlib import AbstractContextManager
from pathlib import Path

import polars as pl

from pipeline.common import atomic, faults, locks
from pipeline.road.build import content_hash as folder_hash
from pipeline.road.build import read_build_hash
from pipeline.road.publish import Location, PublishResult
from pipeline.road.versioning import (MANIFEST, ROW_HASHES, Manifest, file_sizes, is_tag, make_tag, stage_version,
                                      verify_files)

log = logging.getLogger(__name__)


class LocalHub:
    """A Hub-cache-layout folder holding every published version of each dataset repo."""

    def __init__(self, root: Path):
        self.root = Path(root)
        self.location = Location(local_hub=str(self.root))

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / f"datasets--{repo_id.replace('/', '--')}"

    def tags(self, repo_id: str) -> dict[str, str]:
        refs = self.repo_dir(repo_id) / "refs"
        if not refs.is_dir():
            return {}
        return {p.name: p.read_text().strip() for p in sorted(refs.iterdir())
                if p.is_file() and is_tag(p.name)}

    def _snapshot(self, repo_id: str, rev: str) -> Path:
        return self.repo_dir(repo_id) / "snapshots" / rev

    def lock(self, repo_id: str) -> AbstractContextManager[None]:
        """One publisher of a repo at a time, across processes and homes sharing this hub (in the Hub cache's
        own `.locks/` folder)."""
        return locks.exclusive(self.root / ".locks" / f"gistforge-{self.repo_dir(repo_id).name}.lock",
                               f"{repo_id} in {self.root}")

    def publish(self, build_dir: Path, repo_id: str, today: dt.date | None = None) -> PublishResult:
        with self.lock(repo_id):
            return self._publish(build_dir, repo_id, today)

    def _publish(self, build_dir: Path, repo_id: str, today: dt.date | None) -> PublishResult:
        content_hash = read_build_hash(build_dir)
        sha = content_hash[:40]
        repo = self.repo_dir(repo_id)
        tags = self.tags(repo_id)
        for tag, rev in tags.items():
            if rev == sha:
                self._finish_main(repo_id, sha)
                return PublishResult(repo_id=repo_id, tag=tag, revision=sha, status="unchanged",
                                     location=self.location, content_hash=content_hash)
        main = repo / "refs" / "main"
        prev_rev = main.read_text().strip() if main.exists() else None
        previous_tag = next((t for t, r in tags.items() if r == prev_rev), None)
        prev_hashes = self._snapshot(repo_id, prev_rev) / ROW_HASHES if prev_rev else None
        previous = pl.read_parquet(prev_hashes) if prev_hashes and prev_hashes.exists() else None
        snap = self._snapshot(repo_id, sha)
        if snap.exists():  # a rerun after a crash between the snapshot rename and the ref: reuse it
            manifest = Manifest.model_validate_json((snap / MANIFEST).read_text())
            tag, diff, previous_tag = manifest.tag, manifest.diff, manifest.previous_tag
        else:
            tag = make_tag(content_hash, today)
            with atomic.atomic_dir(snap) as tmp:
                diff = stage_version(build_dir, tmp, repo_id, tag, content_hash, True, previous, previous_tag)
        manifest = Manifest.model_validate_json((snap / MANIFEST).read_text())
        verify_files(manifest.files, file_sizes(snap), f"{repo_id}@{tag} in {self.root}")
        faults.point("publish")
        # The version becomes visible only here: the tag ref first, then main.
        atomic.write_text(repo / "refs" / tag, sha)
        atomic.write_text(main, sha)
        log.info("published %s@%s to %s", repo_id, tag, self.root)
        return PublishResult(repo_id=repo_id, tag=tag, revision=sha, status="published", location=self.location,
                             content_hash=content_hash, diff=diff, previous_tag=previous_tag)

    def _finish_main(self, repo_id: str, sha: str) -> None:
        """An unchanged build moves `main` only to finish its own publish (killed after the tag ref, before
        `main`): when `main` is unset or still at the version this one was made on top of. `main` never goes
        back to an older version, even when a build reproduces one."""
        main = self.repo_dir(repo_id) / "refs" / "main"
        current = main.read_text().strip() if main.exists() else None
        if current == sha:
            return
        made_on = Manifest.model_validate_json((self._snapshot(repo_id, sha) / MANIFEST).read_text()).previous_tag
        if current is None or (made_on is not None and self.tags(repo_id).get(made_on) == current):
            atomic.write_text(main, sha)

    def latest(self, repo_id: str) -> str | None:
        main = self.repo_dir(repo_id) / "refs" / "main"
        if not main.exists():
            return None
        sha = main.read_text().strip()
        return next((t for t, r in sorted(self.tags(repo_id).items(), reverse=True) if r == sha), None)


    def publish_model(self, folder: Path, repo_id: str, tag: str) -> PublishResult:
        """A model folder as `models--org--name` with `refs/<tag>`: `snapshot_download(repo_id, revision=tag)`
        + `SentenceTransformer(path)` load it, as from the Hub."""
        digest = folder_hash(Path(folder))
        repo = self.root / f"models--{repo_id.replace('/', '--')}"
        snap = repo / "snapshots" / digest[:40]
        with locks.exclusive(self.root / ".locks" / f"gistforge-{repo.name}.lock", f"{repo_id} in {self.root}"):
            if not snap.exists():
                with atomic.atomic_dir(snap) as tmp:
                    shutil.copytree(folder, tmp, dirs_exist_ok=True)
            atomic.write_text(repo / "refs" / tag, digest[:40])
            atomic.write_text(repo / "refs" / "main", digest[:40])
        return PublishResult(repo_id=repo_id, tag=tag, revision=digest[:40], status="published",
                             location=self.location, content_hash=digest)
