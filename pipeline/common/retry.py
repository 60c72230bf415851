"""Retries for transient network faults only, all under one total time budget.

A fault that cannot pass by waiting (bad input, refused credentials, a missing repo, offline mode, a file
not in the cache) fails at once; a connection error, a timeout, HTTP 429 or a 5xx is retried with
exponential backoff until the budget is spent. One budget covers every call of one publish or ingest, so
retries never multiply across layers. The wait is an ordinary `time.sleep`: SIGINT/SIGTERM end it.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Callable, TypeVar

from pydantic import Field

from pipeline.common.settings import Settings

log = logging.getLogger(__name__)
T = TypeVar("T")

# Offline mode is a ConnectionError subclass in huggingface_hub, yet waiting never ends it.
_NEVER_TRANSIENT = ("OfflineModeIsEnabled", "GatedRepoError", "RepositoryNotFoundError", "RevisionNotFoundError",
                    "EntryNotFoundError")
_TRANSIENT_NAMES = ("ConnectError", "ConnectTimeout", "ReadTimeout", "WriteTimeout", "PoolTimeout", "TimeoutException",
                    "RemoteProtocolError", "ReadError", "WriteError", "NetworkError", "ChunkedEncodingError")


def http_status(exc: BaseException) -> int | None:
    return getattr(getattr(exc, "response", None), "status_code", None)


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def describe(exc: BaseException) -> str:
    """`Type: first line`, and the error it was raised from when that is another (the cause users can act on)."""
    def line(e: BaseException) -> str:
        text = str(e).strip()
        return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__

    root = list(_chain(exc))[-1]
    return line(exc) if root is exc else f"{line(exc)} (from {line(root)})"


def is_transient(exc: BaseException) -> bool:
    """True when the error, or the error it was raised from, is one that waiting can cure."""
    for e in _chain(exc):
        if type(e).__name__ in _NEVER_TRANSIENT:
            return False
        status = http_status(e)
        if status is not None:
            return status == 429 or status >= 500
        if isinstance(e, (ConnectionError, TimeoutError)) or type(e).__name__ in _TRANSIENT_NAMES:
            return True
    return False


class BudgetSpent(Exception):
    """Transient faults went on past the retry budget; the last one is the cause."""


class RetryBudget:
    """One total time budget for the retries of a sequence of calls (one publish, one ingest)."""

    def __init__(self, seconds: float, first_delay_s: float = 1.0, sleep: Callable[[float], None] = time.sleep,
                 clock: Callable[[], float] = time.monotonic):
        self.seconds, self.first_delay_s, self.sleep, self.clock = seconds, first_delay_s, sleep, clock
        self.deadline = clock() + seconds
        self.retries = 0

    def call(self, what: str, fn: Callable[[], T], describe: Callable[[BaseException], str] = describe) -> T:
        """`fn()`, retried while it fails transiently and the budget lasts. A deterministic error propagates
        unchanged; a transient one that outlasts the budget is raised as `BudgetSpent` (from it)."""
        attempt = 0
        while True:
            try:
                return fn()
            except Exception as exc:  # noqa: BLE001 - classified here, re-raised unchanged unless transient
                if not is_transient(exc):
                    raise
                delay = self.first_delay_s * 2**attempt * (1 + random.random() / 4)
                left = self.deadline - self.clock()
                if left <= 0:
                    raise BudgetSpent(f"{what}: still failing after the {self.seconds:g} s retry budget "
                                      f"({self.retries} retries): {describe(exc)}") from exc
                delay = min(delay, left)
                attempt += 1
                self.retries += 1
                log.warning("%s failed (%s); retry %s in %.1f s (%.0f s of the retry budget left)", what,
                            describe(exc), attempt, delay, left)
                self.sleep(delay)


class NetworkConfig(Settings):
    """How long a Hub download or publish may keep retrying transient faults (connection errors, timeouts,
    429, 5xx), in total. Anything else (offline mode, refused credentials, a missing repo) fails at once."""

    retry_budget_s: float = Field(120.0, ge=0, le=3600, description="total seconds of retrying per ingest/publish")
    first_retry_delay_s: float = Field(2.0, gt=0, le=60, description="first backoff; doubles per retry")

    def budget(self) -> RetryBudget:
        return RetryBudget(self.retry_budget_s, self.first_retry_delay_s)
