"""The Dagster instance `gistforge build` records its runs in: persistent, so the UI shows them afterwards.

`$DAGSTER_HOME` when it is set; otherwise `<home>/dagster`, created on first use with the project's
`dagster.yaml`. `DAGSTER_HOME=.gistforge/dagster dg dev` then shows every run and materialisation of the
README's first command.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dagster as dg

PROJECT_INSTANCE_YAML = Path(__file__).resolve().parents[1] / "dagster.yaml"


def instance_dir(home: Path) -> Path:
    return Path(os.environ["DAGSTER_HOME"]) if os.environ.get("DAGSTER_HOME") else Path(home) / "dagster"


def cli_instance(home: Path) -> dg.DagsterInstance:
    folder = instance_dir(home).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    settings = folder / "dagster.yaml"
    if not settings.exists() and PROJECT_INSTANCE_YAML.exists():
        tmp = folder / ".dagster.yaml.tmp"
        shutil.copyfile(PROJECT_INSTANCE_YAML, tmp)
        tmp.replace(settings)
    return dg.DagsterInstance.from_config(str(folder))
