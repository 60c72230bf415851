"""Waiting for a busy pool in the CLI itself, before a run starts, where the wait is visible and interruptible.

Dagster's in-process executor waits for a pool slot silently, and while it waits it only records a SIGINT or
SIGTERM (the step loop never checks for one), so a build stopped during that wait would poll forever. The CLI
therefore waits first: it says which pool it waits for and which run holds it, and Ctrl-C or SIGTERM stop it.
A slot taken by another build between this wait and Dagster's claim is still waited for by Dagster (rare).
"""

from __future__ import annotations

import time
from typing import Callable, Iterable

import dagster as dg


def pools_of(job: dg.JobDefinition) -> list[str]:
    """The pools the job's steps run in."""
    return sorted({op.pool for op in job.graph.iterate_op_defs() if getattr(op, "pool", None)})


def busy(instance: dg.DagsterInstance, pool: str) -> list[str]:
    """Runs holding every slot of `pool`; empty when a slot is free (or the pool is not limited)."""
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits or pool not in storage.get_concurrency_keys():
        return []
    info = storage.get_concurrency_info(pool)
    holders = [s.run_id for s in info.claimed_slots]
    return holders if info.slot_count and len(holders) >= info.slot_count else []


def wait_for_pools(instance: dg.DagsterInstance, pools: Iterable[str], say: Callable[[str], None],
                   poll_s: float = 2.0) -> None:
    """Block until each pool has a free slot, saying once per pool what it waits for."""
    for pool in pools:
        told = False
        while holders := busy(instance, pool):
            if not told:
                say(f"waiting for pool '{pool}': its slots are held by run(s) "
                    f"{', '.join(h[:8] for h in holders)} (Ctrl-C to stop)")
                told = True
            time.sleep(poll_s)
