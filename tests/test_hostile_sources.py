"""Hostile and sloppy sources (issue 23, items 1, 5, 6, 7, 10, 11): a card or link that reaches outside its
snapshot, `---` inside front matter, names with a trailing newline, task_type collisions, MEDI's JSON read
whole, labels that differ only in spelling."""

from __future__ import annotations

import hashlib
import json
import os
import re
from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, example, given, settings, strategies as st

from pipeline.common.text import canonical_label, front_matter
from pipeline.config import _SAFE_NAME, BuildConfig, MediSource, TaskSource, is_commit
from pipeline.profiles import ConfigError, load_config
from pipeline.registry import MTEB_TASKS
from pipeline.road import sources
from pipeline.road.clean import clean_labelled
from pipeline.road.sources import LAYOUTS, SourceError, find_split, load_medi, load_task_split
from pipeline.schema import MEDI_COLUMNS
from tests.conftest import BANKING_REV, jsonl, make_hub_repo

MEDI_REV = "b" * 40
ROW = {"query": "q", "pos": "p", "neg": "n", "task_name": "t", "query_instruct": "", "pos_instruct": "",
       "neg_instruct": ""}
SECRET = {**ROW, "query": "the victim's private text"}
VICTIM = "victim/private"


def _victim(cache: Path) -> Path:
    """A private repo next to the attacker's in the same Hub cache."""
    return make_hub_repo(cache, VICTIM, "c" * 40, {"secret.jsonl": jsonl([SECRET])})


def _medi(cache: Path) -> MediSource:
    return MediSource(revision=MEDI_REV, cache_dir=cache)


def _card(pattern: str) -> str:
    return ("---\nlicense: mit\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n"
            f"    path: {json.dumps(pattern)}\n---\n# medi\n")


def _blob_repo(cache: Path, repo_id: str, revision: str, files: dict[str, str]) -> Path:
    """A repo as `snapshot_download` really leaves it: snapshot files are relative links into `../../blobs`."""
    repo = cache / f"datasets--{repo_id.replace('/', '--')}"
    (repo / "blobs").mkdir(parents=True, exist_ok=True)
    snap = repo / "snapshots" / revision
    for name, content in files.items():
        blob = repo / "blobs" / hashlib.sha256(content.encode()).hexdigest()
        blob.write_text(content)
        link = snap / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (repo / "refs").mkdir(exist_ok=True)
    (repo / "refs" / "main").write_text(revision)
    return snap


# --- 1. nothing is read from outside the snapshot ------------------------------------------------------------

def test_a_card_pattern_climbing_into_a_victim_repo_is_refused_naming_the_card_line(tmp_path):
    _victim(tmp_path)
    pattern = "../../../datasets--victim--private/snapshots/*/*.jsonl"
    make_hub_repo(tmp_path, "avsolatorio/medi-data", MEDI_REV, {"README.md": _card(pattern)})
    with pytest.raises(SourceError, match=r"MEDI \(avsolatorio/medi-data@b+\): README\.md line 7: data_files pattern "
                                          + re.escape(repr(pattern)) + r" climbs out with '\.\.': refused") as err:
        load_medi(_medi(tmp_path))
    assert "\n" not in str(err.value) and "victim's private" not in str(err.value)


def test_an_absolute_card_pattern_is_a_source_error_not_a_crash(tmp_path):
    victim = _victim(tmp_path)
    make_hub_repo(tmp_path, "avsolatorio/medi-data", MEDI_REV, {"README.md": _card(str(victim / "*.jsonl"))})
    with pytest.raises(SourceError, match=r"README\.md line 7: data_files pattern .* is absolute: refused"):
        load_medi(_medi(tmp_path))


@pytest.mark.parametrize("link", ["file", "folder", "other repo's blob"])
def test_a_symlink_escaping_the_snapshot_is_refused(tmp_path, link):
    victim = _victim(tmp_path)
    snap = make_hub_repo(tmp_path, "avsolatorio/medi-data", MEDI_REV, {"README.md": "# no configs\n"})
    if link == "file":
        (snap / "train.jsonl").symlink_to(victim / "secret.jsonl")
    elif link == "folder":
        (snap / "data").symlink_to(victim, target_is_directory=True)
        (victim / "train-0.jsonl").write_text(jsonl([SECRET]))
    else:  # into the victim's blobs: only the snapshot's own repo's blobs/ are allowed
        blob = victim.parent.parent / "blobs" / "deadbeef"
        blob.parent.mkdir()
        blob.write_text(jsonl([SECRET]))
        (snap / "train.jsonl").symlink_to(os.path.relpath(blob, snap))
    with pytest.raises(SourceError, match=r"data file '.*' resolves to .*, outside the snapshot .* and its repo's "
                                          r"blobs/: refused"):
        load_medi(_medi(tmp_path))


def test_a_card_linking_outside_is_refused_too(tmp_path):
    victim = _victim(tmp_path)
    (victim / "README.md").write_text(_card("secret.jsonl"))
    snap = make_hub_repo(tmp_path, "avsolatorio/medi-data", MEDI_REV, {"train.jsonl": jsonl([ROW])})
    (snap / "README.md").symlink_to(victim / "README.md")
    with pytest.raises(SourceError, match=r"README.md resolves to .*outside the snapshot"):
        load_medi(_medi(tmp_path))


def test_hub_cache_links_into_the_repos_own_blobs_are_read(tmp_path, banking_like_rows):
    """The real cache layout: every snapshot file is a link to `../../blobs/<hash>`, and that is allowed."""
    _blob_repo(tmp_path, "mteb/banking77", BANKING_REV, {
        "README.md": "---\nconfigs:\n- config_name: default\n  data_files:\n  - split: train\n    path: d/train.jsonl\n---\n",
        "d/train.jsonl": jsonl(banking_like_rows)})
    df = load_task_split(TaskSource(name="Banking77Classification", cache_dir=tmp_path))
    assert df.height == len(banking_like_rows)


# --- 5. front matter split on its own `---` lines --------------------------------------------------------------

def test_a_triple_dash_inside_a_source_card_value_does_not_hide_its_configs(tmp_path):
    snap = make_hub_repo(tmp_path, "org/x", "a" * 40, {
        "README.md": "---\npretty_name: my---data\nconfigs:\n- config_name: default\n  data_files:\n"
                     "  - split: train\n    path: only/here.jsonl\n---\n# x\n---\nmore body\n",
        "only/here.jsonl": jsonl([ROW])})
    found = find_split(snap, None, "train")
    assert found is not None and found.layout == LAYOUTS[0].description


def test_the_blocking_card_check_reads_a_repo_id_with_triple_dashes(tmp_path):
    from pipeline.road.build import assemble, write_build
    from pipeline.road.checks import verify_build
    from tests.test_build import _frames

    table = assemble(_frames(), seed=1)
    card = (lambda _: f"---\npretty_name: org/my---data\ndataset_info:\n  splits:\n  - name: train\n"
                      f"    num_examples: {table.num_rows}\n---\n# org/my---data\n")
    write_build(table, card, tmp_path / "build", max_shard_bytes=1 << 20)
    outcomes = {o.name: o for o in verify_build(tmp_path / "build", {}, [])}
    assert outcomes["shards_match_card"].passed, outcomes["shards_match_card"].metadata


_VALUE = st.text(alphabet="ab-: /_.", min_size=1, max_size=20).filter(lambda v: v.strip() == v)


@settings(deadline=None)  # pure functions: a 200 ms stall of a loaded machine is no failure
@given(meta=st.dictionaries(st.from_regex(r"[a-z]{1,8}", fullmatch=True), _VALUE, max_size=5),
       body=st.lists(st.sampled_from(["---", "# title", "text --- more", "", "---x"]), max_size=6))
def test_front_matter_is_exactly_the_block_between_its_own_dash_lines(meta, body):
    card = "---\n" + yaml.safe_dump(meta) + "---\n" + "\n".join(body)
    assert (yaml.safe_load(front_matter(card)) or {}) == meta
    assert front_matter("# no front matter\n---\n" + card) is None


# --- 6. names: the whole string, not up to a trailing newline -------------------------------------------------

def test_names_with_a_trailing_newline_are_refused_in_one_line(tmp_path):
    for bad in ("Foo\n", "embedded\n"):
        with pytest.raises(ValueError, match="task name"):
            TaskSource(name=bad, kind="local", path="x.csv")
    with pytest.raises(ValueError, match=r"profile 'embedded\\n' must match"):
        BuildConfig(profile="embedded\n", medi=None, tasks=[])
    for field in ("dataset_repo_id", "medi"):
        with pytest.raises(ValueError, match="repo_id 'org/name\\\\n' must look like 'org/name'"):
            BuildConfig(profile="x", tasks=[], **({field: "org/name\n"} if field == "dataset_repo_id"
                                                  else {"medi": {"repo_id": "org/name\n", "revision": "a" * 40}}))
    assert not is_commit("a" * 40 + "\n")
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"profile": "x", "medi": None,
                                    "tasks": [{"name": "Foo\n", "kind": "local", "path": "x.csv"}]}))
    with pytest.raises(ConfigError, match=r"tasks\.0\.name: Value error, task name 'Foo\\n' must match") as err:
        load_config(path)
    assert "\n" not in str(err.value)


@settings(deadline=None)
@given(st.from_regex(_SAFE_NAME.pattern, fullmatch=True))
def test_a_name_of_the_pattern_is_accepted(name):
    assume(name not in MTEB_TASKS)
    assert TaskSource(name=name, kind="local", path="x.csv").name == name


@settings(deadline=None)
@given(st.from_regex(_SAFE_NAME.pattern, fullmatch=True), st.sampled_from(["\n", "\r\n", " ", "/", "\x00", "\n\n"]))
def test_a_name_with_anything_after_the_pattern_is_refused(name, extra):
    assume(len(name) < 96)
    with pytest.raises(ValueError, match="task name"):
        TaskSource(name=name + extra, kind="local", path="x.csv")
    with pytest.raises(ValueError, match="dataset_repo_id"):
        BuildConfig(profile="x", medi=None, tasks=[], dataset_repo_id=f"org/{name.replace('..', 'x')}{extra}")


@settings(deadline=None)
@given(st.text(max_size=12))
@example("Foo\n")
def test_task_names_are_accepted_exactly_when_the_whole_name_matches(name):
    assume(name not in MTEB_TASKS)
    try:
        TaskSource(name=name, kind="local", path="x.csv")
        accepted = True
    except ValueError:
        accepted = False
    assert accepted == bool(re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}", name))


# --- 7. task_type collisions and MTEB names on local tasks ----------------------------------------------------

def _local_tasks(*names):
    return [{"name": n, "kind": "local", "path": "x.csv"} for n in names]


@pytest.mark.parametrize("other", ["foo_bar", "Foo.Bar", "foo-bar", "FOO_BAR", "Foobar"])
def test_tasks_sharing_a_task_type_or_a_case_folded_name_are_refused_naming_both(tmp_path, other):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"profile": "x", "medi": None, "tasks": _local_tasks("FooBar", other)}))
    with pytest.raises(ConfigError, match=f"tasks 'FooBar' and {re.escape(repr(other))} share ") as err:
        load_config(path)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("name", sorted(MTEB_TASKS))
def test_a_local_task_named_like_an_mteb_task_is_refused(name):
    with pytest.raises(ValueError, match=f"local task source '{name}' has an MTEB task's name.*'mteb_"):
        TaskSource(name=name, kind="local", path="x.csv")


@settings(deadline=None)
@given(st.lists(st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,12}", fullmatch=True), max_size=6))
@example(["FooBar", "foo_bar"])
def test_only_mteb_rows_get_a_task_type_starting_mteb(names):
    tasks = [TaskSource(name=n, kind="local", path="x.csv") for n in names if n not in MTEB_TASKS]
    tasks += [TaskSource(name="Banking77Classification")]
    try:
        cfg = BuildConfig(profile="x", medi=None, tasks=tasks)
    except ValueError:
        types = [t.task_type for t in tasks]
        folded = [t.name.casefold() for t in tasks]
        assert len(set(types)) < len(types) or len(set(folded)) < len(folded), "refused without a collision"
        return
    types = [t.task_type for t in cfg.tasks]
    assert len(set(types)) == len(types)
    assert all(tt.startswith("mteb_") == (t.kind == "hub") for t, tt in zip(cfg.tasks, types))


# --- 10. medi-data.json streamed -------------------------------------------------------------------------------

def _medi_records(n):
    return [{"query": [f"qi{i}", f"q{i}"], "pos": [f"pi{i}", f"p{i}"], "neg": [f"ni{i}", f"n{i}"],
             **({"task_name": f"t{i % 3}"} if i % 2 else {"task_id": i % 3})} for i in range(n)]


def test_medi_json_is_streamed_not_parsed_whole(tmp_path, monkeypatch):
    path = tmp_path / "medi-data.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(_medi_records(7)).encode())
    monkeypatch.setattr(sources.medi, "_MEDI_CHUNK", 3)  # several frames, stitched in order

    def whole(*_a, **_k):
        raise AssertionError("medi-data.json was parsed whole with json.loads")
    monkeypatch.setattr(json, "loads", whole)
    df = load_medi(MediSource(kind="json", path=path))
    assert df.columns == MEDI_COLUMNS and df.height == 7
    assert df["query"].to_list() == [f"q{i}" for i in range(7)]
    assert df["neg_instruct"].to_list() == [f"ni{i}" for i in range(7)]
    assert df["task_name"].to_list() == [f"t{i % 3}" if i % 2 else str(i % 3) for i in range(7)]


@pytest.mark.parametrize("content, message", [
    ('{"query": []}', r"expected a JSON list of triplet objects, found dict"),
    ('"x"', r"expected a JSON list of triplet objects, found str"),
    ('[{"query": ["", "a"], "pos": ["", "b"], "neg": ["", "c"], "task_name": "t"}, 3]',
     r"row 1: expected an object, found int"),
    ('[{"query": ["", "a"], "pos": ["", "b"], "neg": ["", "c"]}]', r"row 0: needs 'task_name' or 'task_id'"),
    ('[{"query": ["", 5], "pos": ["", "b"], "neg": ["", "c"], "task_name": "t"}]',
     r"row 0: 'query' must be an \[instruction, text\] pair"),
    ('[{"query": ["", "a"], "pos": ["", "b"], "neg": ["", "c"], "task_name": "t"}, {"query": ',
     r"cannot read .*medi-data.json as JSON after row 0: parse error: premature EOF"),
    ('', r"cannot read .*medi-data.json as JSON: parse error"),
])
def test_bad_medi_json_names_the_row_in_one_line(tmp_path, content, message):
    path = tmp_path / "medi-data.json"
    path.write_text(content)
    with pytest.raises(SourceError, match=r"MEDI json .*" + message) as err:
        load_medi(MediSource(kind="json", path=path))
    assert "\n" not in str(err.value)


# --- 11. labels: classes, not spellings ------------------------------------------------------------------------

TEXTS = ["card has not arrived", "where is my card", "card still missing", "top up failed", "how to top up",
         "top up by transfer"]


def _labels(tmp_path, suffix, labels):
    rows = [{"text": t, "label": label} for t, label in zip(TEXTS, labels)]
    path = tmp_path / f"t{suffix}"
    if suffix == ".csv":
        path.write_text("text,label\n" + "".join(f"{r['text']},{r['label']}\n" for r in rows))
    else:
        path.write_text(jsonl(rows))
    return load_task_split(TaskSource(name="T", kind="local", path=path, label_text_column=None))


@pytest.mark.parametrize("suffix, labels", [
    (".csv", ["1", " 1", "1.0", "2", "2.00 ", "+2"]),
    (".jsonl", [1, 1.0, " 1", 2, 2.0, "2"]),
    (".jsonl", [" pos", "pos ", "pos", "neg", "neg\t", " neg "]),
])
def test_labels_that_differ_only_in_spelling_are_one_class(tmp_path, suffix, labels):
    df = _labels(tmp_path, suffix, labels)
    want = ["pos"] * 3 + ["neg"] * 3 if labels[2] == "pos" else ["1"] * 3 + ["2"] * 3
    assert df["label"].to_list() == want and df["label_text"].to_list() == want
    out, acc = clean_labelled(df, "T")
    assert out["label"].n_unique() == 2 and acc.drops.get("single_member_label", 0) == 0


def test_csv_and_jsonl_give_the_same_classes(tmp_path):
    csv = _labels(tmp_path, ".csv", ["1", "1.0", " 1", "0", "0.0", "-0"])
    js = _labels(tmp_path, ".jsonl", [1, 1.0, " 1", 0, 0.0, "-0"])
    assert csv["label"].to_list() == js["label"].to_list() == ["1"] * 3 + ["0"] * 3


def test_a_blank_label_is_missing_in_every_format(tmp_path):
    for suffix, labels in ((".csv", ["a", "a", "a", "b", "b", " "]), (".jsonl", ["a", "a", "a", "b", "b", "  "])):
        assert _labels(tmp_path, suffix, labels)["label"].null_count() == 1


@settings(deadline=None)
@given(st.text(max_size=12))
def test_canonical_label_is_idempotent(label):
    once = canonical_label(label)
    assert canonical_label(once) == once and once == once.strip()


@settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(min_value=-10**12, max_value=10**12), st.data())
def test_format_variants_of_an_integer_are_one_label(n, data):
    spellings = [str(n), f" {n} ", f"{n}.0", f"{n}.000", f"{n}e0", f"{'+' if n >= 0 else ''}{n}",
                 f"{'-' if n < 0 else ''}0{abs(n)}", str(float(n)) if abs(n) < 10**15 else str(n)]
    assert {canonical_label(s) for s in spellings} == {str(n)}


@settings(deadline=None)
@given(st.decimals(allow_nan=False, allow_infinity=False, min_value=-10**6, max_value=10**6, places=4))
def test_format_variants_of_a_decimal_are_one_label(d):
    plain = format(d, "f")
    variants = [plain, f"{plain}00" if "." in plain else f"{plain}.00", f"  {plain}", format(d, "e")]
    labels = {canonical_label(v) for v in variants}
    assert len(labels) == 1 and Decimal(labels.pop()) == d
