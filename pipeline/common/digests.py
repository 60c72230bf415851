"""The sha256 of each file under a folder: what a published version's manifest records and what a kept
OpenVINO graph is checked against before it is used."""

from __future__ import annotations

import hashlib
from pathlib import Path


def file_digests(folder: Path, exclude: frozenset[str] = frozenset()) -> dict[str, str]:
    """Path (relative, POSIX) -> sha256 of every file under `folder`, except the paths in `exclude`."""
    folder = Path(folder)
    out = {}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if path.is_file() and name not in exclude:
            with path.open("rb") as fh:
                out[name] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out
