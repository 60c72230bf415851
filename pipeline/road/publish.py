"""The publish stage: publish the workspace's build to a `Publisher`, and the types every publisher shares.

A build's identity is its content hash (shards + card); publishing turns it into an immutable, tagged version
(see `versioning`), on the Hugging Face Hub (`hub_publisher`) or on a local hub (`local_hub`, the default,
offline target); an unchanged build publishes nothing. This module imports none of those, so they can all
import the result types from here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

from pydantic import BaseModel

from pipeline.workspace import StageSpec, Workspace

SPEC = StageSpec("publish", version="2")  # the published_dataset asset's code version


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
