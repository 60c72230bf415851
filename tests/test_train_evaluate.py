"""Fast checks of the training and evaluation modules' own logic (the real fine-tune runs in the slow tier)."""

import datasets

from pipeline.config import TrainConfig
from pipeline.road.embed import ModelRef
from pipeline.road.evaluate import EvalReport, Scores, TaskScore, model_card_section
from pipeline.road.train import TrainFacts, TrainReport, task_datasets


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
