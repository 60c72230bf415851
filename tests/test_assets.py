"""The Dagster layer: definitions load from an explicit configuration, and the whole graph materialises."""

import dagster as dg
import polars as pl
import pytest

from assets import build_definitions
from assets.settings import Deployment
from gistforge.cli import build
from pipeline.config import BuildConfig
from pipeline.profiles import embedded_profile
from pipeline.road import build as build_stage, decontaminate, evaluate, ingest, mine, publish, train
from pipeline.road.ingest import MediReport, SplitReport
from pipeline.road.local_hub import LocalHub
from pipeline.road.mine import MineReport
from pipeline.workspace import Workspace


def _defs(tmp_path, cfg: BuildConfig | None = None) -> dg.Definitions:
    return build_definitions(cfg or embedded_profile(), Deployment(home=tmp_path))


def test_definitions_load_and_graph_is_wired(tmp_path):
    defs = _defs(tmp_path)
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert keys == {"mteb_test_texts", "medi_triplets", "mteb_train_split", "mined_triplets", "triplet_dataset",
                    "published_dataset", "finetuned_encoder"}
    split = graph.get(dg.AssetKey("mteb_train_split"))
    assert split.partitions_def.get_partition_keys() == ["Banking77Classification", "ImdbClassification",
                                                          "ChatterbotTopics"]
    assert dg.AssetKey("mined_triplets") in graph.get(dg.AssetKey("triplet_dataset")).parent_keys


def test_partitions_follow_the_configuration_handed_in(tmp_path):
    cfg = embedded_profile()
    cfg = cfg.model_copy(update={"tasks": cfg.tasks[:1]})
    split = _defs(tmp_path, cfg).resolve_asset_graph().get(dg.AssetKey("mteb_train_split"))
    assert split.partitions_def.get_partition_keys() == ["Banking77Classification"]


def test_code_versions_are_the_stages_versions(tmp_path):
    """One declaration: bumping a stage's StageSpec version makes the UI call the asset stale *and* redoes it."""
    graph = _defs(tmp_path).resolve_asset_graph()
    version = lambda key: graph.get(dg.AssetKey(key)).code_version  # noqa: E731
    assert version("mteb_test_texts") == decontaminate.SPEC.version
    assert version("medi_triplets") == ingest.MEDI_SPEC.version
    assert version("mteb_train_split") == ingest.TASK_SPEC.version
    assert version("mined_triplets") == mine.SPEC.version
    assert version("triplet_dataset") == build_stage.SPEC.version
    assert version("published_dataset") == publish.SPEC.version
    assert version("finetuned_encoder") == f"{train.SPEC.version}.{evaluate.EVAL_SPEC.version}"
    assert all(graph.get(key).code_version for key in graph.get_all_asset_keys()), "every asset has one"


def test_no_literal_code_version_in_the_dagster_layer():
    """A literal `code_version="1"` drifts from the stage's spec (it did: finetuned_encoder said 1, its stage 2)."""
    import re
    from pathlib import Path

    import assets

    literal = re.compile(r"code_version\s*=\s*['\"]")
    found = [f"{p.name}:{n}" for p in Path(assets.__file__).parent.glob("*.py")
             for n, line in enumerate(p.read_text().splitlines(), 1) if literal.search(line)]
    assert not found, found


@pytest.mark.slow
def test_embedded_build_publishes_a_loadable_honest_dataset(embedded_build):
    from datasets import load_dataset
    from huggingface_hub import snapshot_download

    home = embedded_build
    tags = LocalHub(home / "hub").tags("local/gistforge-medi-mteb-triplets")
    assert len(tags) == 1
    tag = next(iter(tags))
    path = snapshot_download("local/gistforge-medi-mteb-triplets", repo_type="dataset", revision=tag,
                             cache_dir=str(home / "hub"), local_files_only=True)
    df = load_dataset(path, split="train").to_polars()

    ws = Workspace(home, "embedded")
    medi = ws.load_report(ws.medi_rows(), MediReport)
    assert medi.account.balanced
    for task in ("Banking77Classification", "ImdbClassification", "ChatterbotTopics"):
        split, mined = ws.load_report(ws.split(task), SplitReport), ws.load_report(ws.triplets(task), MineReport)
        assert split.account.balanced and mined.account.balanced
        published = df.filter(pl.col("task_name") == task, pl.col("source") != "medi").height
        assert published == mined.account.rows_out >= 0.99 * split.account.rows_out
    assert df.filter(pl.col("source") == "medi").height == medi.account.rows_out
    plot = ws.triplets("Banking77Classification").with_suffix(".png")
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5_000

    mined = df.filter(pl.col("source") != "medi")
    assert (mined["query_label"] != mined["neg_label"]).all()
    assert (df["query"] != df["pos"]).all() and (df["query"] != df["neg"]).all()
    assert df.filter(pl.col("source") == "mteb")["task_type"].str.starts_with("mteb_").all()
    assert not df.filter(pl.col("source") != "mteb")["task_type"].str.starts_with("mteb_").any()
    card = (home / "hub").rglob("README.md").__next__().read_text()
    assert "AmazonPolarityClassification" in card and "Row accounting" in card and tag in card
    assert "## Decontamination" in card and "| Banking77Classification | 64 |" in card


@pytest.mark.slow
def test_rebuild_is_unchanged_and_redoes_nothing(embedded_build, capsys):
    ws = Workspace(embedded_build, "embedded")
    outputs = sorted(ws.work.glob("splits/*.parquet")) + sorted(ws.work.glob("triplets/*.parquet")) + [ws.medi_rows()]
    models = sorted(p for p in (embedded_build / "models").rglob("*") if p.is_file())
    stamps = [p.stat().st_mtime_ns for p in outputs + models]
    capsys.readouterr()
    assert build(["build", "--home", str(embedded_build)]) == 0  # the README's first command, again
    out = capsys.readouterr().out
    assert "gistforge: unchanged local/gistforge-medi-mteb-triplets@" in out and "load_dataset(path" in out
    assert len(outputs) == 7 and any(p.name == "model.safetensors" for p in models)
    assert [p.stat().st_mtime_ns for p in outputs + models] == stamps, "every stage, the fine-tune too, was reused"
    assert sorted(p for p in (embedded_build / "models").rglob("*") if p.is_file()) == models, "no new checkpoint"


def test_unknown_partition_is_refused(tmp_path, capsys):
    assert build(["build", "--home", str(tmp_path), "--tasks", "AmazonPolarityClassification"]) == 2
    assert "unknown or excluded task partition" in capsys.readouterr().err


def test_bad_source_fails_at_once_with_a_clear_message(tmp_path):
    """A missing cached revision can never succeed: no retry (the retry policy would wait over a minute)."""
    cfg = BuildConfig.model_validate({"profile": "bad", "medi": None, "guide_model": "bundled:all-MiniLM-L6-v2",
                                      "tasks": [{"name": "Banking77Classification",
                                                 "cache_dir": str(tmp_path / "empty-cache")}]})
    job = _defs(tmp_path, cfg).resolve_job_def("ingest_and_mine")
    result = job.execute_in_process(partition_key="Banking77Classification", raise_on_error=False,
                                    op_selection=["mteb_train_split"])
    assert not result.success
    assert not [e for e in result.all_events if e.event_type_value == "STEP_UP_FOR_RETRY"]
    failure = next(e for e in result.all_events if e.is_step_failure).step_failure_data.error
    while failure.cause is not None:
        failure = failure.cause
    assert "mteb/banking77@0fd18e25b25c072e09e0d92ab615fda904d66300: this revision is not in the offline Hub cache" \
        in failure.message


@pytest.mark.slow
def test_a_task_mined_with_the_approximate_search_shows_its_recall(tmp_path):
    cfg = embedded_profile()
    cfg = cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"approx_above": 50, "ivf_nprobe": 4})})
    defs = _defs(tmp_path, cfg)
    with dg.instance_for_test() as instance:
        assert defs.resolve_job_def("ingest_medi").execute_in_process(instance=instance,
                                                                      op_selection=["mteb_test_texts"]).success
        result = defs.resolve_job_def("ingest_and_mine").execute_in_process(
            instance=instance, partition_key="Banking77Classification")
    meta = result.asset_materializations_for_node("mined_triplets")[0].metadata
    assert 0.5 <= meta["ivf_recall_at_10"].value <= 1
    assert meta["mining"].data["search"] == "ivf"


def test_no_configuration_is_read_at_import_time(tmp_path):
    """Importing the Dagster layer reads nothing; the code location's loader reads the environment when called."""
    import subprocess
    import sys

    code = ("import assets, assets.definitions, gistforge.cli\n"
            "from pipeline.profiles import ConfigError\n"
            "try:\n    assets.defs()\nexcept ConfigError as e:\n    print('loader read:', e)\n")
    env = {"PATH": "", "GISTFORGE_CONFIG": str(tmp_path / "absent.yaml"), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120,
                          cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert f"loader read: config file {tmp_path / 'absent.yaml'} does not exist" in done.stdout
