"""Issue 22 #8: a downstream trainer takes the published configs as they are. sentence-transformers' trainer feeds
every column as an input (its collator takes only `label`/`labels`/`score`/`scores` as the label), so `triplets`
is exactly `anchor, positive, negative` and `ntuple` is `anchor, positive, negative_1..k, scores`, as its own
`mine_hard_negatives` writes them; the fine-tune reads the same configs."""

from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
from datasets import load_dataset
from huggingface_hub import DatasetCard, snapshot_download

from pipeline.config import BuildConfig, TaskSource, TrainConfig
from pipeline.road.build import assemble, build_dataset, write_build
from pipeline.road.layout import MinedTables, derived_tables
from pipeline.road.local_hub import LocalHub
from pipeline.road.train import task_columns, task_datasets
from pipeline.workspace import Workspace
from pipeline.road.stages import Road
from tests.conftest import jsonl
from tests.test_build import _frames

K = 2  # negatives per query
NTUPLE_COLUMNS = ["anchor", "positive", *[f"negative_{j}" for j in range(1, K + 1)], "scores"]


@pytest.fixture(scope="module")
def version(tmp_path_factory):
    """A two-task build (local files, the bundled MiniLM as the guide) published to a local hub."""
    tmp = tmp_path_factory.mktemp("configs")
    files = {"Moods": {"happy": ["so glad today", "what a great day", "feeling wonderful", "this is lovely",
                                 "pure joy here"],
                       "sad": ["feeling down", "a gloomy day", "so unhappy now", "this is awful", "tears again"]},
             "Topics": {"card": ["where is my card", "my card has not arrived", "card still not delivered",
                                 "when will the card come"],
                        "rate": ["what is the exchange rate", "wrong exchange rate charged", "exchange rate for euros",
                                 "which rate do you use"],
                        "top_up": ["how do I top up", "top up with bank transfer", "topping up failed",
                                   "add funds to my account"]}}
    tasks = []
    for name, labels in files.items():
        path = tmp / f"{name.lower()}.jsonl"
        path.write_text(jsonl([{"text": t, "label": label} for label, ts in labels.items() for t in ts]))
        tasks.append(TaskSource(name=name, kind="local", path=path, label_text_column=None, license="cc-by-4.0"))
    cfg = BuildConfig(profile="configs", medi=None, guide_model="bundled:all-MiniLM-L6-v2", dataset_repo_id="org/ds",
                      tasks=tasks, mining={"negatives_per_query": K, "fallback_tries": 0, "candidates": 64})
    ws = Workspace(tmp / "home", cfg.profile)
    road = Road(cfg, ws)
    road.test_texts()
    road.medi()
    for name in files:
        road.split(name)
        road.mine(name)
    report = build_dataset(ws, cfg)
    assert all(c.passed for c in report.checks), [c for c in report.checks if not c.passed]
    result = LocalHub(tmp / "hub").publish(ws.build_dir(), cfg.dataset_repo_id)
    path = Path(snapshot_download(cfg.dataset_repo_id, repo_type="dataset", revision=result.tag,
                                  cache_dir=str(tmp / "hub"), local_files_only=True))
    return SimpleNamespace(path=path, ws=ws, cfg=cfg, location=LocalHub(tmp / "hub").location, tag=result.tag)


def _load(path: Path, config: str, **kw):
    return load_dataset(str(path), config, split="train", **kw)


def test_the_triplets_config_is_the_default_rows_as_anchor_positive_negative_only(version):
    default = _load(version.path, "default").to_polars()
    triplets = _load(version.path, "triplets")
    assert triplets.column_names == ["anchor", "positive", "negative"]
    assert triplets.features.to_dict() == {c: {"dtype": "string", "_type": "Value"} for c in triplets.column_names}
    expected = default.select(anchor="query", positive="pos", negative="neg")
    assert triplets.num_rows == default.height > 0 and triplets.to_polars().equals(expected), "row for row, same order"
    card = DatasetCard.load(version.path / "README.md").data
    configs = {c["config_name"]: c["data_files"][0]["path"] for c in card.configs}
    assert configs["triplets"] == "triplets/train-*.parquet"
    info = {c["config_name"]: c for c in card.dataset_info}
    assert info["triplets"]["splits"][0]["num_examples"] == default.height
    assert [f["name"] for f in info["triplets"]["features"]] == ["anchor", "positive", "negative"]


def test_the_ntuple_config_is_named_as_sentence_transformers_miner_names_it(version):
    ntuple = _load(version.path, "ntuple")
    assert ntuple.column_names == NTUPLE_COLUMNS
    tasks = _load(version.path, "ntuple_tasks").to_polars()
    assert tasks.columns == ["task_type", "task_name"] and tasks.height == ntuple.num_rows > 0
    default = _load(version.path, "default").to_polars()
    score = {(r["task_type"], r["query"], r["neg"]): (r["pos_score"], r["neg_score"])
             for r in default.iter_rows(named=True)}
    for row, task in zip(ntuple, tasks.iter_rows(named=True)):
        negatives = [row[f"negative_{j}"] for j in range(1, K + 1)]
        assert len(row["scores"]) == K + 1
        for j, neg in enumerate(negatives):
            pos_score, neg_score = score[(task["task_type"], row["anchor"], neg)]  # the task is row i's task
            assert row["scores"][0] == pytest.approx(pos_score) and row["scores"][j + 1] == pytest.approx(neg_score)


def test_the_fine_tune_reads_the_triplets_config_and_groups_it_by_the_default_configs_task(version):
    default = _load(version.path, "default").to_polars()
    cfg = TrainConfig()
    triplets = _load(version.path, "triplets")
    sets = task_datasets(_load(version.path, "default", columns=task_columns(cfg)), cfg, triplets)
    assert sorted(sets) == sorted(default["task_name"].unique().to_list())
    for task, ds in sets.items():
        rows = default.filter(pl.col("task_name") == task)
        assert ds.column_names == ["anchor", "positive", "negative"]
        assert ds["anchor"] == rows["query"].to_list() and ds["negative"] == rows["neg"].to_list()
    with pytest.raises(ValueError, match="not the same version"):
        task_datasets(_load(version.path, "default", columns=["task_name"]), cfg, triplets.select([0]))


def test_the_triplets_and_ntuple_configs_are_byte_identical_for_the_same_inputs(tmp_path):
    frames = _frames(200)
    mined = [f for f in frames if f["source"][0] != "medi"]
    hashes = []
    for name in ("a", "b"):
        extra = derived_tables(MinedTables([f.clone() for f in mined], k=1))
        hashes.append(write_build(assemble([f.clone() for f in frames], seed=1), lambda size: "card",
                                  tmp_path / name, 4096, extra, with_triplets=True))
    assert hashes[0] == hashes[1]
    files = sorted(p.relative_to(tmp_path / "a").as_posix() for p in (tmp_path / "a").rglob("*.parquet"))
    assert [f for f in files if f.startswith("triplets/")][1:], "several triplets shards"
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    triplets = pl.read_parquet(tmp_path / "a" / "triplets" / "*.parquet")
    default = pl.read_parquet(tmp_path / "a" / "data" / "*" / "*.parquet")
    assert triplets.equals(default.select(anchor="query", positive="pos", negative="neg"))


@pytest.mark.slow
def test_sentence_transformers_trains_on_the_triplets_and_ntuple_configs_as_written(version, tmp_path):
    from sentence_transformers import SentenceTransformer, SentenceTransformerTrainer
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import SentenceTransformerTrainingArguments

    from pipeline.road.model_ref import resolve_model

    model = SentenceTransformer(resolve_model("bundled:all-MiniLM-L6-v2").path, device="cpu")
    for config in ("triplets", "ntuple"):
        args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path / config), max_steps=2,
                                                    per_device_train_batch_size=4, report_to="none", use_cpu=True,
                                                    save_strategy="no")
        trainer = SentenceTransformerTrainer(model, args=args, train_dataset=load_dataset(str(version.path), config,
                                                                                          split="train"),
                                             loss=MultipleNegativesRankingLoss(model))
        batch = next(iter(trainer.get_train_dataloader()))
        inputs = [k.removesuffix("_input_ids") for k in batch if k.endswith("_input_ids")]
        assert inputs == (NTUPLE_COLUMNS[:-1] if config == "ntuple" else ["anchor", "positive", "negative"]), inputs
        if config == "ntuple":
            assert tuple(batch["label"].shape) == (4, K + 1), "`scores` is the label, not an input"
        result = trainer.train()
        assert trainer.state.global_step == 2 and result.training_loss > 0


@pytest.mark.slow
def test_the_fine_tune_stage_trains_on_the_published_triplets_config(version):
    from pipeline.road import train

    report = train.finetune(version.ws, repo_id="org/ds", tag=version.tag, location=version.location,
                            training=TrainConfig(max_steps=1, save_steps=1, batch_size=4, max_seq_length=32),
                            base_model="bundled:all-MiniLM-L6-v2", guide_model="bundled:all-MiniLM-L6-v2",
                            guide_revision=None)
    assert report.facts.global_step == 1 and Path(report.model_dir, "config.json").is_file()


def test_the_readme_lists_every_published_config_with_its_files():
    """The README's config table is held to the registry (`layout.CONFIGS`), name and files."""
    import re

    from pipeline.road import layout

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z_]+)` \| `([^`]+)` \|", readme, re.MULTILINE)}
    assert {c.name: c.files.pattern for c in layout.CONFIGS}.items() <= rows.items()


def test_a_config_table_that_drifts_from_its_registry_schema_fails_the_build_naming_it():
    import dataclasses

    from pipeline.road import layout

    made = derived_tables(MinedTables([], k=2))
    assert list(made) == ["ntuple", "ntuple_tasks", "candidates", "corpus"]  # registry order, each its schema
    assert all(table.schema.equals(layout.published_config(name).schema(2)) for name, table in made.items())
    drifted = dataclasses.replace(layout.published_config("ntuple"), schema=lambda k: layout.ntuple_schema(k + 1))
    with pytest.raises(ValueError, match="config 'ntuple': the build's table has schema"):
        drifted.made(MinedTables([], k=2))


def test_a_config_made_from_the_mined_rows_is_one_registry_entry(version, monkeypatch):
    """A new derived config is one `layout.CONFIGS` entry (name, card text, schema, how its table is made): the
    build makes, checks and writes it, the card declares its files and text, `load_dataset` reads it by name."""
    import pyarrow as pa

    from pipeline.road import layout

    pairs = pa.schema([("anchor", pa.string()), ("positive", pa.string())])
    entry = layout.PublishedConfig(
        "pairs", "each mined (anchor, positive) pair once", lambda k: pairs,
        lambda m: pl.concat(m.triplets).unique(["query", "pos"], maintain_order=True)
        .select(anchor="query", positive="pos").to_arrow().cast(pairs))
    folder = version.ws.build_dir()
    mined = pl.concat([pl.read_parquet(version.ws.triplets(t.name)) for t in version.cfg.included_tasks])
    monkeypatch.setattr(layout, "CONFIGS", (*layout.CONFIGS, entry))
    try:
        build_dataset(version.ws, version.cfg)
        card = DatasetCard.load(folder / "README.md")
        assert {"config_name": "pairs", "data_files": [{"split": "train", "path": "pairs/train-*.parquet"}]} \
            in card.data.to_dict()["configs"]
        assert "each mined (anchor, positive) pair once" in card.text
        ds = _load(folder, "pairs")
        assert ds.column_names == ["anchor", "positive"]
        assert ds.num_rows == mined.unique(["query", "pos"]).height > 0
    finally:
        monkeypatch.undo()
        build_dataset(version.ws, version.cfg)  # the fixture's build as it was, for the tests after this one
    assert not (folder / "pairs").exists()
