"""Deployment settings: where a build keeps its files, where it publishes, which device the guide uses.

The dataset's recipe is a `pipeline.config.BuildConfig`; everything about *where* it runs is here. Both are
read from the environment in one place (`from_env`), by the code location's loader and the CLI, and handed
to `assets.definitions.build_definitions` explicitly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, Mapping

from pydantic import BaseModel, ConfigDict

from pipeline.config import BuildConfig, load_config
from pipeline.workspace import Workspace


class Deployment(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    home: Path
    publish_target: Literal["local", "hub"] = "local"
    local_hub: Path | None = None  # default: <home>/hub
    hub_private: bool = True
    hub_endpoint: str | None = None
    guide_device: str | None = None  # None: CUDA (fp16) when present, else the CPU

    def workspace(self, cfg: BuildConfig) -> Workspace:
        return Workspace(self.home, cfg.profile)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ, home: str | None = None) -> "Deployment":
        """`GISTFORGE_HOME` (default ./.gistforge), `GISTFORGE_PUBLISH_TARGET` (local | hub),
        `GISTFORGE_LOCAL_HUB`, `GISTFORGE_HUB_PRIVATE` (0 for a public repo), `GISTFORGE_GUIDE_DEVICE`."""
        return cls(home=Path(home or environ.get("GISTFORGE_HOME", ".gistforge")).resolve(),
                   publish_target=environ.get("GISTFORGE_PUBLISH_TARGET", "local"),
                   local_hub=environ.get("GISTFORGE_LOCAL_HUB") or None,
                   hub_private=environ.get("GISTFORGE_HUB_PRIVATE", "1") != "0",
                   hub_endpoint=environ.get("HF_ENDPOINT") or None,
                   guide_device=environ.get("GISTFORGE_GUIDE_DEVICE") or None)


def config_from_env(environ: Mapping[str, str] = os.environ) -> BuildConfig:
    """`GISTFORGE_CONFIG` (a YAML `BuildConfig`) or `GISTFORGE_PROFILE` (default `embedded`)."""
    return load_config(environ.get("GISTFORGE_CONFIG") or None, environ.get("GISTFORGE_PROFILE") or None)
