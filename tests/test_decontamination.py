import json

import polars as pl

from pipeline.config import BuildConfig, MediSource, TaskSource
from pipeline.workspace import Workspace
from pipeline.road.stages import Road


def _task(tmp_path, train, test, threshold):
    (tmp_path / "train.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in train))
    (tmp_path / "test.jsonl").write_text("".join(json.dumps({"text": t, "label": l}) + "\n" for t, l in test))
    cfg = BuildConfig(profile="d", medi=None, guide_model="bundled:all-MiniLM-L6-v2",
                      decontamination={"near_duplicate_threshold": threshold},
                      tasks=[TaskSource(name="Intents", kind="local", path=tmp_path / "train.jsonl",
                                        test_path=tmp_path / "test.jsonl", label_text_column=None)])
    return cfg, Workspace(tmp_path / "home", "d")


def test_exact_and_near_duplicate_leaks_are_removed_and_counted(tmp_path):
    train = [("How do I reset my PIN?", 0), ("how do i  RESET my pin?", 0), ("Where is my card, it has not arrived yet", 0),
             ("I want to close my account", 1), ("Please close my account now", 1), ("Cancel my account", 1),
             ("my card hasn't arrived yet, where is it", 0)]
    test = [("How do I reset my PIN?", 0), ("Where is my card? It hasn't arrived yet.", 0)]
    cfg, ws = _task(tmp_path, train, test, threshold=0.9)
    road = Road(cfg, ws)
    assert road.test_texts().per_task == {"Intents": 2}
    ingest = road.split("Intents")
    assert ingest.account.drops == {"test_leak": 2}  # both spellings of the exact leak
    mined = road.mine("Intents")
    assert mined.account.drops.get("test_near_duplicate", 0) >= 1
    out = pl.read_parquet(ws.triplets("Intents"))
    texts = set(out["query"]) | set(out["pos"]) | set(out["neg"])
    assert "Where is my card, it has not arrived yet" not in texts
    assert mined.account.balanced


def test_medi_rows_get_the_near_duplicate_pass_against_every_task(tmp_path):
    test = [("Where is my card? It hasn't arrived yet.", 0), ("Close my account please", 1)]
    cfg, ws = _task(tmp_path, [("a", 0), ("b", 1)], test, threshold=0.9)
    pair = lambda text: ["Represent the sentence:", text]  # noqa: E731
    medi = [  # a paraphrase of a test text as the query, as the neg, and a clean row
        {"query": pair("Where is my card, it has not arrived yet"), "pos": pair("track a card delivery"),
         "neg": pair("bananas are yellow"), "task_name": "qa"},
        {"query": pair("how tall is a giraffe"), "pos": pair("giraffes are about five metres tall"),
         "neg": pair("close my account, please"), "task_name": "qa"},
        {"query": pair("how tall is a giraffe"), "pos": pair("giraffes are about five metres tall"),
         "neg": pair("the stock market fell today"), "task_name": "qa"},
    ]
    (tmp_path / "medi-data.json").write_text(json.dumps(medi))
    cfg = cfg.model_copy(update={"medi": MediSource(kind="json", path=tmp_path / "medi-data.json")})
    Road(cfg, ws).test_texts()
    loads = []

    def guide(ref):
        loads.append(1)
        return Road(cfg, ws).guide_encoder(ref)

    report = Road(cfg, ws).medi(guide)
    assert report.account.model_dump() == {"source": "MEDI", "rows_in": 3, "rows_out": 1,
                                           "drops": {"test_near_duplicate": 2}}
    assert pl.read_parquet(ws.medi_rows())["neg"].to_list() == ["the stock market fell today"]
    assert loads == [1]
    off = cfg.model_copy(update={"decontamination": cfg.decontamination.model_copy(update={"near_duplicate_threshold": None})})
    assert Road(off, ws).medi(guide).account.rows_out == 3 and loads == [1], "no pass, no model load"


def test_the_medi_near_duplicate_pass_is_redone_when_the_guide_s_precision_changes(tmp_path):
    """MEDI's near-duplicate pass is fingerprinted by the guide as resolved (name, exact revision, precision),
    as mining is: vectors of another precision may find other near duplicates."""
    from pipeline.road.model_ref import resolve_model
    from pipeline.road.ingest import ingest_medi

    cfg, ws = _task(tmp_path, [("a", 0), ("b", 1)], [("Close my account please", 1)], threshold=0.9)
    pair = lambda text: ["Represent the sentence:", text]  # noqa: E731
    (tmp_path / "medi-data.json").write_text(json.dumps([
        {"query": pair("how tall is a giraffe"), "pos": pair("five metres"), "neg": pair("close my account"),
         "task_name": "qa"}]))
    cfg = cfg.model_copy(update={"medi": MediSource(kind="json", path=tmp_path / "medi-data.json")})
    Road(cfg, ws).test_texts()
    ref = resolve_model(cfg.guide_model, cfg.guide_revision)
    embed = lambda: Road(cfg, ws).guide_encoder().vectors  # noqa: E731

    first = ingest_medi(ws, cfg.medi, cfg.decontamination, guide=ref.identity("float32"), embed=embed)
    assert ingest_medi(ws, cfg.medi, cfg.decontamination, guide=ref.identity("float32"), embed=embed).reused
    again = ingest_medi(ws, cfg.medi, cfg.decontamination, guide=ref.identity("bfloat16-autocast"), embed=embed)
    assert not again.reused and again.fingerprint != first.fingerprint
