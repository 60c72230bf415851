"""Published versions as a user looks at them: list, show one, compare two.

Everything is read from what the publisher already writes into each version: `.gistforge/manifest.json`
(tag, content hash, the version it was made on), `.gistforge/row_hashes.parquet` (one hash per row, with its
task) and the dataset card (sources with resolved commits and licences, the guide, the mining settings,
row accounting). The same code reads a local hub (`LocalVersions`) and the Hugging Face Hub (`HubVersions`).
"""

from __future__ import annotations

import datetime as dt
import html
import re
from pathlib import Path
from typing import Any, Protocol

import polars as pl
from pydantic import BaseModel

from pipeline.road.card import ACCOUNTING_COLUMNS, SOURCE_COLUMNS, accounting_row, source_row
from pipeline.road.facts import FACTS, VersionFacts
from pipeline.road.local_hub import LocalHub
from pipeline.road.publish import RowDiff
from pipeline.road.versioning import MANIFEST, ROW_HASHES, Manifest, diff_versions, is_tag


class VersionStore(Protocol):
    """Where one dataset repo's versions are: tags, `main`, and a file of a version."""

    where: str

    def tags(self) -> dict[str, str]:
        """Tag -> revision (commit or snapshot id)."""
        ...

    def main(self) -> str | None:
        """The revision `main` points at."""
        ...

    def file(self, tag: str, path: str) -> Path | None:
        """A file of version `tag` on this machine, or None when the version has none."""
        ...


class LocalVersions:
    """A local hub folder (Hub cache layout), as `LocalHub` writes it."""

    def __init__(self, root: Path, repo_id: str):
        self.hub, self.repo_id = LocalHub(Path(root)), repo_id
        self.where = f"local hub {root}"

    def tags(self) -> dict[str, str]:
        return self.hub.tags(self.repo_id)

    def main(self) -> str | None:
        ref = self.hub.repo_dir(self.repo_id) / "refs" / "main"
        return ref.read_text().strip() if ref.exists() else None

    def snapshot(self, tag: str) -> Path:
        return self.hub.repo_dir(self.repo_id) / "snapshots" / self.tags()[tag]

    def file(self, tag: str, path: str) -> Path | None:
        found = self.snapshot(tag) / path
        return found if found.is_file() else None


class HubVersions:
    """A dataset repo on the Hugging Face Hub, read through `huggingface_hub` (files land in its cache)."""

    def __init__(self, api: Any, repo_id: str):
        self.api, self.repo_id = api, repo_id
        self.where = f"the Hugging Face Hub ({repo_id})"
        self._refs = None

    def _all(self):
        if self._refs is None:
            self._refs = self.api.list_repo_refs(self.repo_id, repo_type="dataset")
        return self._refs

    def tags(self) -> dict[str, str]:
        return {t.name: t.target_commit for t in self._all().tags if is_tag(t.name)}

    def main(self) -> str | None:
        return next((b.target_commit for b in self._all().branches if b.name == "main"), None)

    def file(self, tag: str, path: str) -> Path | None:
        from huggingface_hub.errors import EntryNotFoundError

        try:
            return Path(self.api.hf_hub_download(self.repo_id, path, repo_type="dataset", revision=tag))
        except EntryNotFoundError:
            return None


class VersionError(LookupError):
    """A tag that is not a version here, or a version missing what gistforge writes into each one."""


class VersionSummary(BaseModel):
    tag: str
    date: str
    rows: int
    tasks: int
    content_hash: str
    revision: str
    main: bool
    previous_tag: str | None


class TaskCount(BaseModel):
    task_type: str
    task_name: str
    rows: int


class VersionDetail(VersionSummary):
    """`gistforge show TAG`: what a version holds and what it was made from (its `.gistforge/facts.json`; for a
    version published before that file, its card's tables). Rows are keyed by the card's column names."""

    per_task: list[TaskCount]
    sources: list[dict[str, str]]
    drops: list[dict[str, str]]
    guide: dict[str, str]
    mining: dict[str, str]
    files: int
    bytes: int


class VersionDiff(BaseModel):
    a: str
    b: str
    rows: list[RowDiff]
    settings: dict[str, list[str]]  # name -> [value in a, value in b], only those that differ
    sources: dict[str, list[str]]  # source -> [commit in a, commit in b], only those that differ


def _manifest(store: VersionStore, tag: str) -> Manifest:
    path = store.file(tag, MANIFEST)
    if path is None:
        raise VersionError(f"{tag} in {store.where} has no {MANIFEST}: not a version gistforge published")
    return Manifest.model_validate_json(path.read_text(encoding="utf-8"))


def _row_hashes(store: VersionStore, tag: str) -> pl.DataFrame:
    path = store.file(tag, ROW_HASHES)
    if path is None:
        raise VersionError(f"{tag} in {store.where} has no {ROW_HASHES}: not a version gistforge published")
    return pl.read_parquet(path)


def _check_tag(store: VersionStore, tag: str) -> str:
    tags = store.tags()
    if tag not in tags:
        listed = ", ".join(sorted(tags, reverse=True)[:5]) or "none"
        raise VersionError(f"{tag!r} is not a version in {store.where} (newest: {listed}); see `gistforge versions`")
    return tags[tag]


def _date(tag: str) -> str:
    return dt.datetime.strptime(tag.split("-")[0], "%Y.%m.%d").date().isoformat()


def summary(store: VersionStore, tag: str) -> VersionSummary:
    revision = _check_tag(store, tag)
    manifest, hashes = _manifest(store, tag), _row_hashes(store, tag)
    return VersionSummary(tag=tag, date=_date(tag), rows=hashes.height,
                          tasks=hashes.get_column("task_type").n_unique(), content_hash=manifest.content_hash,
                          revision=revision, main=revision == store.main(), previous_tag=manifest.previous_tag)


def list_versions(store: VersionStore) -> list[VersionSummary]:
    """Every version, newest first (`newest_first`)."""
    return [summary(store, tag) for tag in newest_first(store)]


def newest_first(store: VersionStore) -> list[str]:
    """Every tag, newest first: by the date in the tag, then, within a day, by publishing order as each
    manifest's `previous_tag` links it (a version whose previous one is gone starts a chain). Reads manifests
    only and never fails on a damaged version (it sorts by its date alone), so `gc` can order what it cleans."""
    tags = list(store.tags())
    previous: dict[str, str | None] = {}
    for tag in tags:
        try:
            previous[tag] = _manifest(store, tag).previous_tag
        except (VersionError, ValueError, OSError):  # pydantic's ValidationError is a ValueError
            previous[tag] = None
    depth: dict[str, int] = {}
    for tag in tags:
        path, at = [], tag
        while at in previous and at not in depth and at not in path:
            path.append(at)
            at = previous[at]
        base = depth.get(at, -1) if at is not None else -1
        for step in reversed(path):
            base += 1
            depth[step] = base

    def date(tag: str) -> str:
        try:
            return _date(tag)
        except ValueError:
            return ""

    return sorted(tags, key=lambda t: (date(t), depth[t], t), reverse=True)


# --------------------------------------------------------------------------------------- the card's tables

def _unescape(cell: str) -> str:
    """A card cell as plain text: its code spans' content (`main` (a moving ref) -> main (a moving ref))."""
    return html.unescape(re.sub(r"`([^`]*)`", r"\1", cell.strip()))


def card_sections(text: str) -> dict[str, list[dict[str, str]]]:
    """The first table under each `## heading` of a card, as rows keyed by its header."""
    out: dict[str, list[dict[str, str]]] = {}
    for section in re.split(r"\n## ", text)[1:]:
        heading, _, body = section.partition("\n")
        block: list[str] = []
        for line in body.splitlines():  # the first contiguous table only
            if line.startswith("|"):
                block.append(line)
            elif block:
                break
        if len(block) >= 2:
            header = [_unescape(c) for c in block[0].strip("|").split("|")]
            out[heading.strip()] = [dict(zip(header, (_unescape(c) for c in row.strip("|").split("|"))))
                                    for row in block[2:]]
    return out


def _guide(text: str) -> dict[str, str]:
    m = re.search(r"Guide model: `([^`\n]+)` at revision `([^`\n]+)`", text) or \
        re.search(r"Guide model: (\S+) at revision (\S+?)\.?$", text, re.MULTILINE)
    return {"name": html.unescape(m.group(1)), "revision": html.unescape(m.group(2))} if m else {}


def _plain(value: object) -> str:
    return "" if value is None else str(value)


def _made_from(facts: VersionFacts) -> dict[str, Any]:
    """The facts as `show` gives them: the card's rows, by its column names, as plain text."""
    sources = [dict(zip(SOURCE_COLUMNS, map(str, source_row(s.model_dump(), span=str)))) for s in facts.sources]
    drops = [dict(zip(ACCOUNTING_COLUMNS, map(str, accounting_row(a)))) for a in facts.accounts
             if a.rows_in != a.rows_out]
    return {"sources": sources, "drops": drops, "guide": dict(facts.guide),
            "mining": {k: _plain(v) for k, v in facts.mining.items()}}


def _made_from_card(text: str) -> dict[str, Any]:
    """The same, read from a card's tables (versions published before `.gistforge/facts.json`)."""
    tables = card_sections(text)
    drops = [row for row in tables.get("Row accounting", []) if row.get("dropped", "0") not in ("0", "")]
    mining = {row["parameter"]: row["value"] for row in tables.get("Guide model and mining", []) if "parameter" in row}
    return {"sources": tables.get("Sources and licences", []), "drops": drops, "guide": _guide(text), "mining": mining}


def show(store: VersionStore, tag: str) -> VersionDetail:
    """Per task rows, sources with resolved commits and licences, drops by reason, guide and mining settings."""
    head = summary(store, tag)
    if facts := store.file(tag, FACTS):
        made = _made_from(VersionFacts.model_validate_json(facts.read_text(encoding="utf-8")))
    else:
        card = store.file(tag, "README.md")
        made = _made_from_card(card.read_text(encoding="utf-8") if card else "")
    hashes = _row_hashes(store, tag)
    per_task = [TaskCount(task_type=r[0], task_name=r[1], rows=r[2]) for r in
                hashes.group_by(["task_type", "task_name"]).len().sort(["task_type", "task_name"]).iter_rows()]
    manifest = _manifest(store, tag)
    return VersionDetail(**head.model_dump(), per_task=per_task, **made, files=len(manifest.files),
                         bytes=sum(manifest.files.values()))


def diff(store: VersionStore, a: str, b: str) -> VersionDiff:
    """Rows per task added / removed / kept going from `a` to `b` (by row hash), and what was made differently."""
    da, db = show(store, a), show(store, b)
    rows = diff_versions(_row_hashes(store, a), _row_hashes(store, b))
    settings = {f"mining.{k}": [da.mining.get(k, ""), db.mining.get(k, "")]
                for k in sorted(set(da.mining) | set(db.mining)) if da.mining.get(k) != db.mining.get(k)}
    for k in sorted(set(da.guide) | set(db.guide)):
        if da.guide.get(k) != db.guide.get(k):
            settings[f"guide.{k}"] = [da.guide.get(k, ""), db.guide.get(k, "")]

    def commits(d: VersionDetail) -> dict[str, str]:
        return {s.get("source", ""): s.get("resolved commit") or s.get("revision", "") for s in d.sources}

    ca, cb = commits(da), commits(db)
    sources = {k: [ca.get(k, "(absent)"), cb.get(k, "(absent)")] for k in sorted(set(ca) | set(cb))
               if ca.get(k) != cb.get(k)}
    return VersionDiff(a=a, b=b, rows=rows, settings=settings, sources=sources)
