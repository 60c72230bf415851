"""The embedding cache: vectors keyed by text hash under one encoding setup, in immutable chunk files.

Chunks are named by their content and appear only by an atomic rename, so a killed run keeps every chunk it
finished, and workers sharing one folder (a team's home, several Dagster workers) never read half a chunk.
"""

from __future__ import annotations

import hashlib
import logging
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from pipeline.common.atomic import atomic_path

if TYPE_CHECKING:
    from pipeline.road.model_ref import ModelRef

log = logging.getLogger(__name__)


def cache_key(ref: ModelRef, max_seq_length: int | None, precision: str, normalize: bool = True) -> str:
    """Cache key of an encoding setup: everything that changes the vectors (fp16 on CUDA, bf16 under autocast
    and fp32 give different vectors, so the precision label is part of it); batch size and device index are not."""
    key = f"{ref.name}|{ref.revision}|{max_seq_length}|normalize={normalize}|precision={precision}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def text_hashes(texts: Sequence[str]) -> np.ndarray:
    """SHA-256 of each text: the cache's key for its vector."""
    return np.array([hashlib.sha256(t.encode("utf-8")).digest() for t in texts], dtype="S32")


class EmbeddingCache:
    """Vectors keyed by text hash under one encoding fingerprint, in immutable `.npz` chunks."""

    def __init__(self, root: Path, key: str):
        self.dir = Path(root) / key
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: dict[bytes, tuple[Path, int]] = {}
        self._chunks: set[str] = set()
        self.refresh()

    def refresh(self) -> int:
        """Index chunks written since (e.g. by another worker sharing this folder); returns how many.

        Chunks are immutable and named by their content, and appear only by an atomic rename, so a chunk
        seen here is complete; two workers storing the same texts write the same name and either copy is valid.
        """
        new = 0
        for chunk in sorted(self.dir.glob("chunk-*.npz")):
            if chunk.name in self._chunks:
                continue
            try:
                with np.load(chunk) as z:
                    hashes = z["hashes"]
            except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
                # a chunk cut short by a power loss before fsync-then-rename existed: its texts are encoded again
                log.warning("embedding cache: %s is unreadable (%s): removed, its texts will be encoded again",
                            chunk.name, type(exc).__name__)
                chunk.unlink(missing_ok=True)
                continue
            for i, h in enumerate(hashes):
                self._index.setdefault(bytes(h), (chunk, i))
            self._chunks.add(chunk.name)
            new += 1
        return new

    def __len__(self) -> int:
        return len(self._index)

    def lookup(self, hashes: np.ndarray, dim: int | None = None) -> tuple[np.ndarray | None, np.ndarray]:
        """(vectors with rows for found hashes, found mask)."""
        found = np.array([bytes(h) in self._index for h in hashes], dtype=bool)
        if not found.any():
            return None, found
        by_chunk: dict[Path, list[tuple[int, int]]] = {}
        for pos in np.flatnonzero(found):
            chunk, row = self._index[bytes(hashes[pos])]
            by_chunk.setdefault(chunk, []).append((pos, row))
        out = None
        for chunk, pairs in by_chunk.items():
            with np.load(chunk) as z:
                vecs = z["vectors"]
                if out is None:
                    out = np.zeros((len(hashes), vecs.shape[1]), dtype=np.float32)
                pos, rows = zip(*pairs)
                out[list(pos)] = vecs[list(rows)]
        return out, found

    def store(self, hashes: np.ndarray, vectors: np.ndarray) -> None:
        name = hashlib.sha256(hashes.tobytes()).hexdigest()[:24]
        final = self.dir / f"chunk-{name}.npz"
        if not final.exists():
            with atomic_path(final) as tmp, open(tmp, "wb") as f:
                np.savez(f, hashes=hashes, vectors=vectors.astype(np.float32))
        self._chunks.add(final.name)
        for i, h in enumerate(hashes):
            self._index[bytes(h)] = (final, i)
