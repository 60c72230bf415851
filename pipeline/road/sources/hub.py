"""Hub access for sources: a source's pinned repo and revision, and its snapshot, downloaded or read from the
Hub cache, with transient faults retried within a budget (`resolved` asks once per stage)."""

from __future__ import annotations

from pathlib import Path

from pipeline.common.retry import BudgetSpent, RetryBudget
from pipeline.config import MediSource, TaskSource
from pipeline.registry import get_task


class SourceError(ValueError):
    """Bad or unavailable input, with the source named in the message."""


def hub_snapshot(repo_id: str, revision: str, cache_dir: Path | None = None, local_files_only: bool = False,
                 budget: RetryBudget | None = None) -> Path:
    """The local folder of `repo_id@revision`, downloaded or read from the Hub cache. Connection errors,
    timeouts, 429 and 5xx are retried within `budget` (none: not retried); everything else fails at once."""
    from huggingface_hub import snapshot_download
    from huggingface_hub import constants
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RevisionNotFoundError

    offline = local_files_only or constants.HF_HUB_OFFLINE
    where = cache_dir or constants.HF_HUB_CACHE
    def download() -> str:
        return snapshot_download(repo_id, repo_type="dataset", revision=revision, cache_dir=cache_dir,
                                 local_files_only=offline)

    try:
        return Path(budget.call(f"download {repo_id}@{revision}", download) if budget else download())
    except BudgetSpent as exc:
        raise SourceError(f"{exc}; check the network (or HF_ENDPOINT), or raise network.retry_budget_s") from None
    except (LocalEntryNotFoundError, FileNotFoundError) as exc:
        raise SourceError(
            f"{repo_id}@{revision}: this revision is not in the offline Hub cache at {where} "
            f"(HF_HUB_OFFLINE={int(bool(offline))}); download it once online or point HF_HUB_CACHE at a cache "
            f"that holds it ({type(exc).__name__})"
        ) from None
    except RevisionNotFoundError:
        raise SourceError(f"{repo_id}@{revision}: revision not found on the Hub") from None
    except HfHubHTTPError as exc:
        raise SourceError(f"{repo_id}@{revision}: Hub request failed: {exc}") from None


def pin(src: TaskSource | MediSource) -> tuple[str, str]:
    """The Hub repo and revision a source reads: a task's own override, else the registry's pin."""
    if isinstance(src, TaskSource):
        task = get_task(src.name)
        return task.hub_id, src.revision or task.revision
    return src.repo_id, src.revision


def snapshot(src: TaskSource | MediSource, budget: RetryBudget | None = None) -> Path:
    """The source's snapshot folder; a source given its own `cache_dir` is read from it offline."""
    repo_id, revision = pin(src)
    return hub_snapshot(repo_id, revision, src.cache_dir, local_files_only=src.cache_dir is not None, budget=budget)


def is_local(src: TaskSource | MediSource) -> bool:
    """A source read from a file of the user's, not from a Hub snapshot."""
    return src.kind in ("local", "json")

