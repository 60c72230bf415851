"""What `gistforge build` prints, and where the rest goes.

The console gets one short line per log message (library and Dagster alike) and, on failure, the CLI's
own one-line summary; Dagster's event tracebacks and every DEBUG line go to a log file under the home
folder instead (or to the console as well with `--log-level DEBUG`). Libraries that chatter at INFO on
every start (alembic's migrations, faiss's loader probing for AVX builds) are held at WARNING.
"""

from __future__ import annotations

import logging
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import dagster as dg

QUIET = ("alembic", "faiss.loader", "sentence_transformers", "httpx", "urllib3", "datasets", "filelock")
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class _Short(logging.Formatter):
    """`HH:MM:SS LEVEL where: message`, cut before any traceback (the log file has it whole)."""

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None)
        if meta:
            tags = meta.get("job_tags") or {}
            partition = tags.get("dagster/partition")
            where = f"{meta.get('job_name')}{f'[{partition}]' if partition else ''}"
            if meta.get("step_key"):
                where += f" {meta['step_key']}"
            message = meta.get("orig_message") or record.getMessage()
        else:
            where, message = record.name, record.getMessage()
        first = message.strip().split("\n\n")[0].splitlines()[0] if message.strip() else ""
        level = "" if record.levelno == logging.INFO else f"{record.levelname} "
        return f"{self.formatTime(record, '%H:%M:%S')} {level}{where}: {first}"


def _not_a_failure_event(record: logging.LogRecord) -> bool:
    """Dagster's failure events are summed up by the CLI in one line each; their tracebacks stay in the file."""
    meta = getattr(record, "dagster_meta", None)
    return not (meta and meta.get("dagster_event") is not None and record.levelno >= logging.ERROR)


class Console:
    """The CLI's logging: a short stderr stream at `level` and a full log file at DEBUG."""

    def __init__(self, level: str, log_file: Path):
        self.level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
        if not isinstance(self.level, int):
            raise ValueError(f"--log-level {level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.file = logging.FileHandler(log_file, encoding="utf-8", delay=True)
        self.file.setFormatter(logging.Formatter(_FORMAT))
        self.stream = logging.StreamHandler(sys.stderr)
        self.stream.setLevel(self.level)
        self.stream.setFormatter(logging.Formatter(_FORMAT) if self.level <= logging.DEBUG else _Short())
        if self.level > logging.DEBUG:
            self.stream.addFilter(_not_a_failure_event)

    @contextmanager
    def installed(self, library_in_dagster_logs: bool) -> Iterator[None]:
        """Route the root logger while building; restored afterwards. `library_in_dagster_logs`: the instance
        forwards `pipeline` logs into the runs' logs (dagster.yaml `python_logs`), so they reach both outputs
        from there, once."""
        root = logging.getLogger()
        saved = root.level, list(root.handlers), {n: logging.getLogger(n).level for n in QUIET}
        root.setLevel(logging.DEBUG if self.level <= logging.DEBUG else logging.INFO)
        for handler in saved[1]:
            root.removeHandler(handler)
        for handler in (self.stream, self.file):
            if library_in_dagster_logs:
                handler.addFilter(lambda r: not r.name.startswith("pipeline"))
            root.addHandler(handler)
        for name in QUIET:
            logging.getLogger(name).setLevel(logging.DEBUG if self.level <= logging.DEBUG else logging.WARNING)
        try:
            yield
        finally:
            for handler in (self.stream, self.file):
                root.removeHandler(handler)
            self.file.close()
            root.setLevel(saved[0])
            for handler in saved[1]:
                root.addHandler(handler)
            for name, level in saved[2].items():
                logging.getLogger(name).setLevel(level)

    def dagster_logger(self) -> dg.LoggerDefinition:
        """Dagster's run logs, in the console's short form; whole (tracebacks included) in the log file."""
        def make(_init_context) -> logging.Logger:
            log = logging.Logger("gistforge.run", logging.DEBUG)
            log.addHandler(self.stream)
            log.addHandler(self.file)
            return log

        return dg.LoggerDefinition(make, description="gistforge CLI: short console lines, full log file")
