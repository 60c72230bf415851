"""A rerun reuses every stage output whose inputs and settings are unchanged, and redoes exactly the rest."""

import json

import pytest

from pipeline.config import BuildConfig, MiningConfig, TaskSource
from pipeline.road import mine
from pipeline.workspace import StageSpec, Workspace
from pipeline.road.stages import Road

TRAIN = [("reset my pin", 0), ("change my pin code", 0), ("forgot my pin", 0),
         ("close my account", 1), ("delete my account", 1), ("shut down my account", 1),
         ("card not arrived", 2), ("where is my new card", 2), ("card delivery status", 2)]


def _cfg(tmp_path, encode_batch_size=64, **mining):
    if not (tmp_path / "train.jsonl").exists():  # written once: a rewrite is a changed source
        (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in TRAIN))
        (tmp_path / "test.jsonl").write_text(json.dumps({"text": "pin reset please", "label": 0}) + "\n")
    return BuildConfig(profile="r", medi=None, guide_model="bundled:all-MiniLM-L6-v2", mining=MiningConfig(**mining),
                       encode_batch_size=encode_batch_size,
                       tasks=[TaskSource(name="Intents", kind="local", path=tmp_path / "train.jsonl",
                                         test_path=tmp_path / "test.jsonl", label_text_column=None)])


@pytest.mark.slow
def test_unchanged_stages_are_reused_and_changed_ones_redone(tmp_path, monkeypatch):
    cfg = _cfg(tmp_path)
    ws = Workspace(tmp_path / "home", "r")
    road = Road(cfg, ws)
    loads = []

    def guide(ref):
        loads.append(1)
        return road.guide_encoder(ref)

    first = [road.test_texts(), road.split("Intents"), road.mine("Intents", guide)]
    assert not any(r.reused for r in first) and loads == [1]
    outputs = [ws.test_texts(), ws.split("Intents"), ws.triplets("Intents")]
    stamps = [p.stat().st_mtime_ns for p in outputs]

    again = [road.test_texts(), road.split("Intents"), road.mine("Intents", guide)]
    assert all(r.reused for r in again) and loads == [1], "nothing redone, the model not even loaded"
    assert [p.stat().st_mtime_ns for p in outputs] == stamps
    assert [r.fingerprint for r in again] == [r.fingerprint for r in first]

    # performance knobs are declared as ignored: changing them redoes nothing
    faster = Road(_cfg(tmp_path, encode_batch_size=8, query_batch=2), ws)
    assert faster.mine("Intents", guide).reused and loads == [1]

    # a new stage version (the asset's code version too) redoes that stage, and only it
    monkeypatch.setattr(mine, "SPEC", StageSpec(mine.SPEC.name, mine.SPEC.version + "-next", mine.SPEC.ignore))
    assert road.split("Intents").reused
    assert not road.mine("Intents", guide).reused and loads == [1, 1]
    monkeypatch.undo()

    other = Road(_cfg(tmp_path, negative_strategy="uniform"), ws)  # other mining settings: mining only is redone
    assert other.split("Intents").reused
    remined = other.mine("Intents")
    assert not remined.reused and remined.encode.encoded == 0, "embeddings came from the cache"

    (tmp_path / "train.jsonl").write_text((tmp_path / "train.jsonl").read_text() + '{"text": "new text", "label": 1}\n')
    changed = other.split("Intents")  # the source file changed: ingest and mining are redone
    assert not changed.reused and changed.account.rows_in == len(TRAIN) + 1
    assert not other.mine("Intents").reused


def test_stage_spec_hashes_semantic_settings_only():
    spec = StageSpec("s", "1", frozenset({"mining.query_batch"}))
    base = {"mining": MiningConfig(), "seed": 1}
    fp = spec.identify(base, {"up": "abc"})
    assert spec.identify({"mining": MiningConfig(query_batch=7), "seed": 1}, {"up": "abc"}) == fp
    assert spec.identify({"mining": MiningConfig(margin=0.1), "seed": 1}, {"up": "abc"}) != fp
    assert spec.identify(base, {"up": "abd"}) != fp
    assert StageSpec("s", "2", spec.ignore).identify(base, {"up": "abc"}) != fp
    assert "mining.query_batch" not in spec.settings(base) and "mining.margin" in spec.settings(base)
    with pytest.raises(ValueError, match=r"ignores \['guide.batch_size'\], which its settings do not hold"):
        StageSpec("s", "1", frozenset({"guide.batch_size"})).identify(base, {})
