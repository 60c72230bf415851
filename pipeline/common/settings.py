"""The base of every configuration section: unknown keys are an error (a typo never passes silently) and a
section, once loaded, is not changed in place."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
