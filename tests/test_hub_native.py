"""Issue 13: a version is native to the Hub: a config per task, licences and commits in the card, an n-tuple
config, and mining candidates from which a trainer re-derives the published hard negatives exactly."""

import json
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard, snapshot_download

from pipeline.config import BuildConfig, TaskSource
from pipeline.road.build import build_dataset
from pipeline.road.local_hub import LocalHub
from pipeline.road.miner import margin_limit
from pipeline.workspace import Workspace
from pipeline.road.stages import Road
from tests.conftest import BANKING_REV, jsonl, make_hub_repo

K = 2  # negatives per query


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """A two-task build (a Hub task whose snapshot card declares a licence, a local file) published locally."""
    tmp = tmp_path_factory.mktemp("hub-native")
    topics = {
        "card": ["where is my card", "my card has not arrived", "card still not delivered", "when will the card come",
                 "card delivery is late", "has my new card shipped"],
        "top_up": ["how do I top up", "top up with bank transfer", "can I add money by card", "topping up failed",
                   "top up did not go through", "add funds to my account"],
        "rate": ["what is the exchange rate", "wrong exchange rate charged", "exchange rate for euros",
                 "rate too high", "which rate do you use", "currency conversion rate"],
    }
    train = [{"text": t, "label": i, "label_text": name} for i, (name, ts) in enumerate(topics.items()) for t in ts]
    cache = tmp / "cache"
    make_hub_repo(cache, "mteb/banking77", BANKING_REV, {
        "README.md": "---\nlicense: cc-by-sa-4.0\n---\n# banking77\n",
        "train.jsonl": jsonl(train), "test.jsonl": jsonl([{"text": "a held-out question", "label": 0,
                                                            "label_text": "card"}])})
    local = tmp / "moods.jsonl"
    moods = {"happy": ["so glad today", "what a great day", "feeling wonderful", "this is lovely", "pure joy here"],
             "sad": ["feeling down", "a gloomy day", "so unhappy now", "this is awful", "tears again"]}
    local.write_text(jsonl([{"text": t, "label": m} for m, ts in moods.items() for t in ts]))
    cfg = BuildConfig(profile="native", medi=None, guide_model="bundled:all-MiniLM-L6-v2", dataset_repo_id="org/ds",
                      tasks=[TaskSource(name="Banking77Classification", cache_dir=cache),
                             TaskSource(name="Moods", kind="local", path=local, label_text_column=None,
                                        license="cc-by-4.0")],
                      mining={"negatives_per_query": K, "fallback_tries": 0, "candidates": 64, "margin": 0.3})
    ws = Workspace(tmp / "home", cfg.profile)
    road = Road(cfg, ws)
    road.test_texts()
    road.medi()
    rejected = 0
    for task in ("Banking77Classification", "Moods"):
        road.split(task)
        rejected += road.mine(task).mining.margin_rejected
    assert rejected > 0, "the guard must bite, or re-deriving with it proves nothing"
    report = build_dataset(ws, cfg)
    assert all(c.passed for c in report.checks), [c for c in report.checks if not c.passed]
    result = LocalHub(tmp / "hub").publish(ws.build_dir(), cfg.dataset_repo_id)
    path = Path(snapshot_download(cfg.dataset_repo_id, repo_type="dataset", revision=result.tag,
                                  cache_dir=str(tmp / "hub"), local_files_only=True))
    return cfg, path, tmp


def _load(path: Path, config: str, **kw):
    return load_dataset(str(path), config, split="train", **kw)


def test_every_config_loads_by_tag_and_holds_exactly_its_task(version):
    cfg, path, _ = version
    default = _load(path, "default").to_polars()
    card = DatasetCard.load(path / "README.md").data
    names = [c["config_name"] for c in card.configs]
    assert names == ["default", "local_moods", "mteb_banking77", "triplets", "ntuple", "ntuple_tasks", "candidates",
                     "corpus"]
    for task_type in ("mteb_banking77", "local_moods"):
        rows = _load(path, task_type).to_polars()
        assert rows.height > 0 and rows.equals(default.filter(default["task_type"] == task_type))
        streamed = list(_load(path, task_type, streaming=True))
        assert [r["query"] for r in streamed] == rows["query"].to_list()
    data_files = sorted(p.relative_to(path).as_posix() for p in path.rglob("*.parquet") if ".gistforge" not in p.parts)
    assert len(data_files) == len(set(data_files)) == 7, "per-task configs reuse the default's files: none copied"
    for f in data_files:
        meta = pq.read_metadata(path / f)
        assert meta.row_group(0).column(0).has_offset_index, f"{f}: no page index"


def test_the_card_records_licences_commits_and_configs_with_no_machine_path_or_dead_link(version):
    _, path, tmp = version
    text = (path / "README.md").read_text()
    card = DatasetCard.load(path / "README.md").data
    assert (card.license, card.license_name, card.license_link) == ("other", "mixed", "LICENSES.md")
    assert (path / card.license_link).is_file() and card.source_datasets == ["mteb/banking77"]
    assert f"| Banking77Classification | mteb/banking77 | `{BANKING_REV}` | `{BANKING_REV}` | cc-by-sa-4.0 | " \
           "the source's dataset card |" in text, "the licence is read from the snapshot's own card"
    assert "| Moods | moods.jsonl |  |  | cc-by-4.0 | the build config |" in text
    assert {c["config_name"] for c in card.configs} >= {"mteb_banking77", "local_moods"}
    assert str(tmp) not in text and "/root/" not in text and "/home/" not in text
    assert not re.findall(r"https?://", text), "the card links nowhere that could be dead"
    for target in re.findall(r"\]\(([^)]+)\)", text):
        assert (path / target).exists(), f"dead relative link {target}"


def test_ntuple_rows_have_k_distinct_other_label_negatives_all_under_the_guard(version):
    cfg, path, _ = version
    ntuple = _load(path, "ntuple").to_polars()
    assert ntuple.columns == ["anchor", "positive", *[f"negative_{j}" for j in range(1, K + 1)], "scores"]
    triplets = _load(path, "default").to_polars()
    neg_label = {(r["query"], r["neg"]): r["neg_label"] for r in triplets.iter_rows(named=True)}
    query_label = {r["query"]: r["query_label"] for r in triplets.iter_rows(named=True)}
    assert ntuple.height > 0
    for row in ntuple.iter_rows(named=True):
        negs = [row[f"negative_{j}"] for j in range(1, K + 1)]
        assert len(set(negs)) == K and row["anchor"] not in negs and row["positive"] not in negs
        assert all(neg_label[(row["anchor"], n)] != query_label[row["anchor"]] for n in negs)
        limit = margin_limit(np.float32([row["scores"][0]]), cfg.mining.margin, cfg.mining.margin_type)[0]
        assert all(np.float32(row["scores"][j]) < limit for j in range(1, K + 1))


def test_the_published_hard_negatives_are_re_derived_exactly_from_candidates_and_corpus(version):
    """The recipe in docs/candidates.md, run on the published configs alone (no guide model)."""
    cfg, path, _ = version
    corpus = {(r["task_type"], r["id"]): r["text"] for r in _load(path, "corpus")}
    derived = []
    for row in _load(path, "candidates"):
        limit = margin_limit(np.float32([row["pos_score"]]), cfg.mining.margin, cfg.mining.margin_type)[0]
        scores = np.asarray(row["candidate_scores"], dtype=np.float32)
        chosen = [i for i, s in zip(row["candidate_ids"], scores) if s < limit][:K]
        text = lambda i: corpus[(row["task_type"], i)]  # noqa: E731
        derived += [(row["task_type"], text(row["query_id"]), text(row["pos_id"]), text(n)) for n in chosen]
    published = [(r["task_type"], r["query"], r["pos"], r["neg"]) for r in _load(path, "default")]
    assert derived and sorted(derived) == sorted(published)
    assert json.loads((path / ".gistforge" / "manifest.json").read_text())["files"], "manifest lists the files"


def test_row_groups_are_sized_by_bytes_and_the_writer_is_deterministic(tmp_path, monkeypatch):
    import pyarrow as pa

    from pipeline.road import layout

    monkeypatch.setattr(layout, "ROW_GROUP_BYTES", 20_000)
    table = pa.table({"text": [f"{i:05d} " + "x" * 995 for i in range(200)]})  # ~1 kB per row
    names = layout.write_shards(table, tmp_path / "a", "cfg", max_shard_bytes=1 << 30)
    layout.write_shards(table, tmp_path / "b", "cfg", max_shard_bytes=1 << 30)
    meta = pq.read_metadata(tmp_path / "a" / names[0])
    assert names == ["cfg/train-00000-of-00001.parquet"] and meta.num_rows == 200
    assert meta.num_row_groups > 5 and all(meta.row_group(i).num_rows <= 20 for i in range(meta.num_row_groups))
    assert (tmp_path / "a" / names[0]).read_bytes() == (tmp_path / "b" / names[0]).read_bytes()
    assert layout._CDC, "this pyarrow writes content-defined chunks"


def test_a_source_read_from_a_moving_ref_is_named_in_the_card():
    from pipeline.config import DecontaminationConfig
    from pipeline.road.build import DROP_REASONS
    from pipeline.road.card import render_card
    from pipeline.schema import SCHEMA

    medi = {"source": "MEDI", "repo": "avsolatorio/medi-data", "revision": "main", "commit": "c" * 40,
            "moving_ref": True, "license": "unknown", "license_from": "not declared", "rows_in": 5, "rows_out": 5}
    text = render_card(repo_id="org/ds", schema=SCHEMA, num_rows=5, num_bytes=10, download_size=10, sources=[medi],
                       exclusions={}, guide={"name": "m", "revision": "r"}, mining={}, seed=1, tasks=[], accounts=[],
                       drop_reasons=DROP_REASONS, decontamination=DecontaminationConfig(), reference=None)
    assert f"| MEDI | avsolatorio/medi-data | `main` (a moving ref) | `{'c' * 40}` | unknown |" in text
    assert "Read from a moving ref (the commit above is the one this build read; a later build may read another): " \
           "MEDI." in text
