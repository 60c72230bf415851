"""A rerun reuses every stage output whose inputs and settings are unchanged, and redoes exactly the rest."""

import json

from pipeline.config import BuildConfig, MiningConfig, TaskSource
from pipeline.stages import GuideEncoder, Workspace, collect_test_texts, ingest_task, mine_task

TRAIN = [("reset my pin", 0), ("change my pin code", 0), ("forgot my pin", 0),
         ("close my account", 1), ("delete my account", 1), ("shut down my account", 1),
         ("card not arrived", 2), ("where is my new card", 2), ("card delivery status", 2)]


def _cfg(tmp_path, **mining):
    if (tmp_path / "train.jsonl").exists():  # written once: a rewrite is a changed source
        return _config(tmp_path, mining)
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in TRAIN))
    (tmp_path / "test.jsonl").write_text(json.dumps({"text": "pin reset please", "label": 0}) + "\n")
    return _config(tmp_path, mining)


def _config(tmp_path, mining):
    return BuildConfig(profile="r", medi=None, guide_model="bundled:all-MiniLM-L6-v2", mining=MiningConfig(**mining),
                       tasks=[TaskSource(name="Intents", kind="local", path=tmp_path / "train.jsonl",
                                         test_path=tmp_path / "test.jsonl", label_text_column=None)])


def test_unchanged_stages_are_reused_and_changed_ones_redone(tmp_path):
    cfg = _cfg(tmp_path)
    ws = Workspace(tmp_path / "home", "r")
    loads = []

    def guide():
        loads.append(1)
        return GuideEncoder(cfg, ws)

    first = [collect_test_texts(cfg, ws), ingest_task(cfg, ws, "Intents"), mine_task(cfg, ws, "Intents", guide)]
    assert not any(r.get("reused") for r in first) and loads == [1]
    outputs = [ws.test_texts(), ws.split("Intents"), ws.triplets("Intents")]
    stamps = [p.stat().st_mtime_ns for p in outputs]

    again = [collect_test_texts(cfg, ws), ingest_task(cfg, ws, "Intents"), mine_task(cfg, ws, "Intents", guide)]
    assert all(r["reused"] for r in again) and loads == [1], "nothing redone, the model not even loaded"
    assert [p.stat().st_mtime_ns for p in outputs] == stamps
    assert [r["fingerprint"] for r in again] == [r["fingerprint"] for r in first]

    other = _cfg(tmp_path, negative_strategy="uniform")  # other mining settings: mining only is redone
    assert ingest_task(other, ws, "Intents")["reused"]
    remined = mine_task(other, ws, "Intents", lambda: GuideEncoder(other, ws))
    assert not remined.get("reused") and remined["encode"]["encoded"] == 0, "embeddings came from the cache"

    (tmp_path / "train.jsonl").write_text((tmp_path / "train.jsonl").read_text() + '{"text": "new text", "label": 1}\n')
    changed = ingest_task(other, ws, "Intents")  # the source file changed: ingest and mining are redone
    assert not changed.get("reused") and changed["account"]["rows_in"] == len(TRAIN) + 1
    assert not mine_task(other, ws, "Intents", lambda: GuideEncoder(other, ws)).get("reused")
