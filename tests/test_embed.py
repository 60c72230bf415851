"""Embedding: each unique text encoded once, in token-sorted batches, with the same vectors as a plain encode."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline.road.model_ref import BUNDLED_MODEL
from pipeline.road.embed import embed_texts, load_encoder, token_lengths
from pipeline.road.model_ref import resolve_model
from pipeline.road.embedding_cache import EmbeddingCache, cache_key

SAMPLE = Path(__file__).resolve().parents[1] / "pipeline" / "sample" / "hf-hub-cache"


class Recording:
    """Wraps a real encoder and keeps every batch it was asked to encode."""

    def __init__(self, model):
        self.model = model
        self.tokenizer = model.tokenizer
        self.max_seq_length = model.max_seq_length
        self.batches: list[list[str]] = []

    def encode(self, sentences, **kwargs):
        self.batches.append(list(sentences))
        return self.model.encode(sentences, **kwargs)


@pytest.fixture(scope="module")
def minilm():
    ref = resolve_model(BUNDLED_MODEL)
    return ref, load_encoder(ref, "cpu")


def _sample_texts() -> list[str]:
    """80 of Banking77's short utterances and 6 of IMDB's long reviews: lengths from 3 to 512+ tokens."""
    texts = []
    for path in sorted(SAMPLE.glob("datasets--mteb--*/snapshots/*/train.jsonl")):
        rows = [json.loads(line)["text"] for line in path.read_text().split("\n") if line]
        texts += rows[:6] if "imdb" in str(path) else rows[:80]
    return texts


def _padded(model, batches: list[list[str]]) -> int:
    return sum(int(token_lengths(model, b).max()) * len(b) for b in batches)


def test_vectors_match_plain_encode_and_each_text_is_encoded_once(minilm, tmp_path):
    ref, model = minilm
    texts = _sample_texts()
    texts = texts + texts[:50]  # duplicates are encoded once and mapped back
    rec = Recording(model)
    vecs, stats = embed_texts(rec, texts, EmbeddingCache(tmp_path, cache_key(ref, model.max_seq_length, "float32")), 16)
    plain = model.encode(texts, batch_size=16, normalize_embeddings=True, convert_to_numpy=True)
    assert vecs.shape == plain.shape and vecs.dtype == np.float32
    assert float((vecs * plain).sum(1).min()) > 0.9999
    encoded = [t for b in rec.batches for t in b]
    assert sorted(encoded) == sorted(set(texts)) and stats.encoded == len(set(texts)) == stats.unique
    # batches come longest first by token count, and pad less than sentence-transformers' character sort
    maxima = [int(token_lengths(model, b).max()) for b in rec.batches]
    assert maxima == sorted(maxima, reverse=True)
    by_chars = sorted(set(texts), key=len, reverse=True)
    assert _padded(model, rec.batches) <= _padded(model, [by_chars[i:i + 16] for i in range(0, len(by_chars), 16)])
    # a second pass reads everything from the cache
    rec.batches.clear()
    again, stats = embed_texts(rec, texts, EmbeddingCache(tmp_path, cache_key(ref, model.max_seq_length, "float32")), 16)
    assert rec.batches == [] and stats.cached == stats.unique and np.array_equal(again, vecs)


def test_token_lengths_follow_truncation(minilm):
    _, model = minilm
    long = "word " * 2000
    lengths = token_lengths(model, ["hi", long])
    assert lengths[0] == 3 and lengths[1] == model.max_seq_length


def test_encoders_without_a_tokenizer_are_sorted_by_characters():
    class Fake:
        def __init__(self):
            self.batches = []

        def encode(self, sentences, **kwargs):
            self.batches.append(list(sentences))
            v = np.array([[len(s), 1.0] for s in sentences], dtype=np.float32)
            return v / np.linalg.norm(v, axis=1, keepdims=True)

    fake = Fake()
    texts = ["a", "ccc", "bb", "dddd", "a"]
    vecs, stats = embed_texts(fake, texts, None, 2)
    assert fake.batches == [["dddd", "ccc"], ["bb", "a"]] and stats.encoded == 4
    assert np.allclose(vecs[0], vecs[4]) and np.allclose(np.linalg.norm(vecs, axis=1), 1)


def test_cache_key_separates_what_changes_vectors():
    from pipeline.road.model_ref import ModelRef

    ref = ModelRef("m", "/models/m", "r1")
    key = cache_key(ref, 256, "float32")
    assert cache_key(ref, 256, "float16") != key, "fp16 (CUDA) and fp32 (CPU) vectors never share a key"
    assert cache_key(ref, 128, "float32") != key and cache_key(ModelRef("m", "/x", "r2"), 256, "float32") != key
    assert cache_key(ModelRef("m", "/elsewhere/m", "r1"), 256, "float32") == key, "the folder is not the model"


def test_a_local_model_folder_is_named_by_its_files_not_its_path(tmp_path):
    """The same model folder in two places gives the same name and revision (so the same card, tag and embedding
    cache); a changed file gives another revision; an explicit revision is kept."""
    import shutil

    bundled = Path(resolve_model(BUNDLED_MODEL).path)
    a, b = tmp_path / "a" / "guide", tmp_path / "b" / "deeper" / "guide"
    shutil.copytree(bundled, a)
    shutil.copytree(bundled, b)
    ra, rb = resolve_model(str(a)), resolve_model(str(b))
    assert (ra.name, ra.revision) == (rb.name, rb.revision) == ("guide", ra.revision)
    assert ra.revision.startswith("local-") and str(tmp_path) not in ra.name + ra.revision
    assert ra.path == str(a.resolve())
    (b / "config.json").write_text((b / "config.json").read_text() + "\n")
    assert resolve_model(str(b)).revision != ra.revision
    assert resolve_model(str(a), "v2").revision == "v2"


def test_a_chunk_cut_short_by_a_power_loss_is_dropped_not_fatal(tmp_path, caplog):
    """Issue 23 #10: a zero-length chunk (a rename that reached the disk before its data) made every cache
    refresh crash; now it is removed with a warning and its texts count as not cached."""
    from pipeline.road.embedding_cache import EmbeddingCache

    cache = EmbeddingCache(tmp_path, "k")
    cache.store(np.frombuffer(b"a" * 16, dtype="S16"), np.ones((1, 4), np.float32))
    (tmp_path / "k" / "chunk-000000000000000000000000.npz").write_bytes(b"")
    again = EmbeddingCache(tmp_path, "k")
    assert len(again) == 1 and "unreadable" in caplog.text
    assert sorted(p.name for p in (tmp_path / "k").iterdir()) == [p.name for p in cache.dir.glob("chunk-*.npz")]
