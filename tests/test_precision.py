"""Guide precision: chosen per device, never mixed in the embedding cache, and measured against fp32."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.road.agreement import AGREEMENT_WARN, Agreement, agreement_sample, measure_agreement, neighbour_overlap
from pipeline.road.precision import choose_precision


@pytest.mark.parametrize("setting, device, cpu_bf16, label", [
    ("auto", "cuda", False, "float16"),
    ("auto", "cuda:1", True, "float16"),
    ("auto", "cpu", True, "bfloat16-autocast"),   # AMX or AVX-512 BF16
    ("auto", "cpu", False, "float32"),
    ("fp32", "cuda", False, "float32"),
    ("fp32", "cpu", True, "float32"),
    ("bf16", "cuda", False, "bfloat16"),          # CUDA casts the weights
    ("bf16", "cpu", False, "bfloat16-autocast"),  # asked for: runs (slowly) without the hardware too
    ("fp16", "cpu", True, "float16-autocast"),
])
def test_precision_is_chosen_per_device(setting, device, cpu_bf16, label):
    assert choose_precision(setting, device, cpu_bf16) == label


@pytest.mark.parametrize("setting, device, cpu_bf16, label", [
    ("auto", "cpu", True, "bfloat16-openvino"),
    ("bf16", "cpu", False, "bfloat16-openvino"),
    ("auto", "cpu", False, "float32"),            # no bf16 hardware: fp32 (torch), OpenVINO or not
    ("fp16", "cpu", True, "float16-autocast"),
    ("auto", "cuda", True, "float16"),
])
def test_with_openvino_installed_cpu_bf16_runs_in_it(setting, device, cpu_bf16, label):
    assert choose_precision(setting, device, cpu_bf16, openvino=True) == label


def test_an_unknown_precision_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="guide_precision: 'int4'"):
        choose_precision("int4", "cpu", True)


def test_the_config_accepts_the_four_settings_and_defaults_to_auto():
    from pipeline.profiles import embedded_profile

    cfg = embedded_profile()
    assert cfg.guide_precision == "auto"
    assert cfg.model_copy(update={"guide_precision": "bf16"}).guide_precision == "bf16"
    with pytest.raises(ValueError):
        type(cfg).model_validate({**cfg.model_dump(), "guide_precision": "int8"})


def _texts() -> list[str]:
    verbs = ["activate", "block", "top up", "cancel", "freeze", "replace", "verify", "close"]
    things = ["my card", "a transfer", "my account", "the app", "a refund", "my PIN"]
    return [f"how do I {v} {t} {i}" for i, (v, t) in enumerate((v, t) for v in verbs for t in things)]


def test_vectors_in_the_cache_never_mix_precisions(tmp_path, monkeypatch):
    """Two guides of different precision on one cache root: each has its own folder, neither reads the other's
    vectors, and each folder's vectors are exactly what its own precision encodes. (Both share one loaded
    MiniLM, to load it once: fp32 and bf16-under-autocast both keep fp32 weights.)"""
    import pipeline.road.embed as embed
    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road.embed import GuideEncoder
    from pipeline.road.embedding_cache import EmbeddingCache, text_hashes

    model = embed.load_encoder(embed.resolve_model(BUNDLED_MODEL), "cpu", precision="float32")
    monkeypatch.setattr(embed, "load_encoder", lambda ref, device, precision: model)

    texts = _texts()
    fp32 = GuideEncoder(BUNDLED_MODEL, None, tmp_path, batch_size=16, device="cpu", precision="fp32")
    bf16 = GuideEncoder(BUNDLED_MODEL, None, tmp_path, batch_size=16, device="cpu", precision="bf16")
    assert fp32.precision == "float32" and bf16.precision in ("bfloat16-autocast", "bfloat16-openvino")
    assert fp32.key != bf16.key and fp32.cache.dir != bf16.cache.dir
    v32, s32 = fp32.embed(texts)
    v16, s16 = bf16.embed(texts)
    assert s32.encoded == s16.encoded == len(texts) and s16.cached == 0, "bf16 read none of fp32's vectors"
    assert not np.array_equal(v32, v16), "the two precisions give different vectors"
    assert float((v32 * v16).sum(1).min()) > 0.999
    for guide, vectors in ((fp32, v32), (bf16, v16)):  # each folder, read afresh, holds its own precision only
        stored, found = EmbeddingCache(tmp_path, guide.key).lookup(text_hashes(texts))
        assert found.all() and np.array_equal(stored, vectors)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([fp32.key, bf16.key])
    # the reduced-precision guide measures itself against fp32; the fp32 one has nothing to compare
    assert fp32.agreement(texts) is None
    agreement = bf16.agreement(texts)
    assert agreement.precision == bf16.precision and agreement.sample == len(texts)
    assert agreement.top10_overlap >= 0.9 and agreement.mean_cosine > 0.999


def test_the_agreement_sample_is_fixed_whatever_the_order():
    texts = [f"text {i}" for i in range(1000)]
    sample = agreement_sample(texts, 256)
    assert len(sample) == 256 == len(set(sample))
    assert agreement_sample(list(reversed(texts)) + texts[:10], 256) == sample
    assert len(agreement_sample(texts[:5])) == 5


def test_agreement_falls_as_vectors_drift():
    rng = np.random.default_rng(0)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    x = unit(rng.standard_normal((256, 32)))
    same = measure_agreement(x, x, "bfloat16-autocast")
    assert same.top10_overlap == 1.0 and same.mean_cosine == pytest.approx(1.0) and same.ok
    drifted = measure_agreement(unit(x + 0.3 * rng.standard_normal(x.shape)), x, "float16")
    assert drifted.top10_overlap < AGREEMENT_WARN and not drifted.ok and drifted.min_cosine < drifted.mean_cosine < 1
    assert neighbour_overlap(x[:1], x[:1]) == 1.0  # one text has no neighbours: nothing can disagree
    assert neighbour_overlap(x[:3], x[:3][[0, 1, 2]]) == 1.0


def test_the_mining_check_warns_below_the_threshold_and_never_blocks(tmp_path):
    import dagster as dg

    from assets.mine import AGREEMENT_CHECK, agreement_check, agreement_metadata

    low = Agreement(precision="bfloat16-autocast", sample=256, top10_overlap=0.95, mean_cosine=0.999, min_cosine=0.99)
    high = low.model_copy(update={"top10_overlap": 0.995})
    bad, good, none = agreement_check(low, low.precision), agreement_check(high, high.precision), agreement_check(None, "float32")
    assert (bad.passed, good.passed, none.passed) == (False, True, True)
    assert bad.severity == dg.AssetCheckSeverity.WARN and "guide_precision: fp32" in bad.description
    assert bad.check_name == AGREEMENT_CHECK
    assert agreement_metadata(high, high.precision) == {
        "guide_precision": "bfloat16-autocast", "agreement_top10_overlap": 0.995, "agreement_mean_cosine": 0.999,
        "agreement_sample": 256}
    assert agreement_metadata(None, "float32") == {"guide_precision": "float32"}
    from assets.definitions import build_definitions  # the check is declared non-blocking on the mining asset
    from assets.settings import Deployment
    from pipeline.profiles import embedded_profile

    defs = build_definitions(embedded_profile(), Deployment(home=tmp_path))
    specs = [s for a in defs.assets for s in getattr(a, "check_specs", []) if s.name == AGREEMENT_CHECK]
    assert len(specs) == 1 and not specs[0].blocking


def test_the_card_lists_agreement_only_for_reduced_precision():
    from pipeline.road.agreement import Agreement
    from pipeline.road.card import MiningOutcome, _agreement
    from pipeline.road.deep_search import NegativeSources

    text = _agreement([MiningOutcome(task="Banking77Classification", negatives=NegativeSources(), agreement=Agreement(
        precision="bfloat16-autocast", sample=256, top10_overlap=0.9961, mean_cosine=0.999988, min_cosine=0.99991))])
    assert "Banking77Classification" in text and "0.9961" in text and "top-10 neighbour overlap" in text


def test_openvino_backbone_follows_fp32_when_installed():
    """Where `openvino` is installed, its bf16 backbone gives what sentence-transformers gives at fp32, within
    bf16's agreement; the torch model is left as it was (it is the fp32 reference)."""
    pytest.importorskip("openvino")
    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road.embed import embed_texts, load_encoder
    from pipeline.road.model_ref import resolve_model
    from pipeline.road.openvino_guide import OpenVINOEncoder

    model = load_encoder(resolve_model(BUNDLED_MODEL), "cpu", precision="float32")
    texts = _texts()
    before, _ = embed_texts(model, texts, None, 16)
    ov, _ = embed_texts(OpenVINOEncoder(model, "bf16"), texts, None, 16)
    after, _ = embed_texts(model, texts, None, 16)
    assert np.array_equal(before, after)
    a = measure_agreement(ov, before, "bfloat16-openvino")
    assert a.top10_overlap >= 0.95 and 0.999 < a.mean_cosine < 1.0


@pytest.mark.slow
def test_the_embedded_build_records_agreement_in_metadata_and_card(embedded_build):
    """The README's first command: each mining step's metadata and the card carry the agreement figures when
    this machine's `auto` is a reduced precision, and neither mentions agreement at fp32."""
    import dagster as dg

    from pipeline.road.precision import resolve_precision

    label = resolve_precision(device="cpu")
    card = (embedded_build / "work" / "embedded" / "build" / "README.md").read_text()
    with dg.DagsterInstance.from_config(str(embedded_build / "dagster")) as instance:
        records = instance.fetch_materializations(dg.AssetKey("mined_triplets"), limit=10).records
        metadata = {r.asset_materialization.partition: r.asset_materialization.metadata for r in records}
    assert len(metadata) == 3 and all(m["guide_precision"].value == label for m in metadata.values())
    if label == "float32":
        assert "reduced precision" not in card and not any("agreement_top10_overlap" in m for m in metadata.values())
        return
    for task, m in metadata.items():
        assert m["agreement_top10_overlap"].value >= AGREEMENT_WARN and m["agreement_sample"].value > 100
        assert f"| {task} | `{label}` |" in card
    assert "top-10 neighbour overlap" in card


def test_openvino_converts_a_guide_once_and_later_processes_read_the_kept_graph(tmp_path, monkeypatch):
    """Conversion (~5 s for MiniLM) is kept per model revision and library versions: a second encoder reads
    the graph instead of converting, and gives the same vectors bit for bit; an unreadable graph is
    converted again rather than failing the step."""
    pytest.importorskip("openvino")
    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road import openvino_guide
    from pipeline.road.embed import embed_texts, load_encoder
    from pipeline.road.model_ref import resolve_model
    from pipeline.road.precision import precision_encoder

    monkeypatch.setenv(openvino_guide.IR_CACHE_ENV, str(tmp_path))
    ref = resolve_model(BUNDLED_MODEL)
    model = load_encoder(ref, "cpu", precision="float32")
    texts = _texts()
    first = precision_encoder(model, "bfloat16-openvino", ref)
    assert first.ir_folder.parent == tmp_path
    converted, _ = embed_texts(first, texts, None, 16)
    assert (first.ir_folder / "model.xml").is_file()

    def no_conversion(module):
        raise AssertionError("converted again although the graph was kept")

    with monkeypatch.context() as m:
        m.setattr(openvino_guide, "_convert", no_conversion)
        kept, _ = embed_texts(precision_encoder(model, "bfloat16-openvino", ref), texts, None, 16)
    assert np.array_equal(converted, kept)
    (first.ir_folder / "model.xml").write_text("not a graph")
    again, _ = embed_texts(precision_encoder(model, "bfloat16-openvino", ref), texts, None, 16)
    assert np.array_equal(converted, again)
    other = openvino_guide.ir_folder(ref.name, "another-revision")
    assert other != first.ir_folder and other.parent == tmp_path


def test_gc_lists_openvino_graphs_and_removes_only_this_guides_stale_ones(tmp_path, monkeypatch):
    """A graph kept under older library versions is never read again (its key changed): gc offers it for
    removal; the current one and another guide's are kept."""
    pytest.importorskip("openvino")
    import json

    from pipeline.profiles import embedded_profile
    from pipeline.gc import collect
    from pipeline.road import openvino_guide
    from pipeline.road.model_ref import resolve_model
    from pipeline.workspace import Workspace

    monkeypatch.setenv(openvino_guide.IR_CACHE_ENV, str(tmp_path / "ov"))
    cfg = embedded_profile()
    ref = resolve_model(cfg.guide_model, cfg.guide_revision)
    current = openvino_guide.ir_folder(ref.name, ref.revision)
    for folder, label in ((current, {"name": ref.name, "revision": ref.revision}),
                          (tmp_path / "ov" / ("0" * 20), {"name": ref.name, "revision": ref.revision}),
                          (tmp_path / "ov" / ("1" * 20), {"name": "org/other-guide", "revision": "abc"})):
        folder.mkdir(parents=True)
        (folder / "model.json").write_text(json.dumps(label))
    items = {i.path: i for i in collect(Workspace(tmp_path / "home", "embedded"), cfg, None) if i.kind == "openvino"}
    assert {p for p, i in items.items() if i.remove} == {str(tmp_path / "ov" / ("0" * 20))}
    assert set(items) == {str(current), str(tmp_path / "ov" / ("0" * 20)), str(tmp_path / "ov" / ("1" * 20))}
    absent = cfg.model_copy(update={"guide_model": "org/not-in-the-cache"})  # nothing can be judged: all kept
    kept = [i for i in collect(Workspace(tmp_path / "home", "embedded"), absent, None) if i.kind == "openvino"]
    assert len(kept) == 3 and not any(i.remove for i in kept)
