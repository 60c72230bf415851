"""The Dagster layer of gistforge: thin assets over `pipeline`. `dg dev` / `dagster dev -m assets` load `defs`."""

from assets.definitions import build_definitions, defs

__all__ = ["build_definitions", "defs"]
