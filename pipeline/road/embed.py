"""Guide-model loading and embedding through the content-addressed cache (`embedding_cache`).

Each unique text is encoded once per (model, revision, encoding settings), in batches of similar token
count, so a rebuild or a re-mine with other parameters encodes only what it has not seen.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol, Sequence

import numpy as np
from pydantic import BaseModel

from pipeline.common.progress import Progress
from pipeline.road.agreement import Agreement, agreement_sample, measure_agreement
from pipeline.road.embedding_cache import EmbeddingCache, cache_key, text_hashes
from pipeline.road.model_ref import ModelRef, resolve_model
from pipeline.road.precision import is_reduced, precision_encoder, resolve_precision, weight_dtype

log = logging.getLogger(__name__)


class Encoder(Protocol):
    def encode(self, sentences: list[str], **kwargs) -> np.ndarray: ...


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


def load_encoder(ref: ModelRef, device: str | None = None, precision: str | None = None):
    """A SentenceTransformer on the best device, its weights cast for `precision` (a label; None: this
    device's `auto`). Autocast labels keep fp32 weights: wrap the model with `precision_encoder`."""
    from sentence_transformers import SentenceTransformer

    device = _device(device)
    label = precision or resolve_precision(device=device)
    model = SentenceTransformer(ref.path, device=device)
    if label == "float16":
        model.half()
    elif (dtype := weight_dtype(label)) is not None:
        model.to(dtype)
    return model


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
    hashes = text_hashes(unique_texts)
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
    `precision` is the `guide_precision` setting (auto | fp32 | bf16 | fp16), resolved for the device. `ref`: the
    model already resolved (a later mining round's guide, `pipeline.road.rounds`), instead of `name`@`revision`.
    """

    def __init__(self, name: str, revision: str | None, cache_root: Path, batch_size: int = 64,
                 device: str | None = None, cuda_count: int | None = None, precision: str = "auto",
                 ref: ModelRef | None = None):
        self.ref = ref or resolve_model(name, revision)
        self.devices = guide_devices(device, cuda_device_count() if cuda_count is None else cuda_count)
        self.precision = resolve_precision(precision, self.devices[0])
        self.model = load_encoder(self.ref, self.devices[0], precision=self.precision)
        self.key = cache_key(self.ref, self.model.max_seq_length, self.precision)
        self.cache = EmbeddingCache(cache_root, self.key)
        self.batch_size = batch_size
        self.encoder: Encoder = (PoolEncoder(self.model, self.devices) if len(self.devices) > 1
                                 else precision_encoder(self.model, self.precision, self.ref))
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
