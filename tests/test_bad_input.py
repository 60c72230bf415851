"""Bad input, tried: each case ends in a clear error naming the source, or a counted drop."""

import json

import polars as pl
import pytest

from pipeline.road.clean import clean_labelled
from pipeline.config import TaskSource
from pipeline.road.sources import SourceError, load_task_split


def _local(tmp_path, name: str, content: bytes, **kw) -> TaskSource:
    path = tmp_path / name
    path.write_bytes(content)
    return TaskSource(name="T", kind="local", path=path, label_text_column=None, **kw)


def test_bom_is_stripped_and_non_utf8_is_a_clear_error(tmp_path):
    src = _local(tmp_path, "bom.csv", "\ufefftext,label\nhello,a\nworld,b\n".encode("utf-8"))
    assert load_task_split(src)["text"].to_list() == ["hello", "world"]
    src = _local(tmp_path, "latin1.csv", "text,label\nhello,a\ncaf\xe9,b\n".encode("latin-1"))
    with pytest.raises(SourceError, match=r"local task T .*latin1.csv is not valid UTF-8 at line 3"):
        load_task_split(src)
    src = _local(tmp_path, "bom.jsonl", b"\xef\xbb\xbf" + json.dumps({"text": "x", "label": 1}).encode() + b"\n")
    assert load_task_split(src)["label"].to_list() == ["1"]


def test_renamed_column_and_none_values(tmp_path):
    src = _local(tmp_path, "renamed.jsonl", b'{"sentence": "a", "label": 1}\n')
    with pytest.raises(SourceError, match=r"missing column\(s\) 'text' \(for text\); the source has \['sentence', 'label'\]"):
        load_task_split(src)
    rows = [{"text": t, "label": l} for t, l in
            [("a", 1), (None, 1), ("  ", 2), ("b", None), ("c", 2), ("d", 2), ("e", 1), ("A", 1)]]
    src = _local(tmp_path, "nones.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
    out, acc = clean_labelled(load_task_split(src), "T")
    assert acc.drops == {"empty_text": 2, "missing_label": 1, "duplicate_text": 1} and acc.balanced
    assert out["text"].to_list() == ["a", "c", "d", "e"]


def test_very_long_text_is_kept_intact(tmp_path):
    """Truncated only inside the encoder; the published text is the whole text."""
    from pipeline.config import BuildConfig
    from pipeline.workspace import Workspace
    from pipeline.road.stages import Road

    long = "a very long review " * 6000  # 114k characters
    rows = [{"text": long, "label": 0}] + [{"text": f"short text {i}", "label": i % 2} for i in range(7)]
    path = tmp_path / "long.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = BuildConfig(profile="t", medi=None, guide_model="bundled:all-MiniLM-L6-v2",
                      decontamination={"exact": False},
                      tasks=[TaskSource(name="Long", kind="local", path=path, label_text_column=None)])
    ws = Workspace(tmp_path / "home", "t")
    road = Road(cfg, ws)
    road.split("Long")
    road.mine("Long")
    df = pl.read_parquet(ws.triplets("Long"))
    kept = df.filter(pl.col("query").str.len_chars() > 100_000)
    assert kept.height == 1 and kept["query"][0] == long


def test_missing_value_markers_in_a_csv_label_are_missing_labels(tmp_path):
    rows = "text,label\n" + "".join(f"text {i},{lab}\n" for i, lab in
                                    enumerate(["a", "NaN", "a", "NA", "b", "null", "b", "None", "", " nan "]))
    out, acc = clean_labelled(load_task_split(_local(tmp_path, "marks.csv", rows.encode())), "T")
    assert acc.drops == {"missing_label": 6} and acc.balanced
    assert sorted(set(out["label"].to_list())) == ["a", "b"]


def test_a_task_left_with_no_eligible_row_mines_nothing_and_the_build_goes_on(tmp_path):
    """One label only: ingest counts every row as `no_other_label`; mining yields no triplets instead of crashing."""
    from pipeline.config import BuildConfig
    from pipeline.road.build import EmptyBuildError, build_dataset
    from pipeline.workspace import Workspace
    from pipeline.road.stages import Road

    (tmp_path / "one.jsonl").write_text("".join(json.dumps({"text": f"t{i}", "label": 0}) + "\n" for i in range(5)))
    (tmp_path / "two.jsonl").write_text("".join(json.dumps({"text": f"u{i}", "label": i % 2}) + "\n" for i in range(6)))
    cfg = BuildConfig(profile="d", medi=None, guide_model="bundled:all-MiniLM-L6-v2", decontamination={"exact": False},
                      tasks=[TaskSource(name="One", kind="local", path=tmp_path / "one.jsonl", label_text_column=None),
                             TaskSource(name="Two", kind="local", path=tmp_path / "two.jsonl", label_text_column=None)])
    ws = Workspace(tmp_path / "home", "d")
    road = Road(cfg, ws)
    road.medi()
    assert road.split("One").account.drops == {"no_other_label": 5}
    loads = []
    empty = road.mine("One", guide=lambda ref: loads.append(1))
    assert empty.account.rows_in == 0 and empty.mining.triplets == 0 and loads == [], "no model for no rows"
    road.split("Two")
    road.mine("Two")
    report = build_dataset(ws, cfg)
    assert {t.task_name for t in report.tasks} == {"Two"} and all(c.passed for c in report.checks)

    only_one = cfg.model_copy(update={"tasks": cfg.tasks[:1]})
    with pytest.raises(EmptyBuildError, match="no rows to publish"):
        build_dataset(ws, only_one)
