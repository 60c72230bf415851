"""What `gistforge build`'s console shows and what only its log file holds (issue 22 #7, issue 23 #9)."""

import logging
import os
import stat
import sys
import warnings

from gistforge.console import Console


def _build_like_output(console: Console) -> None:
    with console.installed(library_in_dagster_logs=False):
        logging.getLogger("pipeline.road.mine").info("mined 160 triplets")
        logging.getLogger("assets.publish").warning("a warning of gistforge's own")
        logging.getLogger("mteb.timing").info("Running experiment (0/3)")
        logging.getLogger("mteb.abstasks.classification").info("Running experiment (0/3)")
        logging.getLogger("mteb.abstasks.abstask").warning("The task is superseded")
        logging.getLogger("some.library").error("a library's error")
        warnings.warn("`get_sentence_embedding_dimension` was renamed", FutureWarning, stacklevel=1)
        print({"loss": "1.359", "epoch": "0.0137"})  # the trainer's loss dicts
        sys.stdout.write("half a line")


def test_console_shows_gistforge_lines_and_the_file_keeps_the_rest(tmp_path, capsys):
    console = Console("INFO", tmp_path / "logs" / "build.log")
    _build_like_output(console)
    out, err = capsys.readouterr()
    assert out == "", "stdout printed during the runs goes to the log file"
    shown = err.splitlines()
    assert [line.split(" ", 1)[1] for line in shown] == [
        "pipeline.road.mine: mined 160 triplets", "WARNING assets.publish: a warning of gistforge's own",
        "ERROR some.library: a library's error"]
    kept = console.log_file.read_text()
    for text in ("Running experiment (0/3)", "The task is superseded", "FutureWarning", "'loss': '1.359'",
                 "half a line", "mined 160 triplets"):
        assert text in kept, text
    print("after the build", file=sys.stdout)
    assert capsys.readouterr().out == "after the build\n", "stdout is the console's again"


def test_debug_console_shows_everything(tmp_path, capsys):
    _build_like_output(Console("DEBUG", tmp_path / "build.log"))
    err = capsys.readouterr().err
    assert "Running experiment (0/3)" in err and "The task is superseded" in err


def test_the_log_file_is_readable_by_its_owner_only(tmp_path):
    old = os.umask(0)
    try:
        console = Console("INFO", tmp_path / "logs" / "build.log")
        with console.installed(library_in_dagster_logs=False):
            logging.getLogger("pipeline").info("a line")
        (tmp_path / "logs" / "old.log").write_text("")
        os.chmod(tmp_path / "logs" / "old.log", 0o666)
        again = Console("INFO", tmp_path / "logs" / "old.log")  # an existing file is made private too
        with again.installed(library_in_dagster_logs=False):
            logging.getLogger("pipeline").info("another")
    finally:
        os.umask(old)
    assert stat.S_IMODE(console.log_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(again.log_file.stat().st_mode) == 0o600
