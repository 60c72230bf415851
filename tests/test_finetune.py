"""The final asset: fine-tune on a published version, evaluate with mteb, resume from checkpoints."""

import shutil

import pytest
from sentence_transformers import SentenceTransformer

from pipeline.config import TrainConfig, embedded_profile
from pipeline.road import evaluate, train
from pipeline.road.local_hub import LocalHub
from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow


def test_finetuned_model_loads_encodes_and_carries_its_card(embedded_build):
    tag = next(iter(LocalHub(embedded_build / "hub").tags("local/gistforge-medi-mteb-triplets")))
    model_dir = embedded_build / "models" / "embedded" / tag / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    vecs = model.encode(["where is my card?", "the film was dull"], normalize_embeddings=True)
    assert vecs.shape == (2, 384) and abs(float((vecs[0] ** 2).sum()) - 1) < 1e-4
    card = (model_dir / "README.md").read_text()
    assert f"`local/gistforge-medi-mteb-triplets` at tag `{tag}`" in card
    assert "GISTEmbedLoss" in card and "| Banking77Classification |" in card and "learning_rate" in card
    assert "mteb 2." in card and "Not evaluated: ChatterbotTopics" in card
    trained, ev = evaluate.last_finetune(Workspace(embedded_build, "embedded"), tag)
    assert trained.facts.global_step == 4 and trained.tag == tag
    assert set(ev.base.per_task) == set(ev.finetuned.per_task) == {"Banking77Classification", "ImdbClassification"}
    banking = ev.base.per_task["Banking77Classification"]
    assert banking.test_rows == 64 and banking.dataset_revision.startswith("0fd18e25")
    # the sample's Banking77 test split is easy for MiniLM (MTEB reports 0.80 on the full split): a broken
    # pipeline (wrong labels, unnormalised vectors, train/test mixed up) lands near chance (1/77)
    assert banking.accuracy > 0.6 and ev.finetuned.per_task["Banking77Classification"].accuracy > 0.6


def test_finetune_is_reused_redone_from_the_base_or_resumed_as_its_inputs_say(embedded_build, tmp_path):
    home = tmp_path / "home"
    shutil.copytree(embedded_build, home, ignore=shutil.ignore_patterns("models"))
    tag = next(iter(LocalHub(home / "hub").tags("local/gistforge-medi-mteb-triplets")))
    base = embedded_profile()
    ws = Workspace(home, base.profile)
    hub = LocalHub(home / "hub")

    def finetune(training):
        return train.finetune(ws, repo_id=base.dataset_repo_id, tag=tag, location=hub.location, training=training,
                              base_model=base.guide_model, guide_model=base.guide_model, guide_revision=None)

    def checkpoints():
        return sorted(p.relative_to(ws.model_dir(tag)).as_posix() for p in ws.model_dir(tag).glob("runs/*/checkpoints/checkpoint-*"))

    first = finetune(TrainConfig(max_steps=2, save_steps=1, batch_size=8))
    assert first.facts.global_step == 2 and first.facts.resumed_from is None and not first.reused
    before = checkpoints()
    again = finetune(TrainConfig(max_steps=2, save_steps=5, batch_size=8))  # checkpoint cadence: not a change
    assert again.reused and again.facts.global_step == 2 and checkpoints() == before, "nothing trained again"

    longer = finetune(TrainConfig(max_steps=4, save_steps=1, batch_size=8))  # a real change: from the base
    assert not longer.reused and longer.facts.global_step == 4 and longer.facts.resumed_from is None

    # killed after checkpoint-3 of these settings: the rerun resumes there and ends at max_steps, not past it
    run = next(p for p in (ws.model_dir(tag) / "runs").iterdir() if p.name == longer.fingerprint)
    shutil.rmtree(run / "checkpoints" / "checkpoint-4")
    shutil.rmtree(ws.model_dir(tag) / "model")
    (ws.model_dir(tag) / "model.json").unlink()
    resumed = finetune(TrainConfig(max_steps=4, save_steps=1, batch_size=8))
    assert resumed.facts.global_step == 4 and resumed.facts.resumed_from.endswith("checkpoint-3")
    assert not [c for c in checkpoints() if c.endswith("checkpoint-5")]
