"""A source resolved once per stage: its snapshot, what its content is pinned to, and where it came from.

The stage's fingerprint (`identity`), its readers (`folder`) and the card (`provenance`) share one
`ResolvedSource`, so with a moving ref (`main`) all three name the same commit, and online the Hub is asked
once per stage, not once per use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipeline.common.retry import RetryBudget
from pipeline.config import MediSource, TaskSource
from pipeline.registry import get_task
from pipeline.road.sources.hub import SourceError, is_local, pin, snapshot
from pipeline.road.sources.layouts import SplitFiles, locate_split
from pipeline.road.sources.provenance import Provenance, describe


@dataclass(frozen=True)
class ResolvedSource:
    source: TaskSource | MediSource
    folder: Path | None  # the snapshot folder; None for a user's local file
    identity: dict[str, Any]  # what fingerprints hash: the resolved commit, or a local file's path, size and mtime
    provenance: Provenance  # what the card and the asset metadata show (never a machine path)
    _splits: dict = field(default_factory=dict, compare=False, repr=False)

    def split_files(self, config: str | None, split: str, source: str | None = None) -> SplitFiles:
        """Where a split's files sit in the snapshot and which layout found them, looked up once: the reader
        reads these files and the stage's report names them."""
        if (config, split) not in self._splits:
            self._splits[config, split] = locate_split(self.folder, config, split, source or self.label)
        return self._splits[config, split]

    @property
    def train_split(self) -> tuple[str | None, str]:
        """The config and split a stage reads from the snapshot: MEDI's `train`, or the registry's for a task."""
        if isinstance(self.source, MediSource):
            return None, "train"
        task = get_task(self.source.name)
        return task.config, task.split

    def read_from(self) -> tuple[str | None, list[str]]:
        """The layout and files (relative to the snapshot; a local file: its name) the train split is read from."""
        if self.folder is None:
            return None, [Path(self.source.path).name]
        found = self.split_files(*self.train_split)
        return found.layout, [p.relative_to(self.folder).as_posix() for p in found.files]

    @property
    def label(self) -> str:
        """The source as error messages and logs name it: `Banking77Classification (mteb/banking77@0fd1…)`."""
        return _label(self.source, self.folder is None)


def resolve(src: TaskSource | MediSource, budget: RetryBudget | None = None) -> ResolvedSource:
    """Resolve a source now: download (or find in the Hub cache) its snapshot and read what it is pinned to."""
    folder = None if is_local(src) else snapshot(src, budget)
    return ResolvedSource(src, folder, _identity(src, folder), describe(src, folder))


def _label(src: TaskSource | MediSource, local: bool) -> str:
    if isinstance(src, MediSource):
        return f"MEDI json ({src.path})" if local else f"MEDI ({'@'.join(pin(src))})"
    return f"local task {src.name} ({src.path})" if local else f"{src.name} ({'@'.join(pin(src))})"


def resolved(src: TaskSource | MediSource | ResolvedSource, budget: RetryBudget | None = None) -> ResolvedSource:
    """`src` as a stage resolved it, or resolved now (a caller that reads one source once)."""
    return src if isinstance(src, ResolvedSource) else resolve(src, budget)


def _identity(src: TaskSource | MediSource, folder: Path | None) -> dict[str, Any]:
    if folder is not None:  # a branch name moves; the commit does not
        return {"hub": pin(src)[0], "commit": folder.name}
    label = _label(src, True)
    if isinstance(src, TaskSource):
        return {"file": _file_identity(src.path, label), "test": _file_identity(src.test_path, f"{label} test")}
    return {"file": _file_identity(src.path, label)}


def _file_identity(path: Path | None, source: str) -> dict[str, Any]:
    if path is None:
        return {}
    try:
        st = Path(path).stat()
    except FileNotFoundError:
        raise SourceError(f"{source}: file not found: {path}") from None
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
