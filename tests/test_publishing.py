"""Versioned publishing: the local hub read back the way trainers read the Hub, and the Hub path."""

import datetime as dt
import json
import logging
import os
from pathlib import Path

import polars as pl
import pytest

from pipeline.road import local_hub, versioning
from pipeline.road.build import assemble, write_build
from pipeline.road.hub_publisher import HubPublisher
from pipeline.road.local_hub import LocalHub
from pipeline.road.publish import PublishError
from tests.hub_double import GitHubApi
from tests.test_build import _frames

TOKEN = "hf_SECRETtoken1234567890"


def _build(tmp_path: Path, seed: int, rows: int = 30) -> Path:
    dest = tmp_path / f"build-{seed}-{rows}"
    write_build(assemble(_frames(rows), seed=seed), lambda size: "---\nlicense: other\n---\n# card\n", dest, 1 << 20)
    return dest


def test_diff_against_previous_version_in_card_and_manifest(tmp_path):
    hub = LocalHub(tmp_path / "hub")
    first = hub.publish(_build(tmp_path, 1, rows=30), "org/ds", today=dt.date(2026, 1, 1))
    second = hub.publish(_build(tmp_path, 1, rows=36), "org/ds", today=dt.date(2026, 1, 2))
    assert first.previous_tag is None and all(d.added > 0 and d.kept == 0 for d in first.diff)
    assert second.previous_tag == first.tag
    by_task = {d.task_name: d for d in second.diff}
    assert by_task["Banking77Classification"].added > 0 and by_task["Banking77Classification"].kept > 0
    assert by_task["nq"].model_dump() == {"task_type": "medi", "task_name": "nq", "added": 0, "removed": 0, "kept": 5}
    snap = hub.repo_dir("org/ds") / "snapshots" / second.revision
    card = (snap / "README.md").read_text()
    assert f"Changes against `{first.tag}`" in card and f"revision='{second.tag}'" in card
    assert json.loads((snap / ".gistforge/manifest.json").read_text())["diff"] == [d.model_dump() for d in second.diff]


def test_card_parses_and_streaming_works(tmp_path):
    from datasets import load_dataset
    from huggingface_hub import DatasetCard, snapshot_download

    from pipeline.config import DecontaminationConfig
    from pipeline.road.build import DROP_REASONS
    from pipeline.road.card import render_card
    from pipeline.schema import SCHEMA

    table = assemble(_frames(), seed=1)
    card = lambda size: render_card(repo_id="org/ds", schema=SCHEMA, num_rows=table.num_rows, num_bytes=table.nbytes(),
                                    download_size=size, sources=[],
                                    exclusions={"AmazonPolarityClassification": "GIST"},
                                    guide={"name": "m", "revision": "r"}, mining={"margin": 0.05}, seed=1,
                                    tasks=[], accounts=[], drop_reasons=DROP_REASONS,
                                    decontamination=DecontaminationConfig(), reference=None)
    write_build(table, card, tmp_path / "b", 1 << 20)
    result = LocalHub(tmp_path / "hub").publish(tmp_path / "b", "org/ds")
    path = snapshot_download("org/ds", repo_type="dataset", revision=result.tag, cache_dir=str(tmp_path / "hub"),
                             local_files_only=True)
    parsed = DatasetCard.load(Path(path) / "README.md")
    assert parsed.data.configs[0]["data_files"][0]["path"] == "data/*/train-*.parquet"
    assert parsed.data.dataset_info[0]["config_name"] == "default"
    assert parsed.data.dataset_info[0]["splits"][0]["num_examples"] == table.num_rows
    assert parsed.data.license == "other" and "gistforge" in parsed.data.tags
    stream = load_dataset(path, split="train", streaming=True)
    assert sum(1 for _ in stream) == table.num_rows


def test_main_never_moves_back_when_a_build_reproduces_an_older_version(tmp_path):
    """Issue 12 #10: `refs/main` points at the newest version, even after a rebuild equal to an older one."""
    hub = LocalHub(tmp_path / "hub")
    old = hub.publish(_build(tmp_path, 1, rows=30), "org/ds", today=dt.date(2026, 1, 1))
    new = hub.publish(_build(tmp_path, 1, rows=36), "org/ds", today=dt.date(2026, 1, 2))
    again = hub.publish(_build(tmp_path, 1, rows=30), "org/ds", today=dt.date(2026, 1, 3))
    assert (again.status, again.tag) == ("unchanged", old.tag)
    assert hub.latest("org/ds") == new.tag
    assert (hub.repo_dir("org/ds") / "refs" / "main").read_text() == new.revision


def test_the_card_names_no_machine_path_and_its_snippet_runs_as_written(tmp_path, monkeypatch):
    """Issue 12 #11: the same build published from two folders gives the same bytes and tag; the card's
    snippet reads the version back with nothing but the local hub's environment variable."""
    build = _build(tmp_path, 1)
    first = LocalHub(tmp_path / "a" / "hub").publish(build, "org/ds", today=dt.date(2026, 1, 1))
    second = LocalHub(tmp_path / "b" / "deeper" / "hub").publish(build, "org/ds", today=dt.date(2026, 1, 1))
    assert (first.tag, first.revision) == (second.tag, second.revision)
    cards = [(LocalHub(tmp_path / w).repo_dir("org/ds") / "snapshots" / first.revision / "README.md").read_text()
             for w in ("a/hub", "b/deeper/hub")]
    assert cards[0] == cards[1] and str(tmp_path) not in cards[0]
    snippet = cards[0].split("## Version", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    monkeypatch.setenv("GISTFORGE_LOCAL_HUB", str(tmp_path / "b" / "deeper" / "hub"))
    scope: dict = {}
    exec(snippet, scope)  # noqa: S102 - the card's own snippet, run as a reader would
    assert scope["ds"].num_rows == pl.read_parquet(build / "data" / "*" / "*.parquet").height
    hub_card = versioning.version_section("org/ds", first.tag, "0" * 64, False, None, [])
    assert f"load_dataset('org/ds', revision='{first.tag}', split='train')" in hub_card


def test_a_crash_before_the_ref_moves_leaves_the_previous_version_intact(tmp_path, monkeypatch):
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    hub = LocalHub(tmp_path / "hub")
    old = hub.publish(_build(tmp_path, 1), "org/ds", today=dt.date(2026, 1, 1))

    def crash(path, text):
        raise KeyboardInterrupt("killed between writing the snapshot and moving the ref")

    with monkeypatch.context() as m, pytest.raises(KeyboardInterrupt):
        m.setattr(local_hub.atomic, "write_text", crash)  # the ref writes
        hub.publish(_build(tmp_path, 2), "org/ds", today=dt.date(2026, 1, 2))

    assert hub.tags("org/ds") == {old.tag: old.revision}
    assert (hub.repo_dir("org/ds") / "refs" / "main").read_text() == old.revision
    load = lambda rev: snapshot_download("org/ds", repo_type="dataset", revision=rev, cache_dir=str(tmp_path / "hub"),
                                         local_files_only=True)
    assert Path(load("main")).name == old.revision
    with pytest.raises(LocalEntryNotFoundError):
        load(f"2026.01.02-{old.content_hash[:8]}")

    new = hub.publish(_build(tmp_path, 2), "org/ds", today=dt.date(2026, 1, 3))  # rerun completes it
    assert new.status == "published" and new.previous_tag == old.tag
    assert new.tag.startswith("2026.01.02-"), "the rerun keeps the tag recorded in the staged snapshot"
    assert Path(load(new.tag)).name == new.revision and Path(load(old.tag)).name == old.revision
    assert not [p for p in (hub.repo_dir("org/ds") / "snapshots").iterdir() if p.name.startswith(".")]


# ------------------------------------------------------------------------------------------ Hub boundary


def _hub(tmp_path: Path) -> GitHubApi:
    return GitHubApi(tmp_path / "hub-remote")


def _build_of(tmp_path: Path, name: str, frames, max_shard_bytes: int) -> Path:
    dest = tmp_path / name
    write_build(assemble(frames, seed=1), lambda size: "---\nlicense: other\n---\n# card\n", dest, max_shard_bytes)
    return dest


def test_each_hub_version_is_exactly_its_build_and_load_dataset_reads_only_it(tmp_path):
    """Issue 22 #1: v1 has three tasks (two shards for one), v2 two tasks of one shard: v2's tag holds exactly
    v2's files (the dropped task and the renamed shards deleted in v2's one commit), and `load_dataset` of v2
    gives v2's rows, not v1's leftovers."""
    from datasets import load_dataset

    api = _hub(tmp_path)
    pub = HubPublisher(api, TOKEN, sleep=lambda s: None)
    v1_dir = _build_of(tmp_path, "v1", _frames(200), 16_000)
    v1 = pub.publish(v1_dir, "org/ds", today=dt.date(2026, 1, 1))
    v1_files = set(api.files("org/ds", v1.tag))
    assert {"data/mteb_banking77/train-00000-of-00002.parquet", "data/mteb_banking77/train-00001-of-00002.parquet",
            "data/local_my_task/train-00000-of-00002.parquet"} <= v1_files, sorted(v1_files)
    v2_dir = _build_of(tmp_path, "v2", [f for f in _frames(200) if f["source"][0] != "local"], 1 << 30)
    v2 = pub.publish(v2_dir, "org/ds", today=dt.date(2026, 1, 2))
    v2_files = api.files("org/ds", v2.tag)
    staged = {p.relative_to(v2_dir).as_posix() for p in v2_dir.rglob("*") if p.is_file()} - {".gistforge-build.json"}
    assert set(v2_files) == staged | {".gitattributes", ".gistforge/manifest.json"}, \
        "v2's tree is exactly v2 (plus its manifest and the Hub's .gitattributes)"
    assert not any(f.startswith("data/local_my_task/") or "-of-00002" in f for f in v2_files)
    assert "data/mteb_banking77/train-00000-of-00001.parquet" in v2_files
    assert set(api.files("org/ds", v1.tag)) == v1_files, "v1's tag still holds v1"
    commits = api.git(api._repo("org/ds", "dataset"), "rev-list", "--count", "main")
    assert commits == "3", "the initial commit, then one commit per version"
    ds = load_dataset(str(api.checkout("org/ds", v2.tag, tmp_path / "v2-read")), split="train")
    expected = pl.read_parquet(v2_dir / "data" / "*" / "*.parquet")
    assert ds.num_rows == expected.height
    assert sorted(ds["query"]) == sorted(expected["query"].to_list())
    print("v1:", sorted(v1_files), "\nv2:", sorted(v2_files))


def test_hub_publish_is_one_commit_plus_one_tag_per_version(tmp_path):
    api = _hub(tmp_path)
    pub = HubPublisher(api, TOKEN, sleep=lambda s: None)
    first = pub.publish(_build(tmp_path, 1), "org/ds", today=dt.date(2026, 1, 1))
    second = pub.publish(_build(tmp_path, 2), "org/ds", today=dt.date(2026, 1, 2))
    again = pub.publish(_build(tmp_path, 2), "org/ds", today=dt.date(2026, 1, 3))
    assert [first.status, second.status, again.status] == ["published", "published", "unchanged"]
    commits = [kw for name, kw in api.calls if name == "create_commit"]
    assert len(commits) == 2
    assert {t.name: t.target_commit for t in api.list_repo_refs("org/ds", repo_type="dataset").tags} == \
        {first.tag: first.revision, second.tag: second.revision}
    assert {"README.md", "data/mteb_banking77/train-00000-of-00001.parquet", ".gistforge/manifest.json",
            ".gistforge/row_hashes.parquet"} <= set(api.files("org/ds", second.tag))
    assert commits[1]["parent_commit"] == first.revision, "second commit guarded by parent_commit"
    assert second.previous_tag == first.tag and any(d.kept for d in second.diff)
    create = [kw for name, kw in api.calls if name == "create_repo"][0]
    assert create == {"repo_type": "dataset", "exist_ok": True, "private": True, "token": TOKEN}


def test_a_commit_that_fails_its_tree_check_is_never_tagged(tmp_path):
    """Issue 22 #1: the commit's tree is checked before the tag moves; a rerun commits the version again."""
    api = _hub(tmp_path)
    good = HubPublisher(api, TOKEN).publish(_build(tmp_path, 1), "org/ds")
    assert [n for n, _ in api.calls][-1] == "create_tag", "checked, then tagged"
    manifest = json.loads(api.files("org/ds", good.tag)[".gistforge/manifest.json"])
    assert manifest["files"]["README.md"] == len(api.files("org/ds", good.tag)["README.md"])
    api.lose = "data/medi/train-00000-of-00001.parquet"
    with pytest.raises(PublishError, match=r"org/ds@.* does not match its manifest: .*content differs "
                                           r"\['data/medi/train-0000.*not tagged"):
        HubPublisher(api, TOKEN).publish(_build(tmp_path, 2), "org/ds")
    assert [t.name for t in api.list_repo_refs("org/ds", repo_type="dataset").tags] == [good.tag]
    again = HubPublisher(api, TOKEN).publish(_build(tmp_path, 2), "org/ds")
    assert again.status == "published" and "data/medi/train-00000-of-00001.parquet" in api.files("org/ds", again.tag)


def test_a_commit_not_on_the_head_is_refused_as_on_the_hub(tmp_path):
    """The double's `parent_commit` guard is the Hub's: a concurrent commit between list and commit gives 412,
    which is not retried, and nothing is tagged."""
    api = _hub(tmp_path)
    pub = HubPublisher(api, TOKEN, sleep=lambda s: None)
    pub.publish(_build(tmp_path, 1), "org/ds")
    real = api.list_repo_refs

    def racing(repo_id, **kw):  # another publisher commits right after we read the head
        refs = real(repo_id, **kw)
        from huggingface_hub import CommitOperationAdd
        api.create_commit(repo_id, [CommitOperationAdd("x.txt", b"x")], commit_message="other", repo_type="dataset")
        return refs

    api.list_repo_refs = racing
    with pytest.raises(PublishError, match="412"):
        pub.publish(_build(tmp_path, 2), "org/ds")
    api.list_repo_refs = real
    assert len(api.list_repo_refs("org/ds", repo_type="dataset").tags) == 1


def test_a_private_publish_never_lands_in_a_public_repo(tmp_path):
    """Issue 23 #9: `create_repo(exist_ok=True, private=True)` leaves a public repo public; the publish refuses."""
    api = _hub(tmp_path)
    api.create_repo("org/ds", repo_type="dataset", private=False)
    with pytest.raises(PublishError, match="is public, while GISTFORGE_HUB_PRIVATE=1"):
        HubPublisher(api, TOKEN, private=True).publish(_build(tmp_path, 1), "org/ds")
    assert not api.list_repo_refs("org/ds", repo_type="dataset").tags
    assert HubPublisher(api, TOKEN, private=False).publish(_build(tmp_path, 1), "org/ds").status == "published"


def test_hub_retries_a_503_and_fails_fast_and_clean_on_a_401(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    api = _hub(tmp_path)
    sleeps, now = [], [0.0]

    def sleep(seconds):  # a clock that the retry waits advance
        sleeps.append(seconds)
        now[0] += seconds

    pub = HubPublisher(api, TOKEN, retry_budget_s=30, sleep=sleep, clock=lambda: now[0])
    api.fail = {"create_commit": [503, 503]}
    result = pub.publish(_build(tmp_path, 1), "org/ds")
    assert result.status == "published" and len(sleeps) == 2 and sleeps[1] > sleeps[0]
    assert [n for n, _ in api.calls].count("create_commit") == 3

    api.fail = {"create_repo": [401]}
    with pytest.raises(PublishError) as err:
        pub.publish(_build(tmp_path, 2), "org/ds")
    assert "HTTP 401" in str(err.value) and "HF_TOKEN" in str(err.value)
    assert [n for n, _ in api.calls].count("create_repo") == 2, "a 401 is not retried"

    api.fail = {"create_tag": [500] * 10}
    sleeps.clear()
    with pytest.raises(PublishError) as err2:
        pub.publish(_build(tmp_path, 3), "org/ds")
    assert "500 Server Error" in str(err2.value) and "30 s retry budget" in str(err2.value)
    assert sum(sleeps) == pytest.approx(30), "one budget for the whole publish, spent and not exceeded"
    assert err.value.__cause__ is None and err.value.__context__ is None and err2.value.__context__ is None
    for text in [str(err.value), str(err2.value), caplog.text]:
        assert TOKEN not in text
    assert "***" in caplog.text, "the retry log shows the message with the token redacted"

    # the commit landed but its tag did not: a rerun checks that commit's tree and tags it instead of committing again
    api.fail = {}
    commits = [n for n, _ in api.calls].count("create_commit")
    done = pub.publish(_build(tmp_path, 3), "org/ds")
    assert done.status == "published" and [n for n, _ in api.calls].count("create_commit") == commits
    assert done.revision == api.resolve("org/ds", "main") == api.resolve("org/ds", done.tag)


def test_model_folders_publish_with_a_tag_locally_and_to_the_hub(tmp_path):
    from huggingface_hub import snapshot_download

    folder = tmp_path / "model"
    (folder / "1_Pooling").mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    (folder / "1_Pooling" / "config.json").write_text("{}")
    (folder / "old_head.bin").write_text("v1 only")
    local = LocalHub(tmp_path / "hub").publish_model(folder, "org/encoder", "2026.01.01-abcdef12")
    path = snapshot_download("org/encoder", revision="2026.01.01-abcdef12", cache_dir=str(tmp_path / "hub"),
                             local_files_only=True)
    assert Path(path).name == local.revision and (Path(path) / "1_Pooling" / "config.json").exists()

    api = _hub(tmp_path)
    pub = HubPublisher(api, TOKEN, sleep=lambda s: None)
    first = pub.publish_model(folder, "org/encoder", "2026.01.01-abcdef12")
    assert set(api.files("org/encoder", first.tag, "model")) == \
        {".gitattributes", "config.json", "1_Pooling/config.json", "old_head.bin"}
    (folder / "old_head.bin").unlink()
    (folder / "config.json").write_text('{"retrained": true}')
    second = pub.publish_model(folder, "org/encoder", "2026.01.02-abcdef12")
    assert set(api.files("org/encoder", second.tag, "model")) == {".gitattributes", "config.json",
                                                                  "1_Pooling/config.json"}
    retrained = pub.publish_model(folder / "1_Pooling", "org/encoder", "2026.01.02-abcdef12")
    assert api.resolve("org/encoder", "2026.01.02-abcdef12", "model") == retrained.revision != second.revision
    assert {kw.get("repo_type") for n, kw in api.calls if n != "hf_hub_download"} == {"model"}


@pytest.mark.slow
def test_hub_target_reads_the_token_through_the_resource_and_leaks_it_nowhere(embedded_build, tmp_path, monkeypatch,
                                                                               capfd):
    """The deployment's Hub target: `HF_TOKEN` reaches the API through `dg.EnvVar`, and no event, metadata,
    log line or workspace file holds it, also when the Hub answers with an error quoting it."""
    import shutil

    import dagster as dg
    import huggingface_hub

    from assets import build_definitions
    from assets.settings import Deployment
    from pipeline.profiles import embedded_profile

    home = tmp_path / "home"
    shutil.copytree(embedded_build, home, ignore=shutil.ignore_patterns("models"))
    monkeypatch.setenv("HF_TOKEN", TOKEN)
    apis = []

    def fake_api(endpoint=None):
        api = GitHubApi(tmp_path / "hub-remote")
        api.fail = {"create_tag": [403]}  # refused, with the token in the error text: fails at once, no retry
        apis.append(api)
        return api

    monkeypatch.setattr(huggingface_hub, "HfApi", fake_api)
    defs = build_definitions(embedded_profile(), Deployment(home=home, publish_target="hub"))
    with dg.instance_for_test() as instance:
        result = defs.resolve_job_def("build_and_publish").execute_in_process(instance=instance, raise_on_error=False)
        records = instance.get_event_records(dg.EventRecordsFilter(event_type=dg.DagsterEventType.STEP_FAILURE))
        events = [str(r.event_log_entry) for r in instance.get_event_records(
            dg.EventRecordsFilter(event_type=dg.DagsterEventType.ASSET_MATERIALIZATION))] + \
            [str(r.event_log_entry) for r in records]
    assert not result.success and len(records) == 1, "the Hub refused: the publish step failed, without retry"
    used = {kw.get("token") for api in apis for _, kw in api.calls}
    assert used == {TOKEN}, "every Hub call carried the token from the environment"
    out, err = capfd.readouterr()
    texts = events + [out, err] + [p.read_text(errors="replace") for p in home.rglob("*")
                                   if p.is_file() and p.suffix in (".json", ".md", ".txt", ".log")]
    assert all(TOKEN not in t for t in texts)


def test_local_hub_versions_load_back_by_tag(tmp_path, monkeypatch):
    from datasets import load_dataset
    from huggingface_hub import snapshot_download

    hub = LocalHub(tmp_path / "hub")
    builds = {}
    for seed in (1, 2):
        table = assemble(_frames(), seed=seed)
        write_build(table, lambda size: "---\nlicense: other\n---\n# card\n", tmp_path / f"b{seed}", 1 << 20)
        builds[seed] = (table, hub.publish(tmp_path / f"b{seed}", "org/ds", today=dt.date(2026, 1, seed)))
    again = hub.publish(tmp_path / "b2", "org/ds", today=dt.date(2026, 2, 1))
    assert again.status == "unchanged" and again.tag == builds[2][1].tag
    assert set(hub.tags("org/ds")) == {builds[1][1].tag, builds[2][1].tag}
    for table, result in builds.values():
        assert result.status == "published" and result.tag == versioning.make_tag(result.content_hash, dt.date(2026, 1, int(result.tag[9])))
        path = snapshot_download("org/ds", repo_type="dataset", revision=result.tag, cache_dir=str(tmp_path / "hub"),
                                 local_files_only=True)
        ds = load_dataset(path, split="train")
        assert ds.to_polars().equals(pl.from_arrow(table.to_table()))
        assert result.tag in open(os.path.join(path, "README.md")).read()
