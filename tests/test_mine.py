import sys
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pipeline.config import MiningConfig
from pipeline.road.miner import margin_limit, mine_triplets
from tests.conftest import clustered


def _mine(x, y, cfg=MiningConfig(), seed=0, task="t"):
    return mine_triplets(x, y, cfg, seed=seed, task=task)


def _check_invariants(r, labels, cfg):
    assert (r.query != r.pos).all(), "positive is the query itself"
    assert (r.query != r.neg).all(), "negative is the query itself"
    assert (labels[r.query] == labels[r.pos]).all(), "positive from another label"
    assert (labels[r.query] != labels[r.neg]).all(), "negative shares the query's label"
    if cfg.negative_strategy != "uniform":
        # the guard, stated independently: the negative is below the positive by more than the margin, which is
        # a fraction of the positive's magnitude (relative) or a fixed amount (absolute)
        gap = r.pos_score - r.neg_score
        needed = cfg.margin * np.abs(r.pos_score) if cfg.margin_type == "relative" else np.full_like(gap, cfg.margin)
        assert (gap > needed - 1e-6).all(), "negative violates the margin guard"


@pytest.mark.parametrize("strategy", ["hard", "topk_random", "uniform"])
def test_every_row_gets_a_valid_triplet(strategy):
    x, y = clustered(600, 8, seed=1)
    cfg = MiningConfig(negative_strategy=strategy)
    r = _mine(x, y, cfg, seed=3, task="t")
    _check_invariants(r, y, cfg)
    assert len(r.query) + sum(r.stats.drops.values()) == 600
    assert len(r.query) >= 0.99 * 600
    assert np.array_equal(np.sort(r.query), r.query)


def test_deterministic_for_a_seed_and_seed_sensitive():
    x, y = clustered(400, 5, seed=2)
    cfg = MiningConfig(negative_strategy="topk_random")
    a, b = _mine(x, y, cfg, 7, "t"), _mine(x, y, cfg, 7, "t")
    c = _mine(x, y, cfg, 8, "t")
    assert np.array_equal(a.pos, b.pos) and np.array_equal(a.neg, b.neg)
    assert not (np.array_equal(a.pos, c.pos) and np.array_equal(a.neg, c.neg))


def test_hard_negative_is_the_most_similar_other_label_text_that_passes_the_guard():
    x, y = clustered(300, 4, seed=4)
    cfg = MiningConfig(negative_strategy="hard", negative_depth=300)
    r = _mine(x, y, cfg, 0, "t")
    sims = x @ x.T
    for q, ps, n in zip(r.query[:50], r.pos_score[:50], r.neg[:50]):
        other = np.flatnonzero(y != y[q])
        allowed = other[ps - sims[q, other] > cfg.margin * abs(ps)]
        assert n == allowed[np.argmax(sims[q, allowed])]


def test_positive_prefers_near_neighbours_at_low_temperature():
    x, y = clustered(300, 3, seed=5)
    r = _mine(x, y, MiningConfig(positive_temperature=1e-4), 0, "t")
    sims = x @ x.T
    for q, p in zip(r.query[:50], r.pos[:50]):
        same = np.flatnonzero((y == y[q]) & (np.arange(len(y)) != q))
        assert p == same[np.argmax(sims[q, same])]


def test_single_member_and_single_label_inputs_are_counted_not_lost():
    x, y = clustered(50, 1, seed=6)
    r = _mine(x, y, MiningConfig(), 0, "t")
    assert len(r.query) == 0 and r.stats.drops == {"no_other_label": 50}
    y2 = np.r_[np.zeros(49, int), [1]]
    r = _mine(x, y2, MiningConfig(), 0, "t")
    assert r.stats.drops["single_member_label"] == 1
    assert len(r.query) + sum(r.stats.drops.values()) == 50
    assert set(r.neg) == {49}


@settings(max_examples=40, deadline=None)
@given(n=st.integers(4, 80), n_labels=st.integers(2, 6), seed=st.integers(0, 10_000),
       strategy=st.sampled_from(["hard", "topk_random", "uniform"]), margin=st.floats(0, 0.5),
       margin_type=st.sampled_from(["relative", "absolute"]), top_k=st.integers(1, 20))
def test_mining_invariants_on_random_label_sets(n, n_labels, seed, strategy, margin, margin_type, top_k):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, n_labels, n)
    x = rng.normal(size=(n, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    cfg = MiningConfig(negative_strategy=strategy, margin=margin, margin_type=margin_type, positive_top_k=top_k,
                       negative_depth=8, fallback_tries=8)
    r = _mine(x, y, cfg, seed, "t")
    _check_invariants(r, y, cfg)
    assert len(r.query) + sum(r.stats.drops.values()) == n
    counts = np.bincount(y, minlength=n_labels)
    eligible = counts[y] >= 2
    if strategy == "uniform" and (counts > 0).sum() >= 2:
        assert len(r.query) == eligible.sum()


@pytest.mark.parametrize("strategy", ["hard", "topk_random"])
def test_several_negatives_per_query_are_distinct(strategy):
    x, y = clustered(300, 5, seed=7)
    cfg = MiningConfig(negative_strategy=strategy, negatives_per_query=3)
    r = _mine(x, y, cfg, 0, "t")
    _check_invariants(r, y, cfg)
    pairs = set(zip(r.query.tolist(), r.neg.tolist()))
    assert len(pairs) == len(r.query), "a query got the same negative twice"
    assert np.bincount(r.query).max() == 3 and r.stats.queries_with_triplet == 300


def test_ivf_search_keeps_the_invariants_and_reports_recall():
    x, y = clustered(3000, 6, dim=32, seed=8)
    cfg = MiningConfig(approx_above=1000, ivf_nprobe=8)
    r = _mine(x, y, cfg, 0, "t")
    _check_invariants(r, y, cfg)
    assert r.stats.search == "ivf" and 0.5 <= r.stats.recall_at_10 <= 1.0
    assert len(r.query) >= 0.99 * 3000


def test_missing_faiss_names_the_extra_to_install(monkeypatch):
    import pipeline.road.search as search_module

    monkeypatch.setitem(sys.modules, "faiss", None)  # as if neither extra were installed
    with pytest.raises(ImportError, match=r"gistforge\[cpu\].*faiss-gpu-cu12"):
        search_module.flat_index(np.zeros((2, 4), dtype=np.float32))


def test_with_a_gpu_every_index_moves_to_it_and_large_tasks_search_exactly(monkeypatch):
    """No GPU here: FAISS's GPU hand-off is recorded instead, to check what is chosen when one is present."""
    import faiss

    import pipeline.road.search as search_module

    x, y = clustered(3000, 6, dim=32, seed=8)
    order = np.argsort(y, kind="stable")
    x, y = x[order], y[order]
    cfg = MiningConfig(approx_above=1000, negative_strategy="hard")
    cpu = _mine(x, y, cfg.model_copy(update={"approx_above": 10**6}), 0, "t")  # exact on CPU
    moved = []
    monkeypatch.setattr(search_module, "gpu_count", lambda: 1)
    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", lambda index: moved.append(index.ntotal) or index, raising=False)
    gpu = _mine(x, y, cfg, 0, "t")
    assert gpu.stats.search != "ivf" and gpu.stats.recall_at_10 is None  # exact despite approx_above
    assert moved and all(n > 0 for n in moved)  # every FAISS index went through the GPU hand-off
    _check_invariants(gpu, y, cfg)
    # the same triplets as the CPU's exact search (FAISS's flat kernel instead of numpy's: ties may differ)
    assert np.array_equal(gpu.query, cpu.query) and (gpu.pos == cpu.pos).mean() > 0.99 and (gpu.neg == cpu.neg).mean() > 0.99


def test_with_cuda_the_guide_encodes_in_fp16_on_it(monkeypatch):
    import sentence_transformers
    import torch

    from pipeline.road.embed import load_encoder

    from pipeline.road.model_ref import ModelRef

    class Fake:
        def __init__(self, path, device):
            self.path, self.device, self.dtype = path, device, "fp32"

        def half(self):
            self.dtype = "fp16"
            return self

    monkeypatch.setattr(sentence_transformers, "SentenceTransformer", Fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    ref = ModelRef("m", "/models/m", "r")
    assert (load_encoder(ref).device, load_encoder(ref).dtype) == ("cuda", "fp16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert (load_encoder(ref).device, load_encoder(ref).dtype) == ("cpu", "fp32")


def test_low_ivf_recall_is_reported_with_what_to_change(caplog):
    x, y = clustered(3000, 6, dim=32, seed=8, noise=2.0)  # diffuse clusters: one probe misses most neighbours
    r = _mine(x, y, MiningConfig(approx_above=1000, ivf_nprobe=1), 0, "Diffuse")
    assert r.stats.recall_at_10 < 0.9
    assert any("Diffuse: IVF recall@10" in m and "ivf_nprobe" in m for m in caplog.messages)


def test_relative_margin_holds_when_the_positive_scores_below_zero():
    """sim(q, p) = -0.5 and the only other-label text scores -0.49: closer than the positive, so not a negative.

    The old guard `pos * (1 - margin)` = -0.475 let it through; `pos - |pos| * margin` = -0.525 does not.
    """
    angle = lambda deg: [np.cos(np.radians(deg)), np.sin(np.radians(deg))]  # noqa: E731
    near_neg = np.degrees(np.arccos(-0.49))
    x = np.array([angle(0), angle(120), angle(near_neg)], dtype=np.float32)
    y = np.array([0, 0, 1])
    assert -0.49 < -0.5 * (1 - 0.05), "the old formula would have accepted it"
    assert margin_limit(np.array([-0.5]), 0.05, "relative")[0] == -0.525
    assert margin_limit(np.array([0.5]), 0.05, "relative")[0] == 0.475  # unchanged for positive scores
    r = _mine(x, y, MiningConfig(margin=0.05, fallback_tries=8))
    assert 0 not in r.query, "query 0 must get no negative: its only candidate is closer than its positive"
    assert r.stats.drops == {"no_negative": 2, "single_member_label": 1}
    r = _mine(x, y, MiningConfig(margin=0.0, margin_type="absolute", fallback_tries=8))
    assert 0 not in r.query, "even with no margin, a candidate above the positive never passes"


def test_every_mining_and_training_knob_is_documented_by_its_field():
    """The models' field descriptions are the knobs' documentation (`gistforge config --schema` prints them):
    the miner takes `MiningConfig` as it is, so there is no second list of keywords or defaults to keep in step."""
    import inspect

    from pipeline.config import CleanConfig, TrainConfig

    assert list(inspect.signature(mine_triplets).parameters) == ["embeddings", "labels", "settings", "seed", "task"]
    for model in (MiningConfig, CleanConfig, TrainConfig):
        undocumented = [n for n, f in model.model_fields.items() if not (f.description or "").strip()]
        assert not undocumented, f"{model.__name__} fields without a description: {undocumented}"


def test_the_readme_s_mining_table_lists_every_knob_with_its_default():
    """The README's option table is checked against `MiningConfig` / `CleanConfig`: a knob added to the model
    and left out of the table (or a default changed in one only) fails here."""
    import re
    from pathlib import Path

    from pipeline.config import CleanConfig

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    table = readme.split("### Mining options")[1].split("\n\n")[1]
    rows = {}
    for line in table.splitlines()[2:]:
        names, default = [c.strip() for c in line.strip("|").split("|")[:2]]
        for name, value in zip(re.findall(r"`([\w.]+)`", names), [d.strip(" `") for d in default.split(",")]):
            rows[name] = value
    spelled = {None: "none", True: "true", False: "false"}
    for prefix, model in (("", MiningConfig()), ("clean.", CleanConfig())):
        for name, value in model.model_dump().items():
            assert prefix + name in rows, f"README's mining table has no row for {prefix}{name}"
            if name != "ivf_nlist":  # documented as ~sqrt(N)
                want = spelled.get(value, str(value)) if not isinstance(value, (int, float)) or isinstance(value, bool) \
                    else str(value)
                assert rows[prefix + name] == want, f"{prefix}{name}: README says {rows[prefix + name]}, config {want}"
