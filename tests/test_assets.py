"""The Dagster layer: definitions load, and the whole graph materialises in-process on the embedded default."""

import json

import dagster as dg
import polars as pl
import pytest

from assets import defs
from gistforge.cli import build
from pipeline.road.publish import LocalHub


def test_definitions_load_and_graph_is_wired():
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"mteb_test_texts", "medi_triplets", "mteb_train_split", "mined_triplets", "triplet_dataset",
                    "published_dataset", "finetuned_encoder"}
    split = graph.get(dg.AssetKey("mteb_train_split"))
    assert split.partitions_def.get_partition_keys() == ["Banking77Classification", "ImdbClassification",
                                                          "ChatterbotTopics"]
    assert dg.AssetKey("mined_triplets") in graph.get(dg.AssetKey("triplet_dataset")).parent_keys


@pytest.fixture(scope="module")
def embedded_build(tmp_path_factory):
    home = tmp_path_factory.mktemp("home")
    assert build(["build", "--home", str(home)]) == 0
    return home


def test_embedded_build_publishes_a_loadable_honest_dataset(embedded_build, capsys):
    from datasets import load_dataset
    from huggingface_hub import snapshot_download

    home = embedded_build
    tags = LocalHub(home / "hub").tags("local/gistforge-medi-mteb-triplets")
    assert len(tags) == 1
    tag = next(iter(tags))
    path = snapshot_download("local/gistforge-medi-mteb-triplets", repo_type="dataset", revision=tag,
                             cache_dir=str(home / "hub"), local_files_only=True)
    df = load_dataset(path, split="train").to_polars()

    work = home / "work" / "embedded"
    reports = {p.relative_to(work).as_posix(): json.loads(p.read_text()) for p in work.rglob("*.json")
               if not p.name.startswith(".") and "decontamination" not in p.parts}
    for name, report in reports.items():
        acc = report["account"]
        assert acc["rows_in"] == acc["rows_out"] + sum(acc["drops"].values()), name
    for task in ("Banking77Classification", "ImdbClassification", "ChatterbotTopics"):
        eligible = reports[f"splits/{task}.json"]["account"]["rows_out"]
        mined = df.filter(pl.col("task_name") == task, pl.col("source") != "medi").height
        assert mined == reports[f"triplets/{task}.json"]["account"]["rows_out"] >= 0.99 * eligible
    assert df.filter(pl.col("source") == "medi").height == reports["medi/rows.json"]["account"]["rows_out"]
    plot = work / "triplets" / "Banking77Classification.png"
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5_000

    mined = df.filter(pl.col("source") != "medi")
    assert (mined["query_label"] != mined["neg_label"]).all()
    assert (df["query"] != df["pos"]).all() and (df["query"] != df["neg"]).all()
    assert df.filter(pl.col("source") == "mteb")["task_type"].str.starts_with("mteb_").all()
    assert not df.filter(pl.col("source") != "mteb")["task_type"].str.starts_with("mteb_").any()
    card = (home / "hub").rglob("README.md").__next__().read_text()
    assert "AmazonPolarityClassification" in card and "Row accounting" in card and tag in card
    assert "## Decontamination" in card and "| Banking77Classification | 64 |" in card


def test_rebuild_is_unchanged_and_redoes_nothing(embedded_build, capsys):
    work = embedded_build / "work" / "embedded"
    outputs = sorted(work.glob("splits/*.parquet")) + sorted(work.glob("triplets/*.parquet")) + [work / "medi" / "rows.parquet"]
    stamps = [p.stat().st_mtime_ns for p in outputs]
    capsys.readouterr()
    assert build(["build", "--home", str(embedded_build)]) == 0
    out = capsys.readouterr().out
    assert "gistforge: unchanged local/gistforge-medi-mteb-triplets@" in out and "load_dataset(path" in out
    assert len(outputs) == 7 and [p.stat().st_mtime_ns for p in outputs] == stamps, "every stage output was reused"


def test_unknown_partition_is_refused(embedded_build, capsys):
    assert build(["build", "--home", str(embedded_build), "--tasks", "AmazonPolarityClassification"]) == 2
    assert "unknown or excluded task partition" in capsys.readouterr().err


def test_bad_source_fails_with_a_clear_message(tmp_path, capsys, monkeypatch):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("profile: bad\nmedi: null\nguide_model: 'bundled:all-MiniLM-L6-v2'\n"
                   "tasks:\n  - name: Banking77Classification\n    cache_dir: " + str(tmp_path / "empty-cache") + "\n")
    monkeypatch.setenv("GISTFORGE_CONFIG", str(cfg))
    from assets.resources import GistforgeResource, GuideModelResource, LocalHubPublisher
    import dagster as dg
    from assets.definitions import ALL_ASSETS, mteb_train_split

    result = dg.materialize(ALL_ASSETS, selection=[mteb_train_split], partition_key="Banking77Classification",
                            resources={"gistforge": GistforgeResource(home=str(tmp_path)), "guide": GuideModelResource(),
                                       "publisher": LocalHubPublisher()},
                            raise_on_error=False)
    assert not result.success
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    while failure.cause is not None:
        failure = failure.cause
    assert "mteb/banking77@0fd18e25b25c072e09e0d92ab615fda904d66300: this revision is not in the offline Hub cache" \
        in failure.message


def test_a_task_mined_with_the_approximate_search_shows_its_recall(tmp_path):
    import yaml

    from assets.definitions import mined_triplets, mteb_test_texts, mteb_train_split
    from assets.resources import GistforgeResource, GuideModelResource
    from pipeline.config import embedded_profile

    cfg = embedded_profile()
    cfg = cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"approx_above": 50, "ivf_nprobe": 4})})
    path = tmp_path / "approx.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    resources = {"gistforge": GistforgeResource(config_path=str(path), home=str(tmp_path / "home")),
                 "guide": GuideModelResource()}
    with dg.instance_for_test() as instance:
        dg.materialize([mteb_test_texts], resources=resources, instance=instance)
        result = dg.materialize([mteb_train_split, mined_triplets], partition_key="Banking77Classification",
                                resources=resources, instance=instance)
    meta = result.asset_materializations_for_node("mined_triplets")[0].metadata
    assert 0 < meta["ivf_recall_at_10"].value <= 1
    assert meta["mining"].data["search"] == "ivf"
