"""Where a split's files sit in a snapshot: the layouts `find_split` tries, in order, each a named finder.

Adding a layout is one `Layout` in `LAYOUTS` (and its test): the search order, the error message's list of
what was tried and the README's table all read it. Every file found must resolve inside the snapshot (or its
repo's `blobs/`): a card or a link never makes gistforge read another repo's files, or the host's.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Callable

import yaml

from pipeline.common.text import front_matter
from pipeline.road.sources.hub import SourceError

# Data files the packaged readers take, by extension (a `.gz` suffix is read through).
_READERS = {".parquet": "parquet", ".jsonl": "json", ".ndjson": "json", ".json": "json", ".csv": "csv", ".tsv": "csv"}


@dataclass(frozen=True)
class SplitFiles:
    """Where a split's data sits in a snapshot, and which layout found it."""

    layout: str
    files: tuple[Path, ...]


def _ext(path: Path) -> str:
    name = path.name.lower().removesuffix(".gz")
    return Path(name).suffix


def _repo_roots(folder: Path) -> tuple[Path, ...]:
    """Where a snapshot's files may really live: the snapshot itself and, in the Hub cache layout
    (`<repo>/snapshots/<sha>`), that repo's `blobs/`, which its files link into. Nothing else: not a
    neighbouring repo of the same cache, not the rest of the disk."""
    folder = Path(folder)
    roots = [folder.resolve()]
    if folder.parent.name == "snapshots":
        roots.append((folder.parent.parent / "blobs").resolve())
    return tuple(roots)


def _inside(path: Path, folder: Path, source: str, what: str) -> Path:
    """`path`, if it resolves (symlinks followed) inside the snapshot or its repo's blobs; else a SourceError:
    a source's card or links must never make gistforge read another repo's (or the host's) files."""
    real = Path(path).resolve()
    if not any(real.is_relative_to(root) for root in _repo_roots(folder)):
        raise SourceError(f"{source}: {what} resolves to {real}, outside the snapshot {folder} and its repo's "
                          "blobs/: refused; a source may read only its own files (remove the link, or fix the card)")
    return path


def _data_files(paths, folder: Path, source: str) -> list[Path]:
    found = sorted({p for p in paths if p.is_file() and _ext(p) in _READERS})
    return [_inside(p, folder, source, f"data file {p.relative_to(folder).as_posix()!r}") for p in found]


def _card_line(folder: Path, pattern: object, after: str | None = None) -> str:
    """`README.md line N`: where the card names `pattern` (at or after the first line naming `after`, e.g. the
    config's `config_name`), for an error the user can act on."""
    lines = (folder / "README.md").read_text(encoding="utf-8", errors="replace").splitlines()
    start = next((i for i, line in enumerate(lines) if after in line), 0) if after else 0
    n = next((i for i, line in enumerate(lines[start:], start + 1) if str(pattern) in line), None)
    return f"README.md line {n}" if n else "README.md"


def _card_glob(folder: Path, pattern: object, source: str) -> list[Path]:
    """The files a card's `data_files` pattern matches; an absolute or `..` pattern is refused, never globbed
    (`Path.glob` would follow it out of the snapshot, or crash on an absolute one)."""
    if not isinstance(pattern, str) or not pattern.strip():
        why = "is not a path pattern"
    elif PurePosixPath(pattern).is_absolute() or PureWindowsPath(pattern).is_absolute() or \
            PureWindowsPath(pattern).drive or pattern.startswith(("/", "\\", "~")):
        why = "is absolute"
    elif ".." in PurePosixPath(pattern).parts or ".." in PureWindowsPath(pattern).parts:
        why = "climbs out with '..'"
    else:
        return list(folder.glob(pattern))
    raise SourceError(f"{source}: {_card_line(folder, pattern)}: data_files pattern {pattern!r} {why}: refused; "
                      "a card may name only files inside its own snapshot (a path relative to the repo root, no '..')")


def _card_configs(folder: Path, source: str) -> list[dict]:
    card = folder / "README.md"
    if not card.is_file():
        return []
    _inside(card, folder, source, "README.md")
    text = front_matter(card.read_text(encoding="utf-8", errors="replace"))
    if text is None:
        return []
    try:
        meta = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return []
    configs = meta.get("configs") if isinstance(meta, dict) else None
    return [c for c in configs if isinstance(c, dict)] if isinstance(configs, list) else []


def _card_patterns(entry: dict, split: str, folder: Path, source: str) -> list[str]:
    """The path patterns a card config gives for `split`, read as `datasets` reads `data_files`
    (`sanitize_patterns`: a bare pattern or list is the train split); a malformed entry is a `SourceError`."""
    from datasets.data_files import sanitize_patterns

    files = entry.get("data_files")
    if files is None:
        return []
    try:
        return list(sanitize_patterns(files).get(split, []))
    except (ValueError, TypeError) as exc:
        why = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        name = entry.get("config_name", "default")
        where = _card_line(folder, "data_files", f"config_name: {name}" if "config_name" in entry else None)
        raise SourceError(f"{source}: {where}: config {name!r}: {why}; fix the card's data_files") from None


def _from_card(folder: Path, config: str | None, split: str, source: str) -> list[Path]:
    wanted = config or "default"
    for entry in _card_configs(folder, source):
        if entry.get("config_name", "default") == wanted:
            files = _data_files((p for pattern in _card_patterns(entry, split, folder, source)
                                 for p in _card_glob(folder, pattern, source)), folder, source)
            if files:
                return files
    return []


def _per_config(folder: Path, config: str | None, split: str, source: str) -> list[Path]:
    sub = folder / str(config)
    return _data_files([*sub.glob(f"{split}.*"), *sub.glob(f"{split}-*.parquet")], folder, source)


def _parquet_conversion(folder: Path, config: str | None, split: str, source: str) -> list[Path]:
    return _data_files((folder / (config or "default") / split).glob("*.parquet"), folder, source)


def _root(folder: Path, config: str | None, split: str, source: str) -> list[Path]:
    return _data_files([*folder.glob(f"{split}.*"), *(folder / "data").glob(f"{split}-*"),
                        *(folder / "data").glob(f"{split}.*")], folder, source)


@dataclass(frozen=True)
class Layout:
    """One way a snapshot lays out a split: what it is called, whether it applies to a task with a config
    (True), without one (False) or both (None), and the finder that lists its files (empty: not this one)."""

    description: str
    with_config: bool | None
    find: Callable[[Path, str | None, str, str], list[Path]]

    def applies(self, config: str | None) -> bool:
        return self.with_config is None or self.with_config == (config is not None)


LAYOUTS: tuple[Layout, ...] = (
    Layout("the card's `configs:` data_files (README.md)", None, _from_card),
    Layout("per-config folder `<config>/<split>.<ext>` or `<config>/<split>-*.parquet`", True, _per_config),
    Layout("the Hub's parquet conversion `<config>/<split>/*.parquet`", None, _parquet_conversion),
    Layout("root-level `<split>.<ext>` or `data/<split>-*` (config-less repos)", False, _root),
)


def layouts_for(config: str | None) -> list[Layout]:
    """The layouts tried for a task with (or without) a config, in order."""
    return [layout for layout in LAYOUTS if layout.applies(config)]


def find_split(folder: Path, config: str | None, split: str, source: str | None = None) -> SplitFiles | None:
    """A split's files, by the first layout that has them (the order of `LAYOUTS`); None when none does."""
    folder = Path(folder)
    source = source or f"snapshot {folder}"
    for layout in layouts_for(config):
        files = layout.find(folder, config, split, source)
        if files:
            return SplitFiles(layout.description, tuple(files))
    return None


def locate_split(folder: Path, config: str | None, split: str, source: str) -> SplitFiles:
    """`find_split`, or a `SourceError` that lists the layouts tried and the files the snapshot holds."""
    found = find_split(folder, config, split, source)
    if found is None:
        held = sorted(p.relative_to(folder).as_posix() for p in Path(folder).rglob("*")
                      if p.is_file() and not p.name.startswith("."))
        shown = ", ".join(held[:40]) + (f" (+{len(held) - 40} more)" if len(held) > 40 else "")
        tried = "; ".join(layout.description for layout in layouts_for(config))
        raise SourceError(f"{source}: no data file for split {split!r} (config {config!r}) in the snapshot; "
                          f"layouts tried: {tried}; the snapshot holds: {shown or 'no files'}")
    return found
