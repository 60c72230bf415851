"""One partition per included labelled task of the active configuration."""

import dagster as dg

from pipeline.config import load_config

TASKS = [t.name for t in load_config().included_tasks]
task_partitions = dg.StaticPartitionsDefinition(TASKS)
