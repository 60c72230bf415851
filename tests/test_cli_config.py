"""The CLI's options as a new user meets them: --version, build --help, --profile choices, --config with
--profile, and `gistforge config --schema` / `config show` (fast: nothing is built)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from gistforge.cli import run
from pipeline.config import BuildConfig
from pipeline.profiles import embedded_profile, load_config


def _gistforge(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it."""
    exe = Path(sys.executable).parent / "gistforge"
    return subprocess.run([str(exe), *args], capture_output=True, text=True, timeout=120, env=env)


def test_version_prints_the_installed_version_and_exits_0():
    from importlib.metadata import version

    done = _gistforge("--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"gistforge {version('gistforge')}"


def test_build_help_has_a_description_the_environment_and_the_exit_codes(capsys):
    with pytest.raises(SystemExit) as exit_:
        run(["build", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "materialising the Dagster asset graph" in out
    for var in ("GISTFORGE_PROFILE", "GISTFORGE_CONFIG", "GISTFORGE_HOME", "GISTFORGE_PUBLISH_TARGET",
                "GISTFORGE_LOCAL_HUB", "GISTFORGE_GUIDE_DEVICE", "HF_TOKEN", "HF_HUB_OFFLINE"):
        assert var in out, var
    for code in ("0 ", "1 ", "2 ", "130"):
        assert f"\n  {code}" in out, code
    assert "{embedded,full}" in out  # --profile lists its choices


def test_an_unknown_profile_is_refused_with_the_choices(capsys):
    with pytest.raises(SystemExit) as exit_:
        run(["build", "--profile", "tiny"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "argument --profile: invalid choice: 'tiny'" in err and "embedded" in err and "full" in err


@pytest.mark.parametrize("command", ["build", "plan", "versions", "config"])
def test_config_and_profile_together_is_an_error(command, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("profile: x\ntasks: []\n")
    with pytest.raises(SystemExit) as exit_:
        run([command, "--config", str(cfg), "--profile", "full"])
    assert exit_.value.code == 2
    assert "argument --profile: not allowed with argument --config" in capsys.readouterr().err


def test_both_environment_variables_set_is_an_error_too(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("GISTFORGE_CONFIG", str(tmp_path / "c.yaml"))
    monkeypatch.setenv("GISTFORGE_PROFILE", "full")
    assert run(["config", "show"]) == 2
    assert "GISTFORGE_CONFIG" in capsys.readouterr().err
    # ... while a flag on the command line wins over the environment
    assert run(["config", "show", "--profile", "embedded"]) == 0


def test_config_schema_is_the_buildconfig_json_schema(capsys):
    assert run(["config", "--schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert schema == BuildConfig.model_json_schema()
    assert {"profile", "tasks", "mining", "training"} <= set(schema["properties"])
    assert schema["required"] == ["profile", "tasks"]


def test_config_show_is_the_resolved_config_as_yaml_and_loads_back_the_same(tmp_path, capsys):
    assert run(["config", "show"]) == 0
    text = capsys.readouterr().out
    data = yaml.safe_load(text)
    assert data["mining"]["margin"] == 0.05 and data["profile"] == "embedded"  # defaults filled in
    saved = tmp_path / "mine.yaml"
    saved.write_text(text)
    assert load_config(saved) == embedded_profile()  # a starting point for --config that changes nothing


def test_config_show_of_a_file_names_its_bad_field(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("profile: x\ntasks: []\nmining: {margin: -1}\n")
    assert run(["config", "show", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert f"config file {bad}: mining.margin" in err and err.count("\n") == 1


def test_a_log_line_never_cuts_into_a_progress_bar(tmp_path):
    """The console handler writes through `tqdm.write`: the bar is lifted, the line printed whole, the bar
    drawn again (a plain StreamHandler would append the line to the bar's own)."""
    import io
    import logging

    from tqdm import tqdm

    from gistforge.console import Console

    console = Console("INFO", tmp_path / "build.log")
    stream = io.StringIO()
    console.stream.setStream(stream)
    bar = tqdm(total=10, file=stream, ncols=60, mininterval=0, ascii=True, desc="encode")
    bar.update(3)
    console.stream.handle(logging.LogRecord("pipeline.road.embed", logging.INFO, __file__, 1, "a log line", None, None))
    bar.update(1)
    bar.close()
    pieces = stream.getvalue().replace("\r", "\n").split("\n")
    line = next(p for p in pieces if "a log line" in p)
    assert line.endswith(" pipeline.road.embed: a log line") and "encode" not in line and "|" not in line
    assert any("4/10" in p for p in pieces)  # the bar goes on after the line
