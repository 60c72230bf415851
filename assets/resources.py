"""Resources: the build (configuration + workspace), the guide model, and where versions are published."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Callable

import dagster as dg

from pipeline.config import BuildConfig, NetworkConfig
from pipeline.road.embed import GuideEncoder
from pipeline.road.model_ref import ModelRef
from pipeline.road.hub_publisher import HubPublisher
from pipeline.road.local_hub import LocalHub
from pipeline.road.publish import Publisher
from pipeline.road.stages import Road


@functools.lru_cache(maxsize=8)
def _parse(config_json: str) -> BuildConfig:
    return BuildConfig.model_validate_json(config_json)


class BuildResource(dg.ConfigurableResource):
    """The build configuration (as JSON, visible in the UI) and the home folder of its files."""

    config_json: str
    home: str

    @classmethod
    def of(cls, cfg: BuildConfig, home: Path) -> "BuildResource":
        return cls(config_json=cfg.model_dump_json(), home=str(home))

    def config(self) -> BuildConfig:
        return _parse(self.config_json)

    def road(self, device: str | None = None) -> Road:
        """The road's stages with this configuration, on its workspace; `device`: the guide's (the guide resource's)."""
        return Road.at_home(self.config(), Path(self.home), device)


_GUIDES: dict[tuple, GuideEncoder] = {}


class GuideModelResource(dg.ConfigurableResource):
    """The guide model that scores similarities for mining; CUDA + fp16 when a GPU is present, bf16 on a CPU
    that has it (the config's `guide_precision`)."""

    device: str | None = None

    def loader(self, road: Road) -> Callable[[ModelRef], GuideEncoder]:
        """`road`'s guide factory, each guide (the configured one, or a mining round's) loaded once per process."""
        def load(ref: ModelRef) -> GuideEncoder:
            cfg = road.cfg
            key = (ref, cfg.encode_batch_size, road.ws.embeddings, road.device, cfg.guide_precision)
            if key not in _GUIDES:
                _GUIDES[key] = road.guide_encoder(ref)
            return _GUIDES[key]
        return load


class PublisherResource(dg.ConfigurableResource):
    """Where versions go: a local Hub-cache folder or the Hugging Face Hub, chosen by the deployment."""

    def publisher(self, network: NetworkConfig = NetworkConfig()) -> Publisher:
        raise NotImplementedError


class LocalHubPublisher(PublisherResource):
    """A Hub-cache-layout folder; offline, the default."""

    root: str

    def publisher(self, network: NetworkConfig = NetworkConfig()) -> Publisher:
        return LocalHub(Path(self.root))


class HfHubPublisher(PublisherResource):
    """The Hugging Face Hub. The token, unless given (e.g. `dg.EnvVar`), is `huggingface_hub.get_token()`'s,
    read when the publisher is made: `HF_TOKEN`, else the login stored by `hf auth login`. Never logged."""

    token: str | None = None
    private: bool = True
    endpoint: str | None = None

    def publisher(self, network: NetworkConfig = NetworkConfig()) -> Publisher:
        from huggingface_hub import HfApi, get_token

        return HubPublisher(HfApi(endpoint=self.endpoint), self.token or get_token(), private=self.private,
                            retry_budget_s=network.retry_budget_s, first_delay_s=network.first_retry_delay_s)
