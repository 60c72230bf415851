"""What publishing adds to a build, wherever it goes: the tag, the card's version section with its diff, and
the manifest the published files are verified against.

The tag is `YYYY.MM.DD-<8 hex of the content hash>`; the manifest lives under `.gistforge/`. Staging a
version refuses a build folder that no longer hashes to its recorded content hash.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
from pathlib import Path

import polars as pl
from pydantic import BaseModel, field_validator

from pipeline.common import digests
from pipeline.common.markdown import markdown_table
from pipeline.road.build import content_hash as folder_hash
from pipeline.road.publish import PublishError, RowDiff, load_snippet

MANIFEST = ".gistforge/manifest.json"
ROW_HASHES = ".gistforge/row_hashes.parquet"
_TAG = re.compile(r"\d{4}\.\d{2}\.\d{2}-[0-9a-f]{8}")


def is_tag(name: str) -> bool:
    """A gistforge version tag, exactly (`YYYY.MM.DD-<8 hex>`, nothing before or after)."""
    return _TAG.fullmatch(name) is not None


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
    return digests.file_digests(folder, frozenset({MANIFEST}))


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


def stage_version(build_dir: Path, dest: Path, repo_id: str, tag: str, content_hash: str, local: bool,
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
