"""Realism checks on the real Banking77 split in ../shared/data (skipped when that folder is absent)."""

import pytest
import polars as pl

from pipeline.config import BuildConfig, TaskSource
from pipeline.stages import GuideEncoder, Workspace, collect_test_texts, ingest_task, mine_task
from tests.conftest import SHARED_DATA

CACHE = SHARED_DATA / "hf-hub-cache"
pytestmark = pytest.mark.skipif(not (CACHE / "datasets--mteb--banking77").is_dir(),
                                reason="../shared/data is not present")


def test_every_eligible_banking77_row_yields_a_triplet(tmp_path):
    cfg = BuildConfig(profile="real", medi=None, guide_model="bundled:all-MiniLM-L6-v2",
                      tasks=[TaskSource(name="Banking77Classification", cache_dir=CACHE)])
    ws = Workspace(tmp_path, cfg.profile)
    assert collect_test_texts(cfg, ws)["per_task"] == {"Banking77Classification": 3080}
    ingest = ingest_task(cfg, ws, "Banking77Classification")
    assert ingest["account"]["rows_in"] == 10_003 and ingest["labels"] == 77
    report = mine_task(cfg, ws, "Banking77Classification", GuideEncoder(cfg, ws))
    acc = report["account"]
    assert acc["rows_in"] == ingest["account"]["rows_out"]
    assert acc["rows_out"] == acc["rows_in"] and acc["drops"] == {}
    df = pl.read_parquet(ws.triplets("Banking77Classification"))
    assert (df["query_label"] != df["neg_label"]).sum() == df.height
    assert df["task_type"].unique().to_list() == ["mteb_banking77"]
    assert (df["query"] != df["pos"]).all() and (df["query"] != df["neg"]).all()
