"""Publishing a build as an immutable, tagged version: to the Hugging Face Hub or to a local hub.

A build's identity is its content hash (shards + card). Publishing adds what only publishing knows: the
tag (`YYYY.MM.DD-<8 hex of the content hash>`), a version section in the card with a pinned
`load_dataset` snippet and the diff against the previous version, and a small manifest under
`.gistforge/`. An unchanged build (same content hash as a published tag) publishes nothing.

The local hub (the default, offline target) is a folder in the Hugging Face Hub cache layout
(`datasets--org--name/refs/<tag>`, `snapshots/<sha>/...`), so that
`snapshot_download(repo_id, repo_type="dataset", revision=tag, cache_dir=root)` + `load_dataset(path)`
read a version exactly as a downstream trainer reads one from the Hub.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import re
import shutil
import tempfile
import time
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Literal, Protocol

import polars as pl
from pydantic import BaseModel, field_validator

from pipeline.common import atomic, faults, locks
from pipeline.common.markdown import markdown_table
from pipeline.common.retry import BudgetSpent, RetryBudget, describe, http_status
from pipeline.road.build import content_hash as folder_hash
from pipeline.road.build import read_build_hash
from pipeline.workspace import StageSpec, Workspace

log = logging.getLogger(__name__)

SPEC = StageSpec("publish", version="2")  # the published_dataset asset's code version

MANIFEST = ".gistforge/manifest.json"
ROW_HASHES = ".gistforge/row_hashes.parquet"
_TAG = re.compile(r"\d{4}\.\d{2}\.\d{2}-[0-9a-f]{8}")


def is_tag(name: str) -> bool:
    """A gistforge version tag, exactly (`YYYY.MM.DD-<8 hex>`, nothing before or after)."""
    return _TAG.fullmatch(name) is not None


class PublishError(RuntimeError):
    """Publishing failed for good (transient faults were already retried within the budget); the message
    never holds a token."""


class Location(BaseModel):
    """Where versions live: a local hub folder (`local_hub`), or the Hugging Face Hub (`local_hub` None)."""

    local_hub: str | None = None

    @property
    def is_hub(self) -> bool:
        return self.local_hub is None

    def __str__(self) -> str:
        return "the Hugging Face Hub" if self.is_hub else f"local hub {self.local_hub}"


HUB = Location()


class RowDiff(BaseModel):
    task_type: str
    task_name: str
    added: int
    removed: int
    kept: int


class PublishResult(BaseModel):
    """One publish: the version it made (or found unchanged), where it lives, and how it differs."""

    repo_id: str
    tag: str
    revision: str
    status: Literal["published", "unchanged"]
    location: Location
    content_hash: str
    diff: list[RowDiff] = []
    previous_tag: str | None = None

    def load_snippet(self) -> str:
        return load_snippet(self.repo_id, self.tag, self.location.local_hub)


class Publisher(Protocol):
    """A place versions are published to and read back from."""

    location: Location

    def publish(self, build_dir: Path, repo_id: str) -> PublishResult: ...

    def latest(self, repo_id: str) -> str | None:
        """The tag `main` points at: the version a trainer reads by default."""
        ...

    def publish_model(self, folder: Path, repo_id: str, tag: str) -> PublishResult: ...


def load_snippet(repo_id: str, tag: str, cache_dir: str | None) -> str:
    """What a trainer on this machine runs to read the version (printed by the CLI, shown in the UI)."""
    if cache_dir:
        return (
            "from huggingface_hub import snapshot_download\nfrom datasets import load_dataset\n"
            f"path = snapshot_download({repo_id!r}, repo_type='dataset', revision={tag!r}, cache_dir={cache_dir!r}, "
            "local_files_only=True)\n"
            "ds = load_dataset(path, split='train')"
        )
    return f"from datasets import load_dataset\nds = load_dataset({repo_id!r}, revision={tag!r}, split='train')"


def card_snippet(repo_id: str, tag: str, local: bool) -> str:
    """The card's snippet: works as written wherever the version was published to, and names no path of the
    machine that built it (the local hub folder comes from `GISTFORGE_LOCAL_HUB`, default `.gistforge/hub`)."""
    if not local:
        return load_snippet(repo_id, tag, None)
    return (
        "import os\nfrom huggingface_hub import snapshot_download\nfrom datasets import load_dataset\n"
        "# the local hub folder holding this version (gistforge's default: .gistforge/hub in the build's folder)\n"
        "hub = os.environ.get('GISTFORGE_LOCAL_HUB', '.gistforge/hub')\n"
        f"path = snapshot_download({repo_id!r}, repo_type='dataset', revision={tag!r}, cache_dir=hub, "
        "local_files_only=True)\n"
        "ds = load_dataset(path, split='train')"
    )


def make_tag(content_hash: str, today: dt.date | None = None) -> str:
    """`YYYY.MM.DD-<first 8 hex of the content hash>`: sortable by date, unique by content."""
    return f"{(today or dt.date.today()):%Y.%m.%d}-{content_hash[:8]}"


def diff_versions(previous: pl.DataFrame | None, current: pl.DataFrame) -> list[RowDiff]:
    """Rows per task added / removed / kept, from the two versions' (task_type, task_name, row_hash) tables."""
    previous = previous if previous is not None else current.clear()
    key = ["task_type", "task_name"]
    prev = previous.group_by(key).agg(pl.col("row_hash").alias("a"))
    cur = current.group_by(key).agg(pl.col("row_hash").alias("b"))
    out = []
    for row in prev.join(cur, on=key, how="full", coalesce=True).sort(key).iter_rows(named=True):
        a, b = set(row["a"] or []), set(row["b"] or [])
        out.append(RowDiff(task_type=row["task_type"], task_name=row["task_name"],
                           added=len(b - a), removed=len(a - b), kept=len(a & b)))
    return out


def version_section(repo_id: str, tag: str, content_hash: str, local: bool, previous_tag: str | None,
                    diff: list[RowDiff]) -> str:
    changes = [d for d in diff if d.added or d.removed]
    diff_text = diff_table(changes) if changes else "No row changed."
    against = f"against `{previous_tag}`" if previous_tag else "(first version: every row is new)"
    return (f"\n## Version\n\nTag `{tag}`, content hash `{content_hash}`.\n\n"
            f"```python\n{card_snippet(repo_id, tag, local)}\n```\n\n"
            f"### Changes {against}\n\n{diff_text}\n")


def diff_table(diff: list[RowDiff]) -> str:
    return markdown_table(["task_type", "task_name", "added", "removed", "kept"],
                          [[d.task_type, d.task_name, d.added, d.removed, d.kept] for d in diff])


class Manifest(BaseModel):
    """`.gistforge/manifest.json` in every version: what a rerun or a later version needs to know of it."""

    tag: str
    content_hash: str
    previous_tag: str | None
    diff: list[RowDiff]
    files: dict[str, int] = {}  # every other file of the version: path -> bytes, checked after publishing
    sha256: dict[str, str] = {}  # the same files' sha256: what the Hub's LFS entries are checked against

    @field_validator("tag", "previous_tag")
    @classmethod
    def _a_version_tag(cls, value: str | None) -> str | None:
        """A manifest is read back from a snapshot or the Hub: its tag becomes a ref's file name."""
        if value is not None and not is_tag(value):
            raise ValueError(f"{value!r} is not a gistforge version tag (YYYY.MM.DD-<8 hex>)")
        return value


def _manifest(tag: str, content_hash: str, previous_tag: str | None, diff: list[RowDiff], folder: Path) -> str:
    return json.dumps(Manifest(tag=tag, content_hash=content_hash, previous_tag=previous_tag, diff=diff,
                               files=file_sizes(folder), sha256=file_digests(folder))
                      .model_dump(mode="json"), indent=2, sort_keys=True)


def file_sizes(folder: Path) -> dict[str, int]:
    """Path -> size of every file of a version folder except its manifest."""
    return {p.relative_to(folder).as_posix(): p.stat().st_size for p in sorted(Path(folder).rglob("*"))
            if p.is_file() and p.relative_to(folder).as_posix() != MANIFEST}


def file_digests(folder: Path) -> dict[str, str]:
    """Path -> sha256 of every file of a version folder except its manifest."""
    out = {}
    for name in file_sizes(folder):
        h = hashlib.sha256()
        with open(Path(folder) / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        out[name] = h.hexdigest()
    return out


def verify_files(expected: dict[str, int], found: dict[str, int], where: str,
                 expected_sha: dict[str, str] | None = None, found_sha: dict[str, str] | None = None) -> None:
    """The published files are exactly the manifest's (extra files the Hub adds itself, such as
    `.gitattributes`, aside), with the same sizes and, where both sides know it, the same sha256; else a
    `PublishError` naming what differs."""
    missing = sorted(set(expected) - set(found))
    resized = sorted(p for p in expected if p in found and found[p] != expected[p])
    changed = sorted(p for p, d in (found_sha or {}).items() if p in (expected_sha or {}) and expected_sha[p] != d)
    extra = sorted(p for p in set(found) - set(expected) if p not in (MANIFEST, ".gitattributes"))
    if missing or resized or extra or changed:
        raise PublishError(f"{where} does not match its manifest: missing {missing[:5]}, size differs {resized[:5]}, "
                           f"content differs {changed[:5]}, unexpected {extra[:5]}")


def _stage_version(build_dir: Path, dest: Path, repo_id: str, tag: str, content_hash: str, local: bool,
                   previous: pl.DataFrame | None, previous_tag: str | None) -> list[RowDiff]:
    """Copy a build into `dest` with its version section and manifest; returns the diff.

    The copy must hash to the build's recorded content hash: a shard changed or removed since the build (or a
    second build replacing `build/` meanwhile) is refused here, before any ref moves."""
    shutil.copytree(build_dir, dest, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".gistforge-build.json"))
    if (found := folder_hash(dest)) != content_hash:
        raise PublishError(f"{build_dir} does not hold the build it records (content hash {found[:12]}, recorded "
                           f"{content_hash[:12]}): a file changed or went missing after the build; materialise "
                           "triplet_dataset again, then publish")
    diff = diff_versions(previous, pl.read_parquet(dest / ROW_HASHES))
    card = (dest / "README.md").read_text(encoding="utf-8")
    (dest / "README.md").write_text(card + version_section(repo_id, tag, content_hash, local, previous_tag, diff),
                                    encoding="utf-8")
    (dest / MANIFEST).parent.mkdir(exist_ok=True)
    (dest / MANIFEST).write_text(_manifest(tag, content_hash, previous_tag, diff, dest))
    return diff


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
                diff = _stage_version(build_dir, tmp, repo_id, tag, content_hash, True, previous, previous_tag)
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


# ---------------------------------------------------------------------------------------------- the Hub


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
            diff = _stage_version(build_dir, stage, repo_id, tag, content_hash, False, previous, previous_tag)
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


# ------------------------------------------------------------------------------------------------ the stage


def publish(ws: Workspace, repo_id: str, publisher: Publisher) -> PublishResult:
    """Publish the workspace's current build; the result is kept in the workspace for the CLI and the fine-tune.
    Holds the profile's lock, so no build replaces `build/` while it is being copied."""
    with ws.lock():
        result = publisher.publish(ws.build_dir(), repo_id)
        ws.save_report(result, ws.published())
    return result


def last_published(ws: Workspace) -> PublishResult:
    """What the last publish of this workspace made or found unchanged."""
    return ws.load_report(ws.published(), PublishResult)
