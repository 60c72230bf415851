"""Realism checks on the real Banking77 split in ../shared/data (skipped when that folder is absent)."""

import shutil

import polars as pl
import pytest

from pipeline.config import BuildConfig, TaskSource
from pipeline.road.sources import load_task_split
from pipeline.workspace import Workspace
from pipeline.road.stages import Road
from tests.conftest import SHARED_DATA

CACHE = SHARED_DATA / "hf-hub-cache"
pytestmark = [pytest.mark.slow, pytest.mark.skipif(not (CACHE / "datasets--mteb--banking77").is_dir(),
                                                   reason="../shared/data is not present")]


def test_every_eligible_banking77_row_yields_a_triplet(tmp_path):
    cfg = BuildConfig(profile="real", medi=None, guide_model="bundled:all-MiniLM-L6-v2",
                      tasks=[TaskSource(name="Banking77Classification", cache_dir=CACHE)])
    ws = Workspace(tmp_path, cfg.profile)
    road = Road(cfg, ws)
    assert road.test_texts().per_task == {"Banking77Classification": 3080}
    ingest = road.split("Banking77Classification")
    assert ingest.account.rows_in == 10_003 and ingest.labels == 77
    acc = road.mine("Banking77Classification").account
    assert acc.rows_in == ingest.account.rows_out
    assert acc.rows_out == acc.rows_in and acc.drops == {}
    df = pl.read_parquet(ws.triplets("Banking77Classification"))
    assert (df["query_label"] != df["neg_label"]).sum() == df.height
    assert df["task_type"].unique().to_list() == ["mteb_banking77"]
    assert (df["query"] != df["pos"]).all() and (df["query"] != df["neg"]).all()


def test_planted_test_texts_are_removed_and_counted(tmp_path):
    """Banking77 and IMDB test texts planted into the training inputs (both tasks and MEDI) all go."""
    import io
    import json

    from pipeline.config import MediSource
    from pipeline.common.text import normalise
    from tests.conftest import make_hub_repo

    cache = tmp_path / "cache"
    planted, tests_by_repo = {}, {}
    for repo, rev in (("mteb/banking77", "0fd18e25b25c072e09e0d92ab615fda904d66300"),
                      ("mteb/imdb", "3d86128a09e091d6018b6d26cad27f2739fc2db7")):
        snap = CACHE / f"datasets--{repo.replace('/', '--')}" / "snapshots" / rev
        train = [json.loads(line) for line in (snap / "train.jsonl").read_text().splitlines()[:400]]
        test = [json.loads(line) for line in (snap / "test.jsonl").read_text().splitlines()]
        plant = test[::max(1, len(test) // 25)][:25]
        # plant them with changed case and whitespace: the match is on normalised text
        train += [{**r, "text": "  " + r["text"].upper().replace(" ", "   ") + " "} for r in plant]
        out = make_hub_repo(cache, repo, rev, {"train.jsonl": "".join(json.dumps(r) + "\n" for r in train)})
        shutil.copyfile(snap / "test.jsonl", out / "test.jsonl")  # a link out of the snapshot would be refused
        planted[repo] = plant
        tests_by_repo[repo] = {normalise(r["text"]) for r in test}

    medi = pl.read_parquet(next((CACHE / "datasets--avsolatorio--medi-data").rglob("*.parquet")))
    medi_planted = medi.head(6).with_columns(
        query=pl.Series([r["text"] for r in planted["mteb/banking77"][:3]] + [r["text"] for r in planted["mteb/imdb"][:3]]))
    buf = io.BytesIO()
    pl.concat([medi, medi_planted]).write_parquet(buf)
    make_hub_repo(cache, "avsolatorio/medi-data", "d" * 40, {"data/train-00000-of-00001.parquet": buf.getvalue()})

    cfg = BuildConfig(profile="leak", medi=MediSource(cache_dir=cache, revision="d" * 40), guide_model="bundled:all-MiniLM-L6-v2",
                      tasks=[TaskSource(name="Banking77Classification", cache_dir=cache),
                             TaskSource(name="ImdbClassification", cache_dir=cache)])
    ws = Workspace(tmp_path / "home", cfg.profile)
    road = Road(cfg, ws)
    ref = road.test_texts()
    assert ref.per_task == {"Banking77Classification": 3080, "ImdbClassification": 25000}
    all_tests = tests_by_repo["mteb/banking77"] | tests_by_repo["mteb/imdb"]
    for task, repo in (("Banking77Classification", "mteb/banking77"), ("ImdbClassification", "mteb/imdb")):
        report = road.split(task)
        raw = load_task_split(cfg.task(task))
        expected = sum(normalise(t) in all_tests for t in raw["text"].to_list())
        assert expected >= len(planted[repo]) == 25
        assert report.account.drops["test_leak"] == expected
        kept = {normalise(t) for t in pl.read_parquet(ws.split(task))["text"].to_list()}
        assert not kept & all_tests
    medi_report = road.medi()
    rows = pl.read_parquet(ws.medi_rows())
    assert medi_report.account.drops["test_leak"] >= 6
    for col in ("query", "pos", "neg"):
        assert not {normalise(t) for t in rows[col].to_list()} & all_tests
