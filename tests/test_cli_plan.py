"""Fast checks of the plan's mechanism (a real stage, stopped at its own reuse decision) and of the typed
Dagster metadata; the whole-build plan is tested in tests/test_cli_versions.py."""

import dagster as dg
import pytest

from assets.metadata import IVF_RECALL_CHECK, ivf_recall_check, numeric_mining_metadata, tasks_table, version_location
from pipeline.config import DecontaminationConfig, TaskSource
from pipeline.plan import PlanningWorkspace, _Planned, why_redo
from pipeline.road.grouped import TaskRows
from pipeline.road.ingest import ingest_task
from pipeline.road.mined import MiningStats, SimilaritySummary
from pipeline.workspace import Workspace

NO_REFERENCE = DecontaminationConfig(exact=False)


def _task(tmp_path, rows: int) -> TaskSource:
    path = tmp_path / "topics.csv"
    path.write_text("text,label\n" + "".join(f"text number {i},{i % 2}\n" for i in range(rows)))
    return TaskSource(name="Topics", kind="local", path=path, label_text_column=None)


def _files(root) -> dict:
    return {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}


def _decide(ws: Workspace, src: TaskSource) -> _Planned:
    with pytest.raises(_Planned) as planned:
        ingest_task(PlanningWorkspace(ws.home, ws.profile), src, NO_REFERENCE, {})
    return planned.value


def test_a_planned_stage_stops_at_its_own_reuse_decision_and_writes_nothing(tmp_path):
    ws = Workspace(tmp_path / "home", "p")
    src = _task(tmp_path, 10)
    first = _decide(ws, src)
    assert not first.reused and not ws.split("Topics").exists()  # never made, and planning made nothing
    assert why_redo(ws, first.output, first.identity, {}) == ["never made (no splits/Topics.parquet)"]

    done = ingest_task(ws, src, NO_REFERENCE, {})
    assert done.fingerprint == first.identity.fingerprint  # the plan's fingerprint is the stage's
    before = _files(tmp_path / "home")
    again = _decide(ws, src)
    assert again.reused and _files(tmp_path / "home") == before

    src.path.write_text(src.path.read_text() + "one more,1\n")
    changed = _decide(ws, src)
    assert not changed.reused and _files(tmp_path / "home") == before
    reasons = why_redo(ws, changed.output, changed.identity, {})
    assert any(r.startswith("input source.file.size: ") for r in reasons), reasons
    assert not any("settings." in r or r.startswith("setting") for r in reasons)


def test_a_changed_setting_and_a_redone_input_are_named(tmp_path):
    ws = Workspace(tmp_path / "home", "p")
    src = _task(tmp_path, 10)
    ingest_task(ws, src, NO_REFERENCE, {})
    renamed = src.model_copy(update={"label_text_column": "label"})
    changed = _decide(ws, renamed)
    assert why_redo(ws, changed.output, changed.identity, {}) == \
        ["setting source.label_text_column: None -> label"]


def test_ivf_recall_is_a_warning_below_0_9_and_never_for_exact_search():
    low = ivf_recall_check(0.85, nprobe=32)
    assert low.check_name == IVF_RECALL_CHECK and not low.passed
    assert low.severity == dg.AssetCheckSeverity.WARN and "ivf_nprobe (now 32)" in low.description
    assert ivf_recall_check(0.95, nprobe=32).passed and ivf_recall_check(None, nprobe=32).passed


def test_mining_statistics_become_numeric_entries():
    stats = MiningStats(queries=10, search="ivf", margin_rejected=3, recall_at_10=0.93, triplets=9,
                        pos_sim=SimilaritySummary(mean=0.7, p05=0.5, p50=0.7, p95=0.9))
    meta = numeric_mining_metadata(stats)
    assert meta["mining/recall_at_10"] == dg.MetadataValue.float(0.93)
    assert meta["mining/pos_sim.mean"] == dg.MetadataValue.float(0.7)
    assert meta["mining/margin_rejected"] == dg.MetadataValue.int(3)
    assert "mining/search" not in meta  # text stays in the JSON entry
    assert all(isinstance(v, (dg.FloatMetadataValue, dg.IntMetadataValue)) for v in meta.values())


def test_per_task_counts_are_a_table_and_the_version_a_path_or_a_url(tmp_path):
    table = tasks_table([TaskRows(task_type="mteb_imdb", task_name="ImdbClassification", rows=120)])
    assert isinstance(table, dg.TableMetadataValue) and table.records[0].data["rows"] == 120
    local = version_location("org/name", "2026.01.01-abcdef12", "f" * 40, str(tmp_path))
    assert isinstance(local, dg.PathMetadataValue)
    assert local.path == str(tmp_path / "datasets--org--name" / "snapshots" / ("f" * 40))
    hub = version_location("org/name", "2026.01.01-abcdef12", "f" * 40, None)
    assert hub == dg.MetadataValue.url("https://huggingface.co/datasets/org/name/tree/2026.01.01-abcdef12")
