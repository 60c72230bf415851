"""The built-in profiles (the embedded default, GIST's full build) and reading a `BuildConfig` from YAML, with
one line per problem naming the file and field."""

from __future__ import annotations

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from pipeline.config import SAMPLE_DIR, SAMPLE_MEDI_COMMIT, BuildConfig, MediSource, TaskSource, TrainConfig
from pipeline.registry import MTEB_TASKS
from pipeline.road.model_ref import BUNDLED_MODEL


def embedded_profile() -> BuildConfig:
    """Offline default: the shipped sample, the bundled MiniLM as guide, a local output folder."""
    cache = SAMPLE_DIR / "hf-hub-cache"
    return BuildConfig(
        profile="embedded",
        medi=MediSource(kind="hub", revision=SAMPLE_MEDI_COMMIT, cache_dir=cache),
        tasks=[
            TaskSource(name="Banking77Classification", cache_dir=cache),
            TaskSource(name="ImdbClassification", cache_dir=cache),
            TaskSource(name="ChatterbotTopics", kind="local", path=SAMPLE_DIR / "chatterbot_topics.jsonl",
                       text_column="utterance", label_column="topic", label_text_column=None),
        ],
        guide_model=BUNDLED_MODEL,
        encode_batch_size=32,
        training=TrainConfig(max_steps=4, save_steps=2, batch_size=8, max_seq_length=64, eval_experiments=3),
    )


def full_profile() -> BuildConfig:
    """GIST's build: every MTEB(eng, v1) classification task at its pin, Amazon Polarity excluded."""
    # No commit of avsolatorio/medi-data is known here (nothing can be fetched from the Hub), so the full
    # profile reads its `main` and the card records the commit that was read, saying it came from a branch.
    # Set `medi.revision` to a commit in a config to pin it.
    return BuildConfig(profile="full", tasks=[TaskSource(name=name) for name in MTEB_TASKS], allow_unpinned=True)


PROFILES = {"embedded": embedded_profile, "full": full_profile}


class ConfigError(ValueError):
    """A configuration that can never build: one line per problem, naming the file and field."""


def load_config(path: str | os.PathLike | None = None, profile: str | None = None) -> BuildConfig:
    """A YAML file holding a `BuildConfig` if `path` is given, else the named profile (default `embedded`)."""
    if path:
        if not Path(path).is_file():
            raise ConfigError(f"config file {path} does not exist: give the path of a YAML BuildConfig "
                              "(see configs/shared-data.yaml)")
        try:
            data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        try:
            return BuildConfig.model_validate(data)
        except ValidationError as exc:
            raise ConfigError("\n".join(f"config file {path}: {'.'.join(map(str, e['loc'])) or '(top level)'}: "
                                        f"{e['msg']}" for e in exc.errors())) from None
    name = profile or "embedded"
    if name not in PROFILES:
        raise ConfigError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)} or give a config file")
    return PROFILES[name]()
