import re

import pytest
import yaml

from pipeline.config import BuildConfig, TaskSource
from pipeline.profiles import embedded_profile, full_profile, load_config
from pipeline.registry import DEFAULT_EXCLUSIONS, MTEB_TASKS, get_task


def test_registry_has_the_twelve_mteb_v1_classification_tasks_pinned():
    assert len(MTEB_TASKS) == 12
    for task in MTEB_TASKS.values():
        assert re.fullmatch(r"[0-9a-f]{40}", task.revision), f"{task.name}: pin is not a commit sha"
        assert task.task_type.startswith("mteb_")
    assert get_task("Banking77Classification").task_type == "mteb_banking77"
    assert get_task("MTOPDomainClassification").task_type == "mteb_mtop_domain"
    assert get_task("AmazonCounterfactualClassification").config == "en"


def test_unknown_task_error_lists_known_names():
    with pytest.raises(KeyError, match="unknown MTEB task 'Nope'.*Banking77Classification"):
        get_task("Nope")
    with pytest.raises(ValueError, match="unknown MTEB task 'Nope'"):
        TaskSource(name="Nope")


def test_full_profile_excludes_amazon_polarity_with_a_reason():
    cfg = full_profile()
    assert "AmazonPolarityClassification" in DEFAULT_EXCLUSIONS
    assert cfg.excluded_tasks == {"AmazonPolarityClassification": DEFAULT_EXCLUSIONS["AmazonPolarityClassification"]}
    assert len(cfg.included_tasks) == 11
    assert "AmazonPolarityClassification" not in [t.name for t in cfg.included_tasks]


def test_embedded_profile_is_offline_and_has_three_labelled_tasks():
    cfg = embedded_profile()
    assert len(cfg.included_tasks) == 3
    assert cfg.guide_model.startswith("bundled:")
    assert all(t.path.exists() for t in cfg.tasks if t.kind == "local")


def test_config_file_round_trip_and_clear_errors(tmp_path):
    good = tmp_path / "c.yaml"
    settings = {"profile": "x", "tasks": [{"name": "Banking77Classification"}],
                "exclusions": {"Banking77Classification": "testing"}}
    good.write_text(yaml.safe_dump({**settings, "allow_unpinned": True}))
    cfg = load_config(good)
    assert cfg.included_tasks == [] and cfg.excluded_tasks == {"Banking77Classification": "testing"}
    good.write_text(yaml.safe_dump(settings))  # MEDI at its default `main`: a moving branch, refused unless allowed
    with pytest.raises(ValueError, match=r"c.yaml: \(top level\): Value error, medi.revision 'main' is not a commit: "
                                         r"pin a 40-hex commit, or set allow_unpinned: true"):
        load_config(good)
    good.write_text(yaml.safe_dump({**settings, "medi": {"revision": "a" * 40}}))
    assert load_config(good).medi.revision == "a" * 40

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"profile": "x", "tasks": [{"name": "../evil", "kind": "local", "path": "x.csv"}]}))
    with pytest.raises(ValueError, match=r"config file .*bad.yaml: tasks.0.name: Value error, task name .\.\./evil."):
        load_config(bad)
    with pytest.raises(ValueError, match="unknown profile 'nope'"):
        load_config(profile="nope")
    for bad in ("../../etc", "org/..", "a/b/c", "org/na me"):
        with pytest.raises(ValueError, match="dataset_repo_id"):
            BuildConfig(profile="x", tasks=[], dataset_repo_id=bad)
    with pytest.raises(ValueError, match="profile '../up'"):
        BuildConfig(profile="../up", tasks=[])
    with pytest.raises(ValueError, match="push_model_repo"):
        BuildConfig(profile="x", tasks=[], training={"push_model_repo": "../escape"})
    deep = tmp_path / "deep.yaml"  # past what FAISS can return on a GPU: refused up front, not mid-build
    deep.write_text(yaml.safe_dump({"profile": "x", "tasks": [], "mining": {"positive_top_k": 5000}}))
    with pytest.raises(ValueError, match=r"(?s)deep.yaml.*positive_top_k.*2047"):
        load_config(deep)


def test_config_mistakes_are_one_line_each_from_the_cli(tmp_path, capsys):
    from gistforge.cli import build

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({"profile": "x", "tasks": [{"name": "Nope"}], "minig": {}}))
    assert build(["build", "--config", str(bad), "--home", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith(f"gistforge: config file {bad}: ") for line in err), err
    assert any("tasks.0: Value error, unknown MTEB task 'Nope'" in line for line in err)
    assert any("minig: Extra inputs are not permitted" in line for line in err)
    assert build(["build", "--config", str(tmp_path / "absent.yaml"), "--home", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == \
        f"gistforge: config file {tmp_path / 'absent.yaml'} does not exist: give the path of a YAML BuildConfig " \
        "(see configs/shared-data.yaml)"


def test_the_road_runs_forward_and_the_library_has_no_dagster():
    """Each `pipeline/road` module imports only modules before it (nothing doubles back); no Dagster below `assets`."""
    import ast
    from pathlib import Path

    from pipeline.road import ROAD

    root = Path(__file__).resolve().parents[1] / "pipeline"
    steps = [p.stem for p in (root / "road").glob("*.py") if p.stem != "__init__"]
    steps += [p.parent.name for p in (root / "road").glob("*/__init__.py")]  # a step that is a package
    assert sorted(ROAD) == sorted(steps)
    for path in root.rglob("*.py"):
        tree = ast.parse(path.read_text())
        names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names] + \
                [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        assert not [n for n in names if n.split(".")[0] == "dagster"], f"{path} imports Dagster"
        step = path.stem if path.parent.name == "road" else path.parent.name if path.parent.parent.name == "road" \
            else None
        if step in ROAD:
            here = ROAD.index(step)
            used = {n.split(".")[2] for n in names if n.startswith("pipeline.road.")}
            used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module == "pipeline.road"
                     for a in n.names}
            later = sorted(u for u in used if u in ROAD and ROAD.index(u) >= here and u != step)
            assert not later, f"road/{path.stem} reaches forward to {later}"
