"""Every Hub snapshot layout the included tasks use, read for train and test; a loading script never runs."""

import gzip
import io
import json
from pathlib import Path

import polars as pl
import pytest

from pipeline.config import BuildConfig, TaskSource
from pipeline.registry import get_task
from pipeline.road.decontaminate import collect_test_texts, load_test_split
from pipeline.road.sources import LAYOUTS, SourceError, find_split, load_task_split
from pipeline.workspace import Workspace
from tests.conftest import jsonl, make_hub_repo

TASK = get_task("AmazonCounterfactualClassification")  # a config-bearing task (config "en")
TRAIN = [{"text": f"I wish the {item} had {extra}", "label": 1, "label_text": "counterfactual"}
         for item in ("phone", "kettle", "lamp") for extra in ("been cheaper", "a longer cord")] + \
        [{"text": f"The {item} works {how}", "label": 0, "label_text": "not-counterfactual"}
         for item in ("phone", "kettle", "lamp") for how in ("well", "as described")]
TEST = [{"text": "If only the charger had lasted", "label": 1, "label_text": "counterfactual"},
        {"text": "The charger lasted a year", "label": 0, "label_text": "not-counterfactual"}]
# executed, it would leave a marker file: the test asserts it never exists
SCRIPT = "import pathlib\npathlib.Path(__file__).with_name('SCRIPT_RAN').write_text('ran')\n"


def _parquet(rows) -> bytes:
    buf = io.BytesIO()
    pl.DataFrame(rows).write_parquet(buf)
    return buf.getvalue()


LAYOUT_FILES = {
    # per-config folders beside a loading script, gzip-compressed, no card config (pre-`configs:` Hub repos)
    "per-config jsonl.gz + script": {"amazon_counterfactual.py": SCRIPT,
                                     "en/train.jsonl.gz": gzip.compress(jsonl(TRAIN).encode()),
                                     "en/validation.jsonl.gz": gzip.compress(jsonl(TEST).encode()),
                                     "en/test.jsonl.gz": gzip.compress(jsonl(TEST).encode()),
                                     "de/train.jsonl.gz": gzip.compress(jsonl(TEST).encode())},
    "per-config sharded parquet": {"en/train-00000-of-00001.parquet": _parquet(TRAIN),
                                   "en/test-00000-of-00001.parquet": _parquet(TEST)},
    # a card that declares the configs, with files where no other layout would look
    "card configs": {"README.md": "---\nconfigs:\n- config_name: de\n  data_files:\n  - split: train\n    path: x/de.csv\n"
                                  "- config_name: en\n  data_files:\n  - split: train\n    path: files/english-train*.tsv\n"
                                  "  - split: test\n    path: files/english-test.tsv\n---\n# card\n",
                     "files/english-train-0.tsv": "text\tlabel\tlabel_text\n" + "".join(
                         f"{r['text']}\t{r['label']}\t{r['label_text']}\n" for r in TRAIN),
                     "files/english-test.tsv": "text\tlabel\tlabel_text\n" + "".join(
                         f"{r['text']}\t{r['label']}\t{r['label_text']}\n" for r in TEST)},
    "Hub parquet conversion": {"en/train/0000.parquet": _parquet(TRAIN), "en/test/0000.parquet": _parquet(TEST)},
}


@pytest.mark.parametrize("layout", list(LAYOUT_FILES))
def test_a_config_bearing_task_is_read_from_every_layout(tmp_path, layout):
    snap = make_hub_repo(tmp_path, TASK.hub_id, TASK.revision, LAYOUT_FILES[layout])
    src = TaskSource(name=TASK.name, cache_dir=tmp_path)
    train = load_task_split(src)
    assert train.columns == ["text", "label", "label_text"]
    assert sorted(train["text"].to_list()) == sorted(r["text"] for r in TRAIN)
    assert set(train["label"].to_list()) == {"0", "1"}
    assert load_test_split(src)["text"].to_list() == [r["text"] for r in TEST]
    assert not (snap / "SCRIPT_RAN").exists(), "the loading script was executed"


def test_layouts_are_tried_in_order_and_a_config_less_repo_reads_its_root_files(tmp_path):
    snap = make_hub_repo(tmp_path, "org/x", "a" * 40, {
        "README.md": "---\nconfigs:\n- config_name: en\n  data_files:\n  - split: train\n    path: card/en.jsonl\n---\n",
        "card/en.jsonl": jsonl(TRAIN), "en/train.jsonl": jsonl(TEST), "train.csv": "text,label\na,1\n"})
    assert find_split(snap, "en", "train").layout == LAYOUTS[0].description, "the card's configs come first"
    assert find_split(snap, None, "train").layout == LAYOUTS[3].description
    assert find_split(snap, "de", "train") is None


def test_a_missing_split_names_the_task_split_layouts_and_files(tmp_path):
    files = {k: v for k, v in LAYOUT_FILES["per-config jsonl.gz + script"].items() if k != "en/test.jsonl.gz"}
    make_hub_repo(tmp_path, TASK.hub_id, TASK.revision, files)
    src = TaskSource(name=TASK.name, cache_dir=tmp_path)
    assert len(load_task_split(src)) == len(TRAIN)
    with pytest.raises(SourceError) as err:
        load_test_split(src)
    message = str(err.value)
    assert "AmazonCounterfactualClassification" in message and "split 'test' (config 'en')" in message
    assert "en/train.jsonl.gz" in message and "amazon_counterfactual.py" in message and "per-config folder" in message


def test_an_unreadable_test_split_fails_the_reference_instead_of_shrinking_it(tmp_path):
    """No `except SourceError` turns a failed read into a warning: the reference stage fails."""
    files = {k: v for k, v in LAYOUT_FILES["per-config jsonl.gz + script"].items() if k != "en/test.jsonl.gz"}
    make_hub_repo(tmp_path / "cache", TASK.hub_id, TASK.revision, files)
    tasks = [TaskSource(name=TASK.name, cache_dir=tmp_path / "cache")]
    with pytest.raises(SourceError, match=r"AmazonCounterfactualClassification .*split 'test'"):
        collect_test_texts(Workspace(tmp_path / "home", "t"), tasks)


def test_only_a_task_truly_without_a_test_split_goes_on_and_is_named(tmp_path):
    (tmp_path / "train.jsonl").write_text(jsonl(TRAIN))
    tasks = [TaskSource(name="Mine", kind="local", path=tmp_path / "train.jsonl")]
    report = collect_test_texts(Workspace(tmp_path / "home", "t"), tasks)
    assert report.test_texts == 0 and report.not_decontaminated == {"Mine": "local task with no `test_path` in the config"}


@pytest.mark.slow
def test_a_build_reads_amazon_counterfactual_from_per_config_folders(tmp_path, capsys):
    """The acceptance case: `en/{train,validation,test}.jsonl` + a loading script, no card, offline build."""
    from gistforge.cli import build
    from pipeline.road.decontaminate import ReferenceReport

    files = {"amazon_counterfactual.py": SCRIPT, "en/train.jsonl": jsonl(TRAIN), "en/validation.jsonl": jsonl(TEST),
             "en/test.jsonl": jsonl(TEST)}
    snap = make_hub_repo(tmp_path / "cache", TASK.hub_id, TASK.revision, files)
    cfg = BuildConfig(profile="ac", medi=None, guide_model="bundled:all-MiniLM-L6-v2",
                      tasks=[TaskSource(name=TASK.name, cache_dir=tmp_path / "cache")])
    (tmp_path / "ac.yaml").write_text(json.dumps(cfg.model_dump(mode="json")))
    assert build(["build", "--config", str(tmp_path / "ac.yaml"), "--home", str(tmp_path / "home"),
                  "--no-finetune"]) == 0
    ws = Workspace(tmp_path / "home", "ac")
    assert ws.load_report(ws.test_texts(), ReferenceReport).per_task == {TASK.name: len(TEST)}
    rows = pl.read_parquet(list((ws.build_dir() / "data").glob("*/*.parquet")))
    assert rows["task_type"].unique().to_list() == ["mteb_amazon_counterfactual"] and rows.height >= len(TRAIN) - 1
    assert not (snap / "SCRIPT_RAN").exists()

    (snap / "en" / "test.jsonl").unlink()  # now the test split cannot be read: the build must stop, saying why
    capsys.readouterr()
    assert build(["build", "--config", str(tmp_path / "ac.yaml"), "--home", str(tmp_path / "home2"),
                  "--no-finetune"]) == 1
    err = capsys.readouterr().err
    assert "AmazonCounterfactualClassification" in err and "split 'test'" in err and "en/train.jsonl" in err


def test_the_readme_lists_the_layouts_in_the_order_they_are_tried():
    """The README's list is the registry's, so a layout added to `LAYOUTS` is documented or this fails."""
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    listed = readme.split("<!-- layouts -->")[1].split("<!-- /layouts -->")[0].strip().splitlines()
    assert listed == [f"{i}. {layout.description}" for i, layout in enumerate(LAYOUTS, 1)]


@pytest.mark.parametrize("data_files", ["files/t.jsonl", "[files/t.jsonl]",
                                        "{train: files/t.jsonl, test: files/s.jsonl}",
                                        "[{split: train, path: [files/t.jsonl]}]"])
def test_a_cards_data_files_are_read_in_every_form_datasets_reads(tmp_path, data_files):
    """A bare pattern, a list (both: the train split), a split mapping and a list of split entries."""
    card = f"---\nconfigs:\n- config_name: en\n  data_files: {data_files}\n---\n"
    snap = make_hub_repo(tmp_path, TASK.hub_id, TASK.revision, {"README.md": card, "files/t.jsonl": jsonl(TRAIN),
                                                                "files/s.jsonl": jsonl(TEST)})
    found = find_split(snap, "en", "train", "T")
    assert found.layout == LAYOUTS[0].description and [p.name for p in found.files] == ["t.jsonl"]


def test_a_malformed_data_files_entry_is_a_source_error_naming_the_card_line_and_config(tmp_path):
    """The line named is the bad config's own `data_files` (line 6), not an earlier config's (line 4)."""
    card = ("---\nconfigs:\n- config_name: de\n  data_files: de.jsonl\n- config_name: en\n  data_files:\n"
            "  - split: train\n    path: a.jsonl\n  - split: train\n    path: b.jsonl\n---\n")
    snap = make_hub_repo(tmp_path, TASK.hub_id, TASK.revision, {"README.md": card, "a.jsonl": jsonl(TRAIN)})
    with pytest.raises(SourceError, match=r"^T: README\.md line 6: config 'en': Some splits are duplicated in "
                                          r"data_files.*fix the card's data_files$"):
        find_split(snap, "en", "train", "T")
