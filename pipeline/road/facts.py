"""What a version was made from, as data: `.gistforge/facts.json` in every version, beside the card that says the
same for people. `gistforge show` and `diff` read it (a version published before it existed: its card's tables),
so no tool has to parse markdown. A hidden file, it is outside the content hash: it changes no tag."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from pipeline.common.accounting import RowAccount
from pipeline.road.sources import Provenance

FACTS = ".gistforge/facts.json"


class SourceRows(BaseModel):
    """A source as the card's provenance table shows it: where, which commit, which licence, rows in and out."""

    source: str
    repo: str
    revision: str
    commit: str
    moving_ref: bool
    license: str
    license_from: str
    rows_in: int
    rows_out: int

    @classmethod
    def of(cls, name: str, described: Provenance | None, first: RowAccount,
           last: RowAccount | None = None) -> "SourceRows":
        rows = {"rows_in": first.rows_in, "rows_out": (last or first).rows_out}
        if described is None:
            return cls(source=name, repo="", revision="", commit="", moving_ref=False, license="unknown",
                       license_from="not recorded", **rows)
        d = described
        return cls(source=name, repo=(d.repo_id or d.path or "") + (" (embedded sample)" if d.sample else ""),
                   revision=d.revision or "", commit=d.commit or "", moving_ref=d.moving_ref,
                   license=d.license, license_from=d.license_from, **rows)


class VersionFacts(BaseModel):
    """The card's sources, row accounting, guide and mining settings (with the seed), as the build knew them."""

    sources: list[SourceRows]
    accounts: list[RowAccount]
    guide: dict[str, str]  # name, revision
    mining: dict[str, Any]
