"""Fine-tuning on a published version and scoring with mteb (`pipeline.road.train`, `pipeline.road.evaluate`):
the modules' own logic in the fast tier; the real fine-tune of the embedded build (loads, encodes, carries its card,
reused / redone / resumed as its inputs say) in the slow tier."""

import shutil

import datasets
import pytest
from sentence_transformers import SentenceTransformer

from pipeline.config import TrainConfig
from pipeline.profiles import embedded_profile
from pipeline.road import evaluate, train
from pipeline.road.evaluate import EvalReport, Scores, TaskScore, model_card_section
from pipeline.road.local_hub import LocalHub
from pipeline.road.model_ref import ModelRef
from pipeline.road.train import TrainFacts, TrainReport, task_datasets
from pipeline.workspace import Workspace


def test_each_task_is_its_own_dataset_so_no_batch_mixes_tasks():
    rows = [{"query": f"q{i}", "pos": f"p{i}", "neg": f"n{i}", "task_name": t, "query_instruct": "Q: ",
             "pos_instruct": "P: ", "neg_instruct": "N: "} for i, t in enumerate(["a", "a", "b", "b", "b", "c"])]
    ds = datasets.Dataset.from_list(rows)
    sets = task_datasets(ds, TrainConfig())
    assert sorted(sets) == ["a", "b"], "a task with a single row cannot fill a batch and is left out"
    assert sets["b"].column_names == ["anchor", "positive", "negative"] and sets["b"]["anchor"] == ["q2", "q3", "q4"]
    with_instructions = task_datasets(ds, TrainConfig(use_instructions=True, max_rows_per_task=2))
    assert with_instructions["b"]["anchor"] == ["Q: q2", "Q: q3"] and with_instructions["b"]["negative"][0] == "N: n2"


def test_model_card_names_data_models_and_mteb_scores():
    ref = ModelRef("m", "/models/m", "rev1")
    trained = TrainReport(model_dir="/out/model", dataset_repo="org/ds", tag="2026.01.01-abcdef12", base=ref, guide=ref,
                          facts=TrainFacts(global_step=4, resumed_from=None, train_loss=0.5, device="cpu"), fingerprint="f")
    score = lambda acc: Scores(per_task={"Banking77Classification": TaskScore(  # noqa: E731
        accuracy=acc, f1=round(acc - 0.01, 4), test_rows=3080, dataset_revision="0fd18e25b25c072e09e0d92ab615fda904d66300")},
        mean_accuracy=acc, not_evaluated={"MyTask": "not an MTEB task: no MTEB evaluation"})
    card = model_card_section(trained, TrainConfig(), EvalReport(base=score(0.8), finetuned=score(0.82),
                                                                  evaluator="mteb 2.26.24", experiments=10, fingerprint="e"))
    assert "`org/ds` at tag `2026.01.01-abcdef12`" in card and "mteb 2.26.24 classification, 10 experiments" in card
    assert "| Banking77Classification | `0fd18e25b25c` | 3080 | 0.8 | 0.82 | 0.79 | 0.81 |" in card
    assert "Not evaluated: MyTask" in card


TOXIC_REV = "d7c0de2777da35d6aae2200a62c6e0e5af397c4c"  # the revision the registry (MTEB v1) pins


def _toxic_like_rows(n: int, seed: int) -> list[dict]:
    """Short comments, toxic (1) or not (0) by their words, with enough overlap that accuracy is not 1."""
    import random

    rng = random.Random(seed)
    words = {0: ["thanks", "great", "agree", "helpful", "nice", "interesting", "well said", "good point"],
             1: ["idiot", "stupid", "shut up", "moron", "pathetic", "disgusting", "loser", "garbage"]}
    shared = ["the article", "this comment", "your post", "the mayor", "people", "today", "again", "really"]
    rows = []
    for i in range(n):
        label = int(rng.random() < 0.3)
        own = rng.choice(words[label] if rng.random() < 0.8 else words[1 - label])
        rows.append({"text": f"{rng.choice(shared)} {own} {rng.choice(shared)} {i % 97}", "label": label,
                     "label_text": "toxic" if label else "not toxic"})
    return rows


def _memo(encode):
    """`encode` remembering each text's vector (per call options): mteb's evaluation and ours see the same ones."""
    import numpy as np

    seen: dict = {}

    def cached(sentences, **kwargs):
        options = repr(sorted(kwargs.items()))
        texts = [sentences] if isinstance(sentences, str) else list(sentences)
        todo = [t for t in dict.fromkeys(texts) if (t, options) not in seen]
        if todo:
            for text, vector in zip(todo, encode(todo, **kwargs)):
                seen[text, options] = vector
        out = np.stack([np.asarray(seen[t, options]) for t in texts])
        return out[0] if isinstance(sentences, str) else out

    return cached


@pytest.mark.slow
def test_mteb_figures_are_mteb_s_own_on_a_task_whose_transform_subsamples(tmp_path):
    """ToxicConversations-shaped: mteb evaluates a stratified 2,048-row sample of its test split
    (`dataset_transform`); gistforge's figure is exactly what `mteb.evaluate` gives by its own loading."""
    import mteb
    from sentence_transformers import SentenceTransformer

    from pipeline.config import TaskSource
    from pipeline.road.model_ref import BUNDLED_MODEL
    from pipeline.road.model_ref import resolve_model
    from pipeline.road.evaluate import device, mteb_scores, mteb_tasks
    from tests.conftest import jsonl, make_hub_repo

    cache = tmp_path / "hub-cache"
    folder = make_hub_repo(cache, "mteb/toxic_conversations_50k", TOXIC_REV,
                           {"train.jsonl": jsonl(_toxic_like_rows(400, 1)), "test.jsonl": jsonl(_toxic_like_rows(2300, 2))})
    model = SentenceTransformer(resolve_model(BUNDLED_MODEL).path, device=device())
    model.encode = _memo(model.encode)  # the same model's same vectors, computed once for both evaluations

    loaded, skipped = mteb_tasks([TaskSource(name="ToxicConversationsClassification", cache_dir=cache)])
    assert not skipped and loaded[0].test_rows == 2048, "mteb's own transform subsampled the test split"
    ours = mteb_scores(model, loaded, {}).per_task["ToxicConversationsClassification"]

    task = mteb.get_task("ToxicConversationsClassification")  # mteb alone: its loader, transform, seed, defaults
    task.metadata = task.metadata.model_copy(update={"dataset": {"path": str(folder), "revision": TOXIC_REV}})
    theirs = mteb.evaluate(model, task, cache=None, co2_tracker=False, show_progress_bar=False)
    score = theirs.task_results[0].scores["test"][0]
    print(f"ToxicConversations-shaped: gistforge accuracy {ours.accuracy} f1 {ours.f1}; "
          f"mteb.evaluate accuracy {score['accuracy']:.4f} f1 {score['f1']:.4f}")
    assert (ours.accuracy, ours.f1) == (round(float(score["accuracy"]), 4), round(float(score["f1"]), 4))
    assert 0.5 < ours.accuracy < 1.0


@pytest.mark.slow
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


@pytest.mark.slow
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
