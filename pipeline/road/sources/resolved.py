"""A source resolved once per stage: its snapshot, what its content is pinned to, and where it came from.

The stage's fingerprint (`identity`), its readers (`folder`) and the card (`provenance`) share one
`ResolvedSource`, so with a moving ref (`main`) all three name the same commit, and online the Hub is asked
once per stage, not once per use.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.common.retry import RetryBudget
from pipeline.config import MediSource, TaskSource
from pipeline.road.sources.hub import is_local, pin, snapshot
from pipeline.road.sources.provenance import Provenance, describe


@dataclass(frozen=True)
class ResolvedSource:
    source: TaskSource | MediSource
    folder: Path | None  # the snapshot folder; None for a user's local file
    identity: dict[str, Any]  # what fingerprints hash: the resolved commit, or a local file's path, size and mtime
    provenance: Provenance  # what the card and the asset metadata show (never a machine path)

    @property
    def label(self) -> str:
        """The source as error messages and logs name it: `Banking77Classification (mteb/banking77@0fd1…)`."""
        name = self.source.name if isinstance(self.source, TaskSource) else "MEDI"
        if self.folder is None:
            return f"local task {name} ({self.source.path})" if name != "MEDI" else f"MEDI json ({self.source.path})"
        return f"{name} ({'@'.join(pin(self.source))})"


def resolve(src: TaskSource | MediSource, budget: RetryBudget | None = None) -> ResolvedSource:
    """Resolve a source now: download (or find in the Hub cache) its snapshot and read what it is pinned to."""
    folder = None if is_local(src) else snapshot(src, budget)
    return ResolvedSource(src, folder, _identity(src, folder), describe(src, folder))


def resolved(src: TaskSource | MediSource | ResolvedSource, budget: RetryBudget | None = None) -> ResolvedSource:
    """`src` as a stage resolved it, or resolved now (a caller that reads one source once)."""
    return src if isinstance(src, ResolvedSource) else resolve(src, budget)


def _identity(src: TaskSource | MediSource, folder: Path | None) -> dict[str, Any]:
    if folder is not None:  # a branch name moves; the commit does not
        return {"hub": pin(src)[0], "commit": folder.name}
    if isinstance(src, TaskSource):
        return {"file": _file_identity(src.path), "test": _file_identity(src.test_path)}
    return {"file": _file_identity(src.path)}


def _file_identity(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    st = Path(path).stat()
    return {"path": str(Path(path).resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}
