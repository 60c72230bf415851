"""The base of every configuration section: unknown keys are an error (a typo never passes silently) and a
section, once loaded, is not changed in place."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict

# Used with `fullmatch` only: `$` also matches before a trailing newline, so `match` let `Foo\n` through.
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,95}")


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def checked_repo_id(v: str, field: str) -> str:
    """Repo ids become folder names in the local hub: only 'org/name' of safe characters, no '..'."""
    parts = v.split("/")
    if len(parts) != 2 or not all(SAFE_NAME.fullmatch(p) and ".." not in p for p in parts):
        raise ValueError(f"{field} {v!r} must look like 'org/name' (letters, digits, '-', '_', '.')")
    return v
