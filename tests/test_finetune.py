"""The final asset: fine-tune on a published version, evaluate, resume from checkpoints."""

import shutil

from sentence_transformers import SentenceTransformer

from pipeline.config import TrainConfig, embedded_profile
from pipeline.road.publish import LocalHub
from pipeline.stages import Workspace, finetune
from tests.test_assets import embedded_build  # noqa: F401 - shared module fixture


def test_finetuned_model_loads_encodes_and_carries_its_card(embedded_build):  # noqa: F811
    tag = next(iter(LocalHub(embedded_build / "hub").tags("local/gistforge-medi-mteb-triplets")))
    model_dir = embedded_build / "models" / "embedded" / tag / "model"
    model = SentenceTransformer(str(model_dir), device="cpu")
    vecs = model.encode(["where is my card?", "the film was dull"], normalize_embeddings=True)
    assert vecs.shape == (2, 384) and abs(float((vecs[0] ** 2).sum()) - 1) < 1e-4
    card = (model_dir / "README.md").read_text()
    assert f"`local/gistforge-medi-mteb-triplets` at tag `{tag}`" in card
    assert "GISTEmbedLoss" in card and "| Banking77Classification |" in card and "learning_rate" in card


def test_a_resumed_run_continues_from_its_checkpoint(embedded_build, tmp_path):  # noqa: F811
    home = tmp_path / "home"
    shutil.copytree(embedded_build, home, ignore=shutil.ignore_patterns("models"))
    tag = next(iter(LocalHub(home / "hub").tags("local/gistforge-medi-mteb-triplets")))
    base = embedded_profile()
    ws = Workspace(home, base.profile)
    short = base.model_copy(update={"training": TrainConfig(max_steps=2, save_steps=1, batch_size=8)})
    first = finetune(short, ws, tag, str(home / "hub"))
    assert first["global_step"] == 2 and first["resumed_from"] is None
    longer = base.model_copy(update={"training": TrainConfig(max_steps=4, save_steps=1, batch_size=8)})
    second = finetune(longer, ws, tag, str(home / "hub"))
    assert second["global_step"] == 4 and second["resumed_from"].endswith("checkpoint-2")
    ev = second["evaluation"]
    assert set(ev["base"]["per_task"]) == {"Banking77Classification", "ImdbClassification"}
    assert 0 < ev["finetuned"]["mean"]["logreg_accuracy"] <= 1
