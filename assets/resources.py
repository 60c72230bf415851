"""Resources: the active build configuration and workspace, and the guide model (loaded once per process)."""

from __future__ import annotations

import dagster as dg

from pipeline.config import BuildConfig, load_config
from pipeline.stages import GuideEncoder, Workspace, default_home


class GistforgeResource(dg.ConfigurableResource):
    """Which configuration to build (profile or YAML file) and where its files go."""

    profile: str | None = None
    config_path: str | None = None
    home: str | None = None

    def config(self) -> BuildConfig:
        return load_config(self.config_path, self.profile)

    def workspace(self) -> Workspace:
        from pathlib import Path

        home = Path(self.home).resolve() if self.home else default_home()
        return Workspace(home, self.config().profile)


_GUIDES: dict[tuple, GuideEncoder] = {}


def _guide(cfg: BuildConfig, ws: Workspace, device: str | None) -> GuideEncoder:
    key = (cfg.guide_model, cfg.guide_revision, cfg.encode_batch_size, ws.embeddings, device)
    if key not in _GUIDES:
        _GUIDES[key] = GuideEncoder(cfg, ws, device)
    return _GUIDES[key]


class GuideModelResource(dg.ConfigurableResource):
    """The guide model that scores similarities for mining; CUDA + fp16 when a GPU is present."""

    device: str | None = None

    def encoder(self, cfg: BuildConfig, ws: Workspace) -> GuideEncoder:
        return _guide(cfg, ws, self.device)
