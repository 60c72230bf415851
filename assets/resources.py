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


class PublisherResource(dg.ConfigurableResource):
    """Where versions go. Two implementations, chosen by configuration (see `publisher_from_env`)."""

    def publisher(self, ws: Workspace):
        raise NotImplementedError


class LocalHubPublisher(PublisherResource):
    """A Hub-cache-layout folder (default: `<GISTFORGE_HOME>/hub`); offline, the default."""

    root: str | None = None

    def publisher(self, ws: Workspace):
        from pathlib import Path

        from pipeline.publish import LocalHub

        return LocalHub(Path(self.root) if self.root else ws.hub)


class HfHubPublisher(PublisherResource):
    """The Hugging Face Hub; the token comes from the environment (HF_TOKEN) and is never logged."""

    token: str | None = None
    private: bool = True
    endpoint: str | None = None

    def publisher(self, ws: Workspace):
        from huggingface_hub import HfApi

        from pipeline.publish import HubPublisher

        return HubPublisher(HfApi(endpoint=self.endpoint), self.token, private=self.private)


def publisher_from_env() -> PublisherResource:
    """`GISTFORGE_PUBLISH_TARGET=hub` publishes to the Hugging Face Hub; anything else to the local hub."""
    import os

    if os.environ.get("GISTFORGE_PUBLISH_TARGET", "local") == "hub":
        return HfHubPublisher(token=dg.EnvVar("HF_TOKEN"),
                              private=os.environ.get("GISTFORGE_HUB_PRIVATE", "1") != "0")
    return LocalHubPublisher(root=os.environ.get("GISTFORGE_LOCAL_HUB") or None)
