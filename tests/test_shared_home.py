"""Two builds on one home, and hostile manifests: nothing half-published, nothing paired with the wrong build.

Issue 23 #2 and #8: the publish copies `build/` under the profile's OS lock and refuses a copy that does not
hash to the build's recorded hash; a stage's report names the output it describes; a manifest's tag must be
a version tag before it names a ref file.
"""

from __future__ import annotations

import json
import os
import stat
import multiprocessing as mp
from pathlib import Path

import polars as pl
import pytest

from pipeline.common import atomic
from pipeline.road import publish as publish_mod, versioning
from pipeline.road.build import assemble, write_build
from pipeline.road.local_hub import LocalHub
from pipeline.road.publish import PublishError
from pipeline.workspace import StageIdentity, StageReport, StaleOutputError, Workspace
from tests.test_build import _frames

CARD = "---\nlicense: other\n---\n# card\n"


def _write_build(ws: Workspace, rows: int) -> None:
    with ws.lock():
        write_build(assemble(_frames(rows), seed=1), lambda size: CARD, ws.build_dir(), 1 << 20)


def test_a_shard_lost_after_the_build_is_never_published(tmp_path):
    """Deleting one shard after the build hash was written used to publish a snapshot `main` pointed at with
    that task missing and a manifest hash that did not match it."""
    ws = Workspace(tmp_path, "p")
    _write_build(ws, 30)
    hub = LocalHub(ws.hub)
    first = publish_mod.publish(ws, "org/ds", hub)
    _write_build(ws, 36)
    next(ws.build_dir().glob("data/mteb_banking77/*.parquet")).unlink()
    with pytest.raises(PublishError, match=r"does not hold the build it records .* materialise triplet_dataset again"):
        publish_mod.publish(ws, "org/ds", hub)
    assert hub.tags("org/ds") == {first.tag: first.revision} and hub.latest("org/ds") == first.tag
    assert not [p for p in (hub.repo_dir("org/ds") / "snapshots").iterdir() if p.name != first.revision]


def test_a_manifest_tag_that_is_not_a_version_tag_is_refused(tmp_path):
    """The resume path took the tag from a staged snapshot's manifest: `../../../escaped` wrote a ref outside."""
    ws = Workspace(tmp_path, "p")
    _write_build(ws, 30)
    hub = LocalHub(ws.hub)
    sha = json.loads((ws.build_dir() / ".gistforge-build.json").read_text())["content_hash"][:40]
    snap = hub.repo_dir("org/ds") / "snapshots" / sha
    (snap / ".gistforge").mkdir(parents=True)
    (snap / ".gistforge" / "manifest.json").write_text(json.dumps(
        {"tag": "../../../escaped", "content_hash": "0" * 64, "previous_tag": None, "diff": []}))
    with pytest.raises(ValueError, match="is not a gistforge version tag"):
        hub.publish(ws.build_dir(), "org/ds")
    assert not list(tmp_path.rglob("escaped"))


def test_a_report_is_never_paired_with_another_builds_output(tmp_path):
    """Two builds of one partition: A writes its output, B replaces it, A writes its report. A's report names A's
    output, so a rerun redoes the stage and a downstream stage refuses to take A's fingerprint for B's rows."""
    ws = Workspace(tmp_path, "p")
    out = ws.split("Task")
    ws.write_parquet(pl.DataFrame({"text": ["a"]}), out)  # build A's output
    stamp_a = atomic.committed(out)
    Workspace.write_parquet(pl.DataFrame({"text": ["b", "b"]}), out)  # build B replaces it
    atomic._committed[str(out)] = stamp_a  # A's process only knows its own write
    ws.save_report(StageReport(fingerprint="A"), out, StageIdentity("A"))
    assert ws.reuse(out, StageIdentity("A"), StageReport) is None
    with pytest.raises(StaleOutputError, match=r"Task\.parquet was replaced after Task\.json was written"):
        ws.fingerprint_of(out)
    ws.write_parquet(pl.DataFrame({"text": ["a"]}), out)
    ws.save_report(StageReport(fingerprint="A"), out, StageIdentity("A"))
    assert ws.reuse(out, StageIdentity("A"), StageReport) is not None and ws.fingerprint_of(out) == "A"


def _build_and_publish(home: str, rows: int, barrier) -> str:
    ws = Workspace(Path(home), "p")
    barrier.wait()
    for _ in range(3):
        _write_build(ws, rows)
        result = publish_mod.publish(ws, "org/ds", LocalHub(ws.hub))
    return result.tag


@pytest.mark.slow
def test_two_processes_building_and_publishing_on_one_home_publish_only_whole_versions(tmp_path):
    """Two real processes, each rebuilding and publishing three times on one home: every tag's snapshot is
    whole (its files hash to its manifest's content hash) and `main` names one of them."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(2)
        with ctx.Pool(2) as pool:
            tags = pool.starmap(_build_and_publish, [(str(tmp_path), 30, barrier), (str(tmp_path), 36, barrier)])
    hub = LocalHub(tmp_path / "hub")
    published = hub.tags("org/ds")
    # Each publish takes whichever build is on disk when it holds the lock, so the 30-row build may never be
    # published (B rewrote `build/` before A's publish each time): one or two tags, never a third.
    assert set(tags) <= set(published) and 1 <= len(published) <= 2
    for tag, sha in published.items():
        snap = hub.repo_dir("org/ds") / "snapshots" / sha
        manifest = versioning.Manifest.model_validate_json((snap / ".gistforge" / "manifest.json").read_text())
        versioning.verify_files(manifest.files, versioning.file_sizes(snap), tag, manifest.sha256,
                                versioning.file_digests(snap))
        assert manifest.content_hash.startswith(sha) and manifest.tag == tag
    assert hub.latest("org/ds") in published


def test_a_published_version_is_readable_by_the_team_under_umask_022(tmp_path):
    """Issue 22 #3: every folder of the local hub 0755 and every file 0644 (they were 0700/0600)."""
    old = os.umask(0o022)
    try:
        ws = Workspace(tmp_path, "p")
        _write_build(ws, 30)
        hub = LocalHub(ws.hub)
        publish_mod.publish(ws, "org/ds", hub)
        folder = tmp_path / "model"
        folder.mkdir()
        (folder / "config.json").write_text("{}")
        hub.publish_model(folder, "org/encoder", "2026.01.01-abcdef12")
    finally:
        os.umask(old)
    modes = {p.relative_to(ws.hub).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in ws.hub.rglob("*")
             if not p.is_symlink() and ".locks" not in p.parts}
    assert modes and {m for p, m in modes.items() if (ws.hub / p).is_dir()} == {0o755}
    assert {m for p, m in modes.items() if (ws.hub / p).is_file()} == {0o644}, modes


def test_a_home_copied_with_its_times_is_reused_not_refused(tmp_path):
    """A team copies a home (`shutil.copytree`, `rsync -a`): the reports still describe their outputs."""
    import shutil

    ws = Workspace(tmp_path / "a", "p")
    out = ws.split("Task")
    ws.write_parquet(pl.DataFrame({"text": ["a"]}), out)
    ws.save_report(StageReport(fingerprint="A"), out, StageIdentity("A"))
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    copy = Workspace(tmp_path / "b", "p")
    assert copy.reuse(copy.split("Task"), StageIdentity("A"), StageReport) is not None and copy.fingerprint_of(copy.split("Task")) == "A"


def test_gc_keeps_a_days_newest_version_not_its_greatest_hash(tmp_path):
    """Two versions of one day: `gc --keep 1` sorted tags as strings, so the older one was kept whenever its
    hash sorted above the newer one's. It now takes `gistforge versions`' order (publishing order)."""
    from pipeline.profiles import embedded_profile
    from pipeline.gc import collect

    ws, published = Workspace(tmp_path, "p"), []
    hub = LocalHub(ws.hub)
    for rows in range(30, 80):
        _write_build(ws, rows)
        published.append(publish_mod.publish(ws, "org/ds", hub).tag)
        if len(published) > 1 and published[-2] > published[-1]:
            break
    older, newer = published[-2:]
    assert older > newer, "no two successive versions whose tags sort against their order"
    cfg = embedded_profile().model_copy(update={"dataset_repo_id": "org/ds"})
    versions = {i.why.split(":")[0]: i for i in collect(ws, cfg, hub, keep=1) if i.kind == "version"}
    assert not versions[newer].remove and versions[older].remove
    assert [t for t, i in versions.items() if not i.remove] == [newer]


def test_a_stage_report_is_never_saved_without_what_its_fingerprint_was_made_of(tmp_path):
    """`gistforge plan` explains a redo from the parts a report records; a stage that saved its report without
    its StageIdentity (or with another's) would silently lose them."""
    ws = Workspace(tmp_path, "p")
    out = ws.split("Task")
    ws.write_parquet(pl.DataFrame({"text": ["a"]}), out)
    for identity in (None, StageIdentity("B")):
        with pytest.raises(ValueError, match="saved with the StageIdentity its fingerprint came from"):
            ws.save_report(StageReport(fingerprint="A"), out, identity)
    ws.save_report(StageReport(fingerprint="A"), out, StageIdentity("A", {"version": "1"}))
    assert ws.recorded_parts(out) == {"version": "1"}
