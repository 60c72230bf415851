"""Multi-GPU guide encoding: which devices the guide uses (tested with fake device counts; no GPU here), and
that the multi-process pool path gives the same vectors as one process (run with two CPU processes)."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.road.embed import GuideEncoder, PoolEncoder, embed_texts, guide_devices


@pytest.mark.parametrize("device, count, expected", [
    (None, 0, ["cpu"]),
    (None, 1, ["cuda"]),
    (None, 2, ["cuda:0", "cuda:1"]),
    (None, 4, ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]),
    ("cuda:1", 4, ["cuda:1"]),          # pinned: that device alone, never a pool
    ("cpu", 8, ["cpu"]),
    ("", 2, ["cuda:0", "cuda:1"]),      # GISTFORGE_GUIDE_DEVICE= (empty) is not a pin
])
def test_guide_devices(device, count, expected):
    assert guide_devices(device, count) == expected


def test_guide_encoder_uses_a_pool_only_with_several_devices(tmp_path, monkeypatch):
    import pipeline.road.embed as embed

    loaded = []
    monkeypatch.setattr(embed, "load_encoder", lambda ref, device, **_: loaded.append(device) or _Fake())
    monkeypatch.setattr(embed, "resolve_model", lambda name, rev: embed.ModelRef(name, "/x", "r"))
    one = GuideEncoder("m", None, tmp_path, cuda_count=1)
    assert one.devices == ["cuda"] and not isinstance(one.encoder, PoolEncoder) and one.precision == "float16"
    many = GuideEncoder("m", None, tmp_path, cuda_count=3)
    assert isinstance(many.encoder, PoolEncoder) and many.encoder.devices == ["cuda:0", "cuda:1", "cuda:2"]
    assert many.encoder.pool is None  # started on the first encode, not at load
    # fp16 on CUDA either way, so one and several GPUs share the cache key (device index is not in it)
    assert many.key == one.key and many.precision == "float16"
    pinned = GuideEncoder("m", None, tmp_path, device="cpu", cuda_count=3, precision="fp32")
    assert pinned.devices == ["cpu"] and pinned.precision == "float32" and pinned.key != one.key
    assert loaded == ["cuda", "cuda:0", "cpu"]


class _Fake:
    max_seq_length = 16
    tokenizer = None


@pytest.mark.slow
def test_pool_path_matches_one_process(tmp_path):
    """The pool code path (here two CPU processes stand in for two GPUs) gives the vectors of one process."""
    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road.embed import load_encoder
    from pipeline.road.model_ref import resolve_model

    model = load_encoder(resolve_model(BUNDLED_MODEL), "cpu")
    texts = [f"how do I {verb} my card number {i}" for i, verb in enumerate(["activate", "block", "top up"] * 7)]
    single, _ = embed_texts(model, texts, None, batch_size=8)
    pooled = PoolEncoder(load_encoder(resolve_model(BUNDLED_MODEL), "cpu"), ["cpu", "cpu"])
    try:
        vecs, stats = embed_texts(pooled, texts, None, batch_size=8)
        assert pooled.pool is not None and len(pooled.pool["processes"]) == 2
    finally:
        pooled.close()
    assert stats.encoded == len(texts)
    np.testing.assert_allclose(vecs, single, atol=1e-5)
