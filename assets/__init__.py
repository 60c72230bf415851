"""The Dagster layer of gistforge: `dagster dev -m assets` loads `defs`."""

from assets.definitions import defs

__all__ = ["defs"]
