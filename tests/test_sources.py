import json

import polars as pl
import pytest

from pipeline.config import MediSource, TaskSource
from pipeline.road.sources import SourceError, load_medi, load_task_split
from tests.conftest import BANKING_REV, jsonl, make_hub_repo


def test_hub_task_loads_from_an_offline_cache(tmp_path, banking_like_rows):
    make_hub_repo(tmp_path, "mteb/banking77", BANKING_REV, {"train.jsonl": jsonl(banking_like_rows),
                                                            "test.jsonl": jsonl(banking_like_rows[:3])})
    df = load_task_split(TaskSource(name="Banking77Classification", cache_dir=tmp_path))
    assert df.columns == ["text", "label", "label_text"]
    assert df.height == len(banking_like_rows)
    assert set(df["label_text"]) == {"card_arrival", "top_up", "exchange_rate"}


def test_missing_revision_in_offline_cache_names_repo_and_revision(tmp_path, banking_like_rows):
    make_hub_repo(tmp_path, "mteb/banking77", "a" * 40, {"train.jsonl": jsonl(banking_like_rows)})
    with pytest.raises(SourceError, match=f"mteb/banking77@{BANKING_REV}: this revision is not in the offline Hub cache"):
        load_task_split(TaskSource(name="Banking77Classification", cache_dir=tmp_path))


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet"])
def test_local_files_with_a_column_mapping(tmp_path, suffix, banking_like_rows):
    df = pl.DataFrame([{"utterance": r["text"], "intent": r["label_text"]} for r in banking_like_rows])
    path = tmp_path / f"data{suffix}"
    {".csv": lambda: df.write_csv(path), ".tsv": lambda: df.write_csv(path, separator="\t"),
     ".jsonl": lambda: df.write_ndjson(path), ".parquet": lambda: df.write_parquet(path)}[suffix]()
    src = TaskSource(name="MyIntents", kind="local", path=path, text_column="utterance", label_column="intent",
                     label_text_column=None)
    out = load_task_split(src)
    assert out.height == len(banking_like_rows)
    assert out["label"].to_list() == [r["label_text"] for r in banking_like_rows]


def test_missing_column_error_names_source_and_column(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("sentence,label\nhello,a\n")
    with pytest.raises(SourceError, match=r"local task T .*missing column\(s\) 'text' \(for text\).*\['sentence', 'label'\]"):
        load_task_split(TaskSource(name="T", kind="local", path=path, label_text_column=None))


def test_wrong_types_and_empty_sources_are_clear_errors(tmp_path):
    ints = tmp_path / "ints.jsonl"
    ints.write_text(jsonl([{"text": 1, "label": 0}, {"text": 2, "label": 1}]))
    with pytest.raises(SourceError, match="column 'text' must hold strings, found Int64"):
        load_task_split(TaskSource(name="T", kind="local", path=ints, label_text_column=None))
    lists = tmp_path / "lists.jsonl"
    lists.write_text(jsonl([{"text": "a", "label": [0, 1]}]))
    with pytest.raises(SourceError, match="column 'label' must hold one label per row"):
        load_task_split(TaskSource(name="T", kind="local", path=lists, label_text_column=None))
    empty = tmp_path / "empty.csv"
    empty.write_text("text,label\n")
    with pytest.raises(SourceError, match="the source is empty"):
        load_task_split(TaskSource(name="T", kind="local", path=empty, label_text_column=None))
    (tmp_path / "a.xlsx").write_bytes(b"PK")
    with pytest.raises(SourceError, match="unsupported file type '.xlsx'"):
        load_task_split(TaskSource(name="T", kind="local", path=tmp_path / "a.xlsx"))


def test_medi_json_format_with_task_name_or_task_id(tmp_path):
    records = [
        {"query": ["Represent the question:", "what is gist"], "pos": ["Represent the doc:", "GIST is a loss"],
         "neg": ["Represent the doc:", "bananas are yellow"], "task_name": "qa"},
        {"query": ["", "a"], "pos": ["", "b"], "neg": ["", "c"], "task_id": 7},
    ]
    path = tmp_path / "medi-data.json"
    path.write_text(json.dumps(records))
    df = load_medi(MediSource(kind="json", path=path))
    assert df.to_dicts()[0] == {"query": "what is gist", "pos": "GIST is a loss", "neg": "bananas are yellow",
                                "task_name": "qa", "query_instruct": "Represent the question:",
                                "pos_instruct": "Represent the doc:", "neg_instruct": "Represent the doc:"}
    assert df["task_name"][1] == "7"
    path.write_text(json.dumps([{"query": "flat", "pos": ["", "b"], "neg": ["", "c"], "task_name": "t"}]))
    with pytest.raises(SourceError, match=r"row 0: 'query' must be an \[instruction, text\] pair"):
        load_medi(MediSource(kind="json", path=path))


def test_medi_hub_parquet_from_cache(tmp_path):
    import io

    df = pl.DataFrame({"query": ["q"], "pos": ["p"], "neg": ["n"], "task_name": ["t"], "query_instruct": ["i"],
                       "pos_instruct": ["i"], "neg_instruct": ["i"]})
    buf = io.BytesIO()
    df.write_parquet(buf)
    make_hub_repo(tmp_path, "avsolatorio/medi-data", "b" * 40, {"data/train-00000-of-00001.parquet": buf.getvalue()})
    out = load_medi(MediSource(cache_dir=tmp_path))
    assert out.to_dicts() == df.to_dicts()
    make_hub_repo(tmp_path, "avsolatorio/medi-data", "c" * 40,
                  {"data/train-00000-of-00001.parquet": buf.getvalue()}, ref="other")
    with pytest.raises(SourceError, match="avsolatorio/medi-data@nope"):
        load_medi(MediSource(cache_dir=tmp_path, revision="nope"))


def test_only_the_shipped_sample_is_called_a_sample(tmp_path):
    from pipeline.config import SAMPLE_DIR
    from pipeline.road.sources import resolve

    shipped = TaskSource(name="Banking77Classification", cache_dir=SAMPLE_DIR / "hf-hub-cache")
    user_cache = tmp_path / "sample" / "hub"  # "sample" in the path
    make_hub_repo(user_cache, "mteb/banking77", "0fd18e25b25c072e09e0d92ab615fda904d66300", {"train.jsonl": "{}\n"})
    user = TaskSource(name="Banking77Classification", cache_dir=user_cache)
    assert resolve(shipped).provenance.sample is True
    assert resolve(user).provenance.sample is False


def test_a_stage_resolves_a_hub_source_once_so_a_moving_ref_names_one_commit(tmp_path, banking_like_rows, monkeypatch):
    """The reference and an ingest each ask the Hub (here its cache) for a source's snapshot once, and the
    fingerprint, the rows and the card's provenance all name that one commit, also for a moving ref (`main`)."""
    from pipeline.config import DecontaminationConfig
    from pipeline.road import sources
    from pipeline.road.decontaminate import collect_test_texts
    from pipeline.road.ingest import ingest_task
    from pipeline.workspace import Workspace

    cache = tmp_path / "hub"
    make_hub_repo(cache, "mteb/banking77", "d" * 40, {"train.jsonl": jsonl(banking_like_rows),
                                                      "test.jsonl": jsonl(banking_like_rows[:2])})
    calls = []
    real = sources.hub.hub_snapshot
    monkeypatch.setattr(sources.hub, "hub_snapshot", lambda *a, **kw: calls.append(a[:2]) or real(*a, **kw))
    src = TaskSource(name="Banking77Classification", cache_dir=cache, revision="main")
    ws = Workspace(tmp_path / "home", "t")
    collect_test_texts(ws, [src])
    assert calls == [("mteb/banking77", "main")]
    report = ingest_task(ws, src, DecontaminationConfig(), {})
    assert len(calls) == 2
    assert report.source.commit == "d" * 40 and report.source.moving_ref is True
    assert report.layout.startswith("root-level") and report.files == ["train.jsonl"], "what was read, named"
    assert report.account.rows_in == len(banking_like_rows)
    ingest_task(ws, src, DecontaminationConfig(), {})  # reused: the identity is the one lookup
    assert len(calls) == 3


def test_a_resolved_source_holds_one_identity_for_the_fingerprint_and_a_path_free_provenance(tmp_path):
    """A local file is pinned by its path, size and mtime (for reuse) but the card names only its file name; a
    reader given the resolved source reads the same file without resolving it again."""
    from pipeline.road.sources import resolve

    path = tmp_path / "deep" / "intents.jsonl"
    path.parent.mkdir()
    path.write_text('{"text": "hi", "label": "greet"}\n')
    found = resolve(TaskSource(name="T", kind="local", path=path, label_text_column=None, license="cc-by-4.0"))
    assert found.identity["file"]["size"] == path.stat().st_size and found.identity["test"] == {}
    assert found.provenance.path == "intents.jsonl" and str(tmp_path) not in found.provenance.model_dump_json()
    assert (found.provenance.license, found.provenance.license_from) == ("cc-by-4.0", "the build config")
    assert load_task_split(found)["text"].to_list() == ["hi"]
    assert found.read_from() == (None, ["intents.jsonl"])


def test_a_hub_source_s_split_is_located_once_and_named_relative_to_its_snapshot(tmp_path, banking_like_rows):
    from pipeline.road.sources import resolve

    cache = tmp_path / "hub"
    make_hub_repo(cache, "mteb/banking77", "0fd18e25b25c072e09e0d92ab615fda904d66300",
                  {"data/train-00000-of-00001.jsonl": jsonl(banking_like_rows)})
    found = resolve(TaskSource(name="Banking77Classification", cache_dir=cache))
    assert found.split_files(*found.train_split) is found.split_files(*found.train_split), "looked up once"
    layout, files = found.read_from()
    assert layout.startswith("root-level") and files == ["data/train-00000-of-00001.jsonl"]
    assert len(load_task_split(found)) == len(banking_like_rows)
