"""Publishing to the Hugging Face Hub: one exact, verified commit per version, then its tag; transient
faults retried within one budget, and the token in no message."""

from __future__ import annotations

import datetime as dt
import logging
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import polars as pl

from pipeline.common.retry import BudgetSpent, RetryBudget, describe, http_status
from pipeline.road.build import content_hash as folder_hash
from pipeline.road.build import read_build_hash
from pipeline.road.publish import HUB, PublishError, PublishResult
from pipeline.road.versioning import (MANIFEST, ROW_HASHES, Manifest, file_digests, file_sizes, is_tag, make_tag,
                                      stage_version, verify_files)

log = logging.getLogger(__name__)


def redact(text: str, token: str | None) -> str:
    return text.replace(token, "***") if token else text


class HubPublisher:
    """Publishes to the Hugging Face Hub through an `HfApi`: one atomic commit holding every shard and the
    card (guarded by `parent_commit`), then a tag. Transient failures (connection errors, timeouts, 429,
    5xx) are retried within one `retry_budget_s` per publish; anything else (401/403/404, offline mode)
    fails at once, and no error message ever holds the token.
    """

    def __init__(self, api: Any, token: str | None, private: bool = True, retry_budget_s: float = 120.0,
                 first_delay_s: float = 2.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.api, self.token, self.private = api, token, private
        self.location = HUB
        self.retry_budget_s, self.first_delay_s, self.sleep, self.clock = retry_budget_s, first_delay_s, sleep, clock
        self._budget: RetryBudget | None = None

    def _describe(self, exc: BaseException) -> str:
        return redact(describe(exc), self.token)

    @contextmanager
    def _one_budget(self) -> Iterator[None]:
        """Every call of one publish shares one retry budget."""
        self._budget = RetryBudget(self.retry_budget_s, self.first_delay_s, self.sleep, self.clock)
        try:
            yield
        finally:
            self._budget = None

    def _call(self, what: str, fn: Callable, *args, **kwargs):
        budget = self._budget or RetryBudget(self.retry_budget_s, self.first_delay_s, self.sleep, self.clock)
        try:
            return budget.call(what, lambda: fn(*args, token=self.token, **kwargs), self._describe)
        except Exception as exc:  # noqa: BLE001 - re-raised below as a PublishError without the token
            status, message = http_status(exc), self._describe(exc)
            if isinstance(exc, BudgetSpent):
                message = redact(str(exc), self.token) + "; check the network (or HF_ENDPOINT) or raise " \
                                                          "network.retry_budget_s"
        # raised outside the `except` block, so the original exception (which may quote the token)
        # is neither the cause nor the context of the error users see
        if status in (401, 403):
            raise PublishError(f"{what}: the Hub refused the credentials (HTTP {status}); log in with `hf auth login` "
                               "or set HF_TOKEN, with a token that has write access to this repo")
        raise PublishError(message if what in message else f"{what} failed{f' (HTTP {status})' if status else ''}: "
                           f"{message}")

    def _download(self, repo_id: str, filename: str, revision: str) -> Path | None:
        try:
            return Path(self._call(f"download {filename}@{revision}", self.api.hf_hub_download, repo_id, filename,
                                   repo_type="dataset", revision=revision))
        except PublishError:
            return None

    def publish(self, build_dir: Path, repo_id: str, today: dt.date | None = None) -> PublishResult:
        with self._one_budget():
            return self._publish(build_dir, repo_id, today)

    def _ensure_repo(self, repo_id: str, repo_type: str) -> None:
        """Create the repo if needed; a private publish never lands in a repo that is public (on the Hub,
        `create_repo(exist_ok=True, private=True)` leaves an existing repo's visibility as it is)."""
        self._call(f"create_repo {repo_id}", self.api.create_repo, repo_id, repo_type=repo_type, exist_ok=True,
                   private=self.private)
        if self.private:
            info = self._call(f"repo_info {repo_id}", self.api.repo_info, repo_id, repo_type=repo_type)
            if getattr(info, "private", None) is False:
                raise PublishError(f"{repo_id} exists on the Hub and is public, while GISTFORGE_HUB_PRIVATE=1 asks "
                                   "for a private version: make the repo private in its Hub settings, or set "
                                   "GISTFORGE_HUB_PRIVATE=0 to publish publicly")

    def _tree(self, repo_id: str, revision: str | None, repo_type: str) -> tuple[dict[str, int], dict[str, str]]:
        """Path -> size of every file of a revision, as the Hub lists it (none for no revision), and path ->
        sha256 of its LFS files."""
        if revision is None:
            return {}, {}
        tree = [e for e in self._call(f"list_repo_tree {repo_id}@{revision}", self.api.list_repo_tree, repo_id,
                                      revision=revision, recursive=True, repo_type=repo_type)
                if getattr(e, "size", None) is not None]
        return {e.path: e.size for e in tree}, {e.path: e.lfs.sha256 for e in tree if getattr(e, "lfs", None)}

    def _commit_exactly(self, repo_id: str, folder: Path, head: str | None, repo_type: str, message: str) -> str:
        """One commit on `main` whose tree is exactly `folder` (plus the Hub's own `.gitattributes`): every file
        added, every file of the parent that `folder` lacks deleted; guarded by `parent_commit`."""
        from huggingface_hub import CommitOperationAdd, CommitOperationDelete

        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        stale = sorted(set(self._tree(repo_id, head, repo_type)[0]) - set(files) - {".gitattributes"})
        ops = [CommitOperationAdd(name, str(path)) for name, path in files.items()] + \
              [CommitOperationDelete(name) for name in stale]
        commit = self._call(f"create_commit {repo_id}", self.api.create_commit, repo_id, ops, commit_message=message,
                            repo_type=repo_type, parent_commit=head)
        if stale:
            log.info("%s: the new version deletes %s file(s) of the previous one", repo_id, len(stale))
        return commit.oid

    def _verify(self, repo_id: str, revision: str, expected: dict[str, int], sha256: dict[str, str],
                repo_type: str = "dataset") -> None:
        """A commit's file list, sizes and LFS digests, as the Hub reports them, against the staged version's:
        run before the tag is made, so a version that fails it is never tagged."""
        where = f"the Hub's {repo_id}@{revision[:12]}"
        sizes, digests = self._tree(repo_id, revision, repo_type)
        try:
            verify_files(expected, sizes, where, sha256, digests)
        except PublishError as exc:
            raise PublishError(f"{exc}; it was not tagged (the next publish replaces it on main)") from None

    def _publish(self, build_dir: Path, repo_id: str, today: dt.date | None) -> PublishResult:
        content_hash = read_build_hash(build_dir)
        self._ensure_repo(repo_id, "dataset")
        refs = self._call(f"list_repo_refs {repo_id}", self.api.list_repo_refs, repo_id, repo_type="dataset")
        tags = {t.name: t.target_commit for t in refs.tags if is_tag(t.name)}
        for tag, commit in tags.items():
            if tag.endswith(content_hash[:8]):
                manifest = self._download(repo_id, MANIFEST, tag)
                if manifest and Manifest.model_validate_json(manifest.read_text()).content_hash == content_hash:
                    return PublishResult(repo_id=repo_id, tag=tag, revision=commit, status="unchanged", location=HUB,
                                         content_hash=content_hash)
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
        if head and head not in tags.values():  # a commit whose tag never landed (killed run): finish it
            if (done := self._finish(repo_id, head, content_hash)) is not None:
                return done
        previous_tag = next((t for t, c in sorted(tags.items()) if c == head), None) or (max(tags) if tags else None)
        prev_path = self._download(repo_id, ROW_HASHES, previous_tag) if previous_tag else None
        previous = pl.read_parquet(prev_path) if prev_path else None
        tag = make_tag(content_hash, today)
        with tempfile.TemporaryDirectory() as tmp:
            stage = Path(tmp) / "version"
            diff = stage_version(build_dir, stage, repo_id, tag, content_hash, False, previous, previous_tag)
            expected = file_sizes(stage)
            commit = self._commit_exactly(repo_id, stage, head, "dataset", f"gistforge version {tag}")
            self._verify(repo_id, commit, expected, file_digests(stage))
        self._call(f"create_tag {repo_id}@{tag}", self.api.create_tag, repo_id, tag=tag, revision=commit,
                   repo_type="dataset", tag_message=f"content hash {content_hash}")
        log.info("published %s@%s to the Hub (%s files verified)", repo_id, tag, len(expected))
        return PublishResult(repo_id=repo_id, tag=tag, revision=commit, status="published", location=HUB,
                             content_hash=content_hash, diff=diff, previous_tag=previous_tag)

    def _finish(self, repo_id: str, head: str, content_hash: str) -> PublishResult | None:
        """Tag the untagged head when it is this build's version and its tree checks out; else None."""
        manifest = self._download(repo_id, MANIFEST, head)
        data = Manifest.model_validate_json(manifest.read_text()) if manifest else None
        if data is None or data.content_hash != content_hash:
            return None
        try:
            self._verify(repo_id, head, data.files, data.sha256)
        except PublishError as exc:
            log.warning("%s: the untagged head %s is not a whole version (%s): committing the version again",
                        repo_id, head[:12], exc)
            return None
        self._call(f"create_tag {repo_id}@{data.tag}", self.api.create_tag, repo_id, tag=data.tag,
                   revision=head, repo_type="dataset", tag_message=f"content hash {content_hash}")
        return PublishResult(repo_id=repo_id, tag=data.tag, revision=head, status="published", location=HUB,
                             content_hash=content_hash, diff=data.diff, previous_tag=data.previous_tag)

    def latest(self, repo_id: str) -> str | None:
        refs = self._call(f"list_repo_refs {repo_id}", self.api.list_repo_refs, repo_id, repo_type="dataset")
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
        return max((t.name for t in refs.tags if is_tag(t.name) and t.target_commit == head), default=None)

    def publish_model(self, folder: Path, repo_id: str, tag: str) -> PublishResult:
        """A model folder as one commit to a model repo (its tree exactly the folder), tagged like the dataset
        version it was trained on."""
        with self._one_budget():
            return self._publish_model(folder, repo_id, tag)

    def _publish_model(self, folder: Path, repo_id: str, tag: str) -> PublishResult:
        folder = Path(folder)
        self._ensure_repo(repo_id, "model")
        refs = self._call(f"list_repo_refs {repo_id}", self.api.list_repo_refs, repo_id, repo_type="model")
        head = next((b.target_commit for b in refs.branches if b.name == "main"), None)
        commit = self._commit_exactly(repo_id, folder, head, "model", f"gistforge model trained on {tag}")
        self._verify(repo_id, commit, file_sizes(folder), file_digests(folder), repo_type="model")
        tagged = next((t.target_commit for t in refs.tags if t.name == tag), None)
        if tagged not in (None, commit):  # retrained on the same version: the tag names the newest model
            self._call(f"delete_tag {repo_id}@{tag}", self.api.delete_tag, repo_id, tag=tag, repo_type="model")
        if tagged != commit:
            self._call(f"create_tag {repo_id}@{tag}", self.api.create_tag, repo_id, tag=tag, revision=commit,
                       repo_type="model")
        return PublishResult(repo_id=repo_id, tag=tag, revision=commit, status="published", location=HUB,
                             content_hash=folder_hash(folder))
