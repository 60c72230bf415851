"""`mining.rounds`: re-mining with the encoder fine-tuned on the previous round, as the user sees it: a round's
files apart from the published build's, its assets and jobs in Dagster, its guide named by its weights, the
card's table of rounds, and an unchanged rebuild that retrains and re-mines nothing."""

import json
from pathlib import Path

import dagster as dg
import polars as pl
import pytest
import yaml

from assets import automation, build_definitions
from assets.definitions import guide_steps
from assets.settings import Deployment
from pipeline.config import BuildConfig
from pipeline.profiles import ConfigError, embedded_profile, load_config
from pipeline.road import build, mine, publish, rounds, train
from pipeline.road.mine import MineReport
from pipeline.road.model_ref import folder_digest
from pipeline.workspace import Workspace


def rounds_profile(n: int) -> BuildConfig:
    cfg = embedded_profile()
    return cfg.model_copy(update={"mining": cfg.mining.model_copy(update={"rounds": n})})


def test_a_round_reads_and_writes_its_own_files(tmp_path):
    ws = Workspace(tmp_path, "p")
    first, last = ws.at_round(1, 2), ws.at_round(2, 2)
    # round 1 mines where a one-round build mines, and builds apart from the published build
    assert first.triplets("T") == ws.triplets("T") == ws.work / "triplets" / "T.parquet"
    assert first.build_dir() == ws.work / "round1" / "build" != ws.build_dir()
    assert first.round_hub() == ws.work / "round1" / "hub" and first.round_encoder() == ws.work / "round1" / "encoder.json"
    # the last round mines apart and builds what is published; shared: ingest, embedding cache
    assert last.triplets("T") == ws.work / "round2" / "triplets" / "T.parquet"
    assert last.candidates("T").parent.parent == last.corpus("T").parent.parent == ws.work / "round2"
    assert last.build_dir() == ws.build_dir() and last.published() == ws.published()
    assert last.split("T") == first.split("T") == ws.split("T") and last.embeddings == ws.embeddings
    for bad in (0, 3):
        with pytest.raises(ValueError, match="rounds count from 1"):
            ws.at_round(bad, 2)


def test_rounds_is_bounded_and_not_a_miner_keyword(tmp_path):
    assert "rounds" not in rounds_profile(2).mining.miner_settings()
    for bad in (0, 4):
        path = tmp_path / f"r{bad}.yaml"
        path.write_text(yaml.safe_dump({"mining": {"rounds": bad}}))
        with pytest.raises(ConfigError, match="rounds"):
            load_config(path)


def test_each_later_round_is_an_asset_a_job_and_part_of_the_rebuild(tmp_path):
    defs = build_definitions(rounds_profile(3), Deployment(home=tmp_path))
    dg.Definitions.validate_loadable(defs)
    graph = defs.resolve_asset_graph()
    parents = lambda key: {p.to_user_string() for p in graph.get(dg.AssetKey(key)).parent_keys}  # noqa: E731
    assert parents("round1_encoder") == {"medi_triplets", "mined_triplets"}
    assert parents("round2_mined_triplets") == {"mteb_train_split", "round1_encoder"}
    assert parents("round2_encoder") == {"medi_triplets", "round2_mined_triplets"}
    assert parents("triplet_dataset") == {"medi_triplets", "round3_mined_triplets"}
    assert graph.get(dg.AssetKey("round3_mined_triplets")).partitions_def.get_partition_keys() == [
        t.name for t in embedded_profile().included_tasks]
    assert graph.get(dg.AssetKey("round2_encoder")).group_name == "round2"
    # a round's encoder builds, publishes and trains: a bump of any of those stages makes it stale
    assert graph.get(dg.AssetKey("round1_encoder")).code_version == ".".join(
        s.version for s in (rounds.SPEC, build.SPEC, publish.SPEC, train.SPEC))
    assert graph.get(dg.AssetKey("round2_mined_triplets")).code_version == mine.SPEC.version
    plan = automation.rebuild_plan(["A", "B"], finetune=False, mining_rounds=3)
    assert [(s.job, s.partition) for s in plan] == [
        ("ingest_medi", None), ("ingest_and_mine", "A"), ("ingest_and_mine", "B"), ("round1_train", None),
        ("round2_mine", "A"), ("round2_mine", "B"), ("round2_train", None), ("round3_mine", "A"),
        ("round3_mine", "B"), ("build_and_publish", None)]
    for step in plan:  # every step of `gistforge build` is a defined job
        defs.resolve_job_def(step.job)
    conditioned = {k.to_user_string() for k in graph.get_all_asset_keys() if graph.get(k).automation_condition}
    assert conditioned == set(automation.rebuilt(3)) >= {"round1_encoder", "round2_encoder", "round3_mined_triplets"}
    assert {"round1_encoder", "round2_mined_triplets"} <= set(guide_steps(rounds_profile(3)))


def test_a_fine_tuned_guide_is_named_by_its_weights_not_its_card(tmp_path):
    """sentence-transformers' model card records the training's wall time: a retrain to the same weights (or
    the same folder copied elsewhere) must name the same guide, or every rebuild would re-mine round 2."""
    a, b = tmp_path / "a", tmp_path / "elsewhere" / "b"
    for folder, card in ((a, "Training: 5.2 seconds"), (b, "Training: 6.9 seconds")):
        folder.mkdir(parents=True)
        (folder / "model.safetensors").write_bytes(b"weights")
        (folder / "README.md").write_text(card)
    ra, rb = rounds.fine_tuned_ref(a, "base", 1), rounds.fine_tuned_ref(b, "base", 1)
    assert ra.revision == rb.revision == f"local-{folder_digest(a, exclude=frozenset({'README.md'}))}"
    assert ra.name == "base fine-tuned on round 1" and str(tmp_path) not in ra.revision
    (b / "model.safetensors").write_bytes(b"other weights")
    assert rounds.fine_tuned_ref(b, "base", 1).revision != ra.revision


@pytest.mark.slow
def test_two_rounds_end_to_end_on_the_embedded_default(tmp_path, capsys):
    """`gistforge build` with `mining.rounds: 2`: round 2 is guided by the encoder fine-tuned on round 1's
    published build, the card says so, and a rebuild retrains and re-mines nothing (and `plan` agrees)."""
    from gistforge.cli import run as gistforge
    from pipeline.plan import plan_build
    from pipeline.road.build import BuildReport
    from pipeline.road.publish import last_published

    cfg = rounds_profile(2)
    config, home = tmp_path / "rounds.yaml", tmp_path / "home"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert gistforge(["build", "--config", str(config), "--home", str(home), "--no-finetune"]) == 0

    ws = Deployment(home=home).workspace(cfg)
    first = ws.at_round(1, 2)
    encoder = ws.load_report(first.round_encoder(), rounds.RoundEncoder)
    model_dir = Path(encoder.guide.path)
    assert encoder.guide.revision == f"local-{folder_digest(model_dir, exclude=frozenset({'README.md'}))}"
    # round 1's build went to the round's own hub (as a trainer reads it), never to the profile's
    round_build = ws.load_report(first.build_report(), BuildReport)
    assert encoder.content_hash == round_build.content_hash and encoder.rows == round_build.rows
    assert (first.round_hub() / "datasets--local--gistforge-medi-mteb-triplets").is_dir()
    published = last_published(ws)
    assert published.content_hash != round_build.content_hash
    tasks = [t.name for t in cfg.included_tasks]
    mined = {r: {t: ws.at_round(r, 2).load_report(ws.at_round(r, 2).triplets(t), MineReport) for t in tasks}
             for r in (1, 2)}
    assert {m.guide.revision for m in mined[2].values()} == {encoder.guide.revision}
    assert {m.guide.revision for m in mined[1].values()} != {encoder.guide.revision}
    # the fine-tuned guide's own vectors: round 2's similarities are not round 1's
    assert any(mined[1][t].mining.pos_sim != mined[2][t].mining.pos_sim for t in tasks)
    # what is published, read back as a trainer reads it, is round 2's triplets with round 2's guide scores
    from huggingface_hub import snapshot_download

    snapshot = Path(snapshot_download(published.repo_id, repo_type="dataset", revision=published.tag,
                                      cache_dir=published.location.local_hub, local_files_only=True))
    rows = pl.read_parquet(snapshot / "data" / "**" / "*.parquet")
    key = ["query", "neg", "neg_score"]
    for r, other in ((2, 1), (1, 2)):
        same = [t for t in tasks
                if (mine := pl.read_parquet(ws.at_round(r, 2).triplets(t))).select(key).sort(key).equals(
                    rows.filter(pl.col("task_name") == t, pl.col("task_type") == mine["task_type"][0])
                    .select(key).sort(key))]
        assert same == (tasks if r == 2 else []), f"published rows equal round {r}'s for {same}"
    card = (snapshot / "README.md").read_text()
    table = card.split("### Mining rounds")[1].split("\n\n")[2].splitlines()[2:]
    assert [line.split("|")[1].strip() for line in table] == ["1", "2"]
    assert f"`{encoder.guide.revision}`" in table[1] and f"`{round_build.content_hash[:12]}`" in table[0]
    assert str(home) not in card, "no machine path in the published card"

    # `gistforge gc` keeps what a rebuild needs: round 1's guide vectors and the model that guides round 2
    from pipeline.gc import collect
    from pipeline.road.local_hub import LocalHub

    items = {Path(i.path): i for i in collect(ws, cfg, LocalHub(home / "hub"))}
    assert not items[model_dir.parent].remove and "guides round 2" in items[model_dir.parent].why
    used = {m.guide.cache_key for r in (1, 2) for m in mined[r].values()}
    assert len(used) == 2 and all(not items[ws.embeddings / key].remove for key in used)

    # an unchanged rebuild: planned as all reused, and so it is (round 1's training reused, round 2 not re-mined)
    capsys.readouterr()
    assert gistforge(["plan", "--config", str(config), "--home", str(home), "--no-finetune", "--json"]) == 0
    stages = json.loads(capsys.readouterr().out)["stages"]
    assert [s["asset"] for s in stages if s["status"] != "reuse"] == []
    assert {"round1_encoder", "round2_mined_triplets"} <= {s["asset"] for s in stages}
    assert gistforge(["build", "--config", str(config), "--home", str(home), "--no-finetune"]) == 0
    again = ws.load_report(first.round_encoder(), rounds.RoundEncoder)
    assert again.reused_training and again.guide == encoder.guide
    assert last_published(ws).content_hash == published.content_hash

    # a training setting changed: the plan names round 1's encoder and every round-2 partition, with why
    changed = cfg.model_copy(update={"training": cfg.training.model_copy(update={"max_steps": 5})})
    redo = {s.key: s.reasons for s in plan_build(ws, changed, finetune=False).stages if s.status == "redo"}
    assert redo["round1_encoder"] == ["setting training.max_steps: 4 -> 5"]
    assert {k for k in redo if k.startswith("round2_mined_triplets")} == {
        f"round2_mined_triplets[{t}]" for t in tasks}
