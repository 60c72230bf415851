"""What `gistforge build` prints, and where the rest goes.

The console gets one short line per log message of gistforge's own (the library, the assets, Dagster's run
events) and, on failure, the CLI's own one-line summary. Everything else goes to a log file under the home
folder (`<home>/logs`, readable by its owner only): Dagster's event tracebacks, every DEBUG line, other
libraries' INFO and WARNING records (mteb's evaluation chatter, which it logs twice, through two loggers),
Python warnings (FutureWarning and the like), and whatever is printed to stdout while the runs go (the
trainer's loss dicts). A library's ERROR still reaches the console. Progress bars (tqdm: transformers'
"Loading weights", the trainer's steps) are drawn only when stderr is a terminal. `--log-level DEBUG` prints
everything on the console as well. Libraries that chatter at INFO on every start (alembic's migrations,
faiss's loader probing for AVX builds) are held at WARNING.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from contextlib import contextmanager, redirect_stdout
from pathlib import Path
from typing import Iterator

import dagster as dg

QUIET = ("alembic", "faiss.loader", "sentence_transformers", "httpx", "urllib3", "datasets", "filelock")
OURS = ("pipeline", "assets", "gistforge")  # loggers whose INFO lines are the console's
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _progress_bars_off() -> None:
    """Progress bars of the libraries already imported off (those imported later read the environment the
    CLI's `main` sets: TQDM_DISABLE, HF_HUB_DISABLE_PROGRESS_BARS, HF_DATASETS_DISABLE_PROGRESS_BARS)."""
    if "huggingface_hub" in sys.modules:
        sys.modules["huggingface_hub"].utils.disable_progress_bars()
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()
    if "transformers" in sys.modules:
        sys.modules["transformers"].utils.logging.disable_progress_bar()


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


def _console_worthy(record: logging.LogRecord) -> bool:
    """gistforge's own lines and Dagster's run events; another library's only from ERROR up."""
    if getattr(record, "dagster_meta", None) is not None or record.levelno >= logging.ERROR:
        return True
    return record.name.split(".")[0] in OURS


class _LogWriter(io.TextIOBase):
    """A text stream whose lines become log records (stdout while the runs go: the file has them)."""

    def __init__(self, log: logging.Logger):
        self.log, self.pending = log, ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        *lines, self.pending = (self.pending + text).split("\n")
        for line in lines:
            if line.strip():
                self.log.info(line.rstrip())
        return len(text)

    def flush(self) -> None:
        if self.pending.strip():
            self.log.info(self.pending.rstrip())
        self.pending = ""


class _PrivateFile(logging.FileHandler):
    """A log file only its owner reads (0600): it holds tracebacks, paths and settings of the build."""

    def _open(self):
        fd = os.open(self.baseFilename, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        os.fchmod(fd, 0o600)  # also an older file, or one created under a laxer mode
        return os.fdopen(fd, "a", encoding=self.encoding, errors=self.errors)


class _BarSafeStream(logging.StreamHandler):
    """A console handler that writes through `tqdm.write`, which lifts any progress bar on the stream, prints
    the line and draws the bar again, so log lines and bars never cut into each other. This is what tqdm's
    `logging_redirect_tqdm` installs, kept as the handler itself: that context manager swaps the root
    logger's console handler for one without its level and filters, and misses Dagster's run logger."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        try:
            tqdm.write(self.format(record), file=self.stream)
            self.flush()
        except Exception:  # noqa: BLE001 - logging's own contract: report, never raise
            self.handleError(record)


class Console:
    """The CLI's logging: a short stderr stream at `level` and a full log file at DEBUG."""

    def __init__(self, level: str, log_file: Path):
        self.level = logging.getLevelName(level.upper()) if isinstance(level, str) else level
        if not isinstance(self.level, int):
            raise ValueError(f"--log-level {level!r} is not a logging level (DEBUG, INFO, WARNING, ERROR)")
        self.log_file = log_file
        log_file.parent.mkdir(parents=True, exist_ok=True)
        self.file = _PrivateFile(log_file, encoding="utf-8", delay=True)
        self.file.setFormatter(logging.Formatter(_FORMAT))
        self.stream = _BarSafeStream(sys.stderr)
        self.stream.setLevel(self.level)
        self.stream.setFormatter(logging.Formatter(_FORMAT) if self.level <= logging.DEBUG else _Short())
        if self.level > logging.DEBUG:
            self.stream.addFilter(_not_a_failure_event)
            self.stream.addFilter(_console_worthy)

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
        if not _is_terminal(self.stream.stream):
            _progress_bars_off()
        logging.captureWarnings(True)  # FutureWarning & co. become `py.warnings` records: the log file's
        stdout = _LogWriter(logging.getLogger("stdout"))
        try:
            with redirect_stdout(stdout):
                yield
        finally:
            stdout.flush()
            logging.captureWarnings(False)
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
