"""Row accounting: every row that enters a stage leaves it as output or as a counted, reasoned drop."""

from __future__ import annotations

from pydantic import BaseModel


class RowAccount(BaseModel):
    """Rows in, rows out and drops by reason for one source at one stage (saved inside stage reports)."""

    source: str
    rows_in: int
    rows_out: int = 0
    drops: dict[str, int] = {}

    def drop(self, reason: str, n: int) -> None:
        if n:
            self.drops[reason] = self.drops.get(reason, 0) + int(n)

    @property
    def dropped(self) -> int:
        return sum(self.drops.values())

    @property
    def balanced(self) -> bool:
        return self.rows_in == self.rows_out + self.dropped

    def check(self) -> "RowAccount":
        """Fail loudly if rows were lost without a reason (a bug, never a data problem)."""
        if not self.balanced:
            raise AssertionError(
                f"{self.source}: row accounting does not add up: {self.rows_in} in != {self.rows_out} out + "
                f"{self.dropped} dropped {self.drops}"
            )
        return self
