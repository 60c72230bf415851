"""How a build fails, stops and reruns, as a user meets it in the first hour: only transient faults are
retried, within one budget; bad input fails at once in one line; SIGTERM stops cleanly and the next build
resumes; the first command leaves a portable card and library lines in the run logs.

Related behaviour pinned elsewhere: an unchanged rebuild reuses the fine-tune (test_train.py), a task left
with nothing to mine (test_bad_input.py), config mistakes from the CLI (test_registry_config.py), `main` never
moving back and no machine path in the card (test_publishing.py); peak RSS is a benchmark figure
(benchmarks/embedded_rss.py), not a timed test.
"""

import logging
import os
import re
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import dagster as dg
import httpx
import pytest
import yaml
from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, OfflineModeIsEnabled

from pipeline.common.progress import Progress
from pipeline.common.retry import RetryBudget, is_transient
from pipeline.config import NetworkConfig
from pipeline.profiles import embedded_profile
from pipeline.road.sources import SourceError, hub_snapshot
from tests.conftest import wait_for_text

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "hf_FAKEtoken0987654321abcdef"
NOISE = ("Traceback", "Stack Trace", "alembic", "ModuleNotFoundError", "faiss.loader", "freed pool slots")


def _http_error(status: int) -> HfHubHTTPError:
    request = httpx.Request("GET", "https://huggingface.co/api/x")
    return HfHubHTTPError(f"{status} error", response=httpx.Response(status, request=request))


def _raised_from(outer: Exception, inner: Exception) -> Exception:
    try:
        try:
            raise inner
        except Exception as exc:
            raise outer from exc
    except Exception as exc:  # noqa: BLE001
        return exc


# ------------------------------------------------------------------------------------------ fast tier


def test_only_transient_faults_are_retried():
    transient = [httpx.ConnectError("refused"), httpx.ReadTimeout("slow"), TimeoutError(), _http_error(429),
                 _http_error(503), _raised_from(LocalEntryNotFoundError("not cached"), httpx.ConnectError("down"))]
    never = [_http_error(401), _http_error(403), _http_error(404), OfflineModeIsEnabled("offline"),
             _raised_from(LocalEntryNotFoundError("not cached"), OfflineModeIsEnabled("offline")),
             LocalEntryNotFoundError("local_files_only"), SourceError("bad column"), ValueError("bad input")]
    assert [is_transient(e) for e in transient] == [True] * len(transient)
    assert [is_transient(e) for e in never] == [False] * len(never)


def test_no_asset_retries_on_top_of_the_library(tmp_path):
    from assets.definitions import build_definitions
    from assets.settings import Deployment

    defs = build_definitions(embedded_profile(), Deployment(home=tmp_path))
    policies = {key.to_user_string(): node.retry_policy for assets in defs.resolve_asset_graph().assets_defs
                for key, node in [(assets.key if len(assets.keys) == 1 else next(iter(assets.keys)), assets.op)]}
    assert policies and all(policy is None for policy in policies.values()), policies


def test_a_hub_download_retries_transient_faults_within_one_budget(tmp_path, monkeypatch):
    import huggingface_hub

    now, waits, calls = [0.0], [], []

    def sleep(s):
        waits.append(s)
        now[0] += s

    def unreachable(*args, **kwargs):
        calls.append(kwargs["revision"])
        raise _raised_from(LocalEntryNotFoundError("cannot reach the Hub"), httpx.ConnectError("refused"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    budget = RetryBudget(10, first_delay_s=1, sleep=sleep, clock=lambda: now[0])
    with pytest.raises(SourceError, match=r"org/ds@r1: still failing after the 10 s retry budget .*ConnectError"):
        hub_snapshot("org/ds", "r1", budget=budget)
    assert sum(waits) == pytest.approx(10) and len(calls) == len(waits) + 1
    with pytest.raises(SourceError, match="org/ds@r2: still failing"):  # the same ingest's budget is spent
        hub_snapshot("org/ds", "r2", budget=budget)
    assert calls[-1] == "r2" and sum(waits) == pytest.approx(10)

    def offline(*args, **kwargs):
        calls.append("offline")
        raise _raised_from(LocalEntryNotFoundError("not cached"), OfflineModeIsEnabled("offline mode is on"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(SourceError, match="not in the offline Hub cache"):
        hub_snapshot("org/ds", "r3", budget=RetryBudget(10, sleep=sleep, clock=lambda: now[0]))
    assert calls.count("offline") == 1, "offline mode can never succeed: not retried"


def _hf_home(tmp_path: Path, monkeypatch) -> Path:
    """An empty Hugging Face home (no stored login, no HF_TOKEN): where `hf auth login` stores its token."""
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    home.mkdir()
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))  # read once at import: follow HF_HOME
    monkeypatch.delenv("HF_TOKEN", raising=False)
    return home


def test_a_missing_hf_token_is_found_before_any_run(tmp_path, monkeypatch, capsys):
    from gistforge.cli import build

    _hf_home(tmp_path, monkeypatch)
    monkeypatch.setenv("GISTFORGE_PUBLISH_TARGET", "hub")
    assert build(["build", "--home", str(tmp_path / "home")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[0]] and "needs a Hugging Face token" in err[0]
    assert "hf auth login" in err[0] and "HF_TOKEN" in err[0], "the message names both ways to give one"
    assert not (tmp_path / "home" / "dagster").exists(), "no instance, no run"


def test_issue_22_4_a_token_stored_by_hf_auth_login_is_found_and_never_printed(tmp_path, monkeypatch, capsys):
    """`hf auth login` writes `$HF_HOME/token`; `huggingface_hub.get_token()` finds it where HF_TOKEN is unset,
    in the preflight and in the Hub publisher resource alike."""
    from assets.definitions import publisher_for
    from assets.settings import Deployment
    from gistforge.cli import _preflight

    (_hf_home(tmp_path, monkeypatch) / "token").write_text(TOKEN + "\n")
    deployment = Deployment(home=tmp_path / "home", publish_target="hub")
    assert _preflight(deployment) == [], "the stored login is a token"
    resource = publisher_for(deployment)
    assert TOKEN not in repr(resource) and TOKEN not in str(resource.model_dump()), "not in the resource's config"
    assert resource.publisher().token == TOKEN
    monkeypatch.setenv("HF_TOKEN", "hf_fromTheEnvironment")
    assert publisher_for(deployment).publisher().token == "hf_fromTheEnvironment", "HF_TOKEN wins, as in get_token"
    out, err = capsys.readouterr()
    assert TOKEN not in out + err


def test_long_loops_log_progress_every_few_seconds():
    now = [0.0]
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            lines.append(record.getMessage())

    log = logging.getLogger("pipeline.test_progress")
    log.addHandler(Capture())
    log.setLevel(logging.INFO)
    progress = Progress(1000, "encode", "texts", log, every_s=10, clock=lambda: now[0])
    for _ in range(10):
        now[0] += 4
        progress.update(100)
    progress.close()
    assert len(lines) == 3 and lines[0].startswith("encode: 300/1000 texts (30%) in 12 s, about 28 s left"), lines


# ------------------------------------------------------------------------------- the CLI, for real

def _env(home: Path, **extra: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GISTFORGE_", "DAGSTER_HOME", "HF_TOKEN"))}
    env.update({"GISTFORGE_HOME": str(home), "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra})
    return {k: v for k, v in env.items() if v != ""}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "gistforge.cli", "build", "--no-finetune", *args]


def _config(tmp_path: Path, **network) -> Path:
    cfg = embedded_profile().model_copy(update={"network": NetworkConfig(**network)})
    path = tmp_path / "embedded-network.yaml"
    path.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    return path


def _gistforge_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("gistforge: ")]


def _sigterm_after(cmd: list[str], env: dict, log: Path, text: str, delay_s: float) -> tuple[int, float]:
    """Start a build, wait for `text` in its output, SIGTERM it `delay_s` later: (exit code, seconds to exit)."""
    with open(log, "w") as sink:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=sink, stderr=subprocess.STDOUT)
        wait_for_text(log, text, proc)
        time.sleep(delay_s)
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        code = proc.wait(timeout=60)
    return code, time.monotonic() - start


@pytest.mark.slow
def test_a_bad_local_file_fails_at_once_in_one_line(tmp_path):
    bad = tmp_path / "topics.csv"
    bad.write_text("utterance;topic\nhello there;a\nbye now;b\n")  # a semicolon file named .csv
    config = tmp_path / "bad.yaml"
    config.write_text(yaml.safe_dump({"profile": "bad", "medi": None, "guide_model": "bundled:all-MiniLM-L6-v2",
                                      "tasks": [{"name": "Topics", "kind": "local", "path": str(bad),
                                                 "text_column": "utterance", "label_column": "topic",
                                                 "label_text_column": None}]}))
    home = tmp_path / "home"
    start = time.monotonic()
    out = subprocess.run(_cli("--config", str(config)), cwd=ROOT, env=_env(home), capture_output=True, text=True,
                         timeout=300)
    seconds = time.monotonic() - start
    print(f"bad local file: exit {out.returncode} after {seconds:.1f} s")
    assert out.returncode == 1
    lines = _gistforge_lines(out.stderr)
    assert len(lines) == 2, out.stderr
    assert lines[0].startswith("gistforge: ingest_and_mine[Topics] step mteb_train_split failed: SourceError: "
                               f"local task Topics ({bad}): missing column(s) 'utterance'")
    log_file = Path(lines[1].split(": ", 2)[2])
    assert "Stack Trace" in log_file.read_text(), "the traceback is kept, in the log file"
    assert not [n for n in NOISE + ("retry",) if n in out.stderr + out.stdout], out.stderr
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        records = instance.get_records_for_run(instance.get_runs(limit=1)[0].run_id).records
        kinds = [r.event_log_entry.dagster_event.event_type_value for r in records if r.event_log_entry.is_dagster_event]
    assert kinds.count("STEP_START") == 1 and "STEP_UP_FOR_RETRY" not in kinds, "failed once, never retried"


@pytest.mark.slow
def test_an_unreachable_hub_fails_within_the_budget_and_sigterm_ends_the_wait(tmp_path):
    with socket.socket() as s:  # a port nothing listens on: connection refused, like a Hub out of reach
        s.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{s.getsockname()[1]}"
    home = tmp_path / "home"
    hub = {"GISTFORGE_PUBLISH_TARGET": "hub", "HF_TOKEN": TOKEN, "HF_ENDPOINT": endpoint, "HF_HUB_OFFLINE": ""}
    hf_home = tmp_path / "hf-home"  # the first run's token is the login `hf auth login` stored, HF_TOKEN unset
    hf_home.mkdir()
    (hf_home / "token").write_text(TOKEN)

    start = time.monotonic()
    out = subprocess.run(_cli("--config", str(_config(tmp_path, retry_budget_s=6, first_retry_delay_s=1))), cwd=ROOT,
                         env=_env(home, **{**hub, "HF_TOKEN": "", "HF_HOME": str(hf_home)}), capture_output=True,
                         text=True, timeout=600)
    print(f"unreachable Hub, 6 s budget: exit {out.returncode} after {time.monotonic() - start:.1f} s")
    assert out.returncode == 1, "the stored token passed the preflight (exit 2 otherwise)"
    first = [out.stdout, out.stderr]
    failure = _gistforge_lines(out.stderr)[0]
    assert "published_dataset failed" in failure and "still failing after the 6 s retry budget" in failure
    assert "ConnectError" in failure and "HF_ENDPOINT" in failure

    # SIGTERM while publishing waits to retry: exit 130 within 20 s (about 3 s unloaded; the wait it cuts short
    # has 28 s left, so a SIGTERM honoured only when the wait ends still fails this)
    log = tmp_path / "retry.log"
    code, seconds = _sigterm_after(_cli("--config", str(_config(tmp_path, retry_budget_s=600, first_retry_delay_s=30))),
                                   _env(home, **hub), log, "; retry 1 in", 1)
    print(f"SIGTERM in a retry wait: exit {code} after {seconds:.1f} s")
    assert code == 130 and seconds < 20
    assert "gistforge: interrupted; finished stages are kept" in log.read_text()

    # offline mode can never reach the Hub: no retry at all
    out = subprocess.run(_cli(), cwd=ROOT, env=_env(home, **{**hub, "HF_HUB_OFFLINE": "1"}), capture_output=True,
                         text=True, timeout=600)
    assert out.returncode == 1 and "retry" not in out.stderr
    assert "OfflineModeIsEnabled" in _gistforge_lines(out.stderr)[0]

    texts = [*first, out.stdout, out.stderr, log.read_text()] + [p.read_text(errors="replace") for p in home.rglob("*")
                                                         if p.is_file() and p.suffix in (".log", ".json", ".md")]
    assert not [t for t in texts if TOKEN in t], "the token appears nowhere"


@pytest.mark.slow
def test_sigterm_in_a_step_exits_130_and_the_next_build_resumes_with_its_history(tmp_path):
    home = tmp_path / "home"
    log = tmp_path / "paused.log"
    code, seconds = _sigterm_after(_cli(), _env(home, GISTFORGE_PAUSE_AT="mine"), log,
                                   "paused at fault point 'mine'", 5)
    print(f"SIGTERM 5 s into a step: exit {code} after {seconds:.1f} s")
    assert code == 130 and seconds < 20  # about 3 s unloaded; the paused step would wait 10 minutes
    text = log.read_text()
    assert _gistforge_lines(text) == ["gistforge: interrupted; finished stages are kept and the next build resumes"]
    assert not [n for n in NOISE if n in text], text[-3000:]

    out = subprocess.run(_cli(), cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "reused, not redone" in out.stderr and "gistforge: published local/" in out.stdout
    assert not [n for n in NOISE if n in out.stderr], out.stderr[-3000:]
    # the UI started on the same home shows both builds
    with dg.DagsterInstance.from_config(str(home / "dagster")) as instance:
        statuses = {r.status for r in instance.get_runs()}
        published = instance.fetch_materializations(dg.AssetKey("published_dataset"), limit=5).records
    assert dg.DagsterRunStatus.FAILURE in statuses and dg.DagsterRunStatus.SUCCESS in statuses
    assert len(published) == 1


@pytest.mark.slow
def test_the_first_command_leaves_a_portable_card_history_and_library_lines_in_the_run_logs(
        embedded_build):
    card = next((embedded_build / "hub").rglob("snapshots/*/README.md")).read_text()
    assert str(embedded_build) not in card and "/home/" not in card and str(ROOT) not in card
    with dg.DagsterInstance.from_config(str(embedded_build / "dagster")) as instance:
        for asset in ("mteb_test_texts", "medi_triplets", "triplet_dataset", "published_dataset", "finetuned_encoder"):
            assert instance.fetch_materializations(dg.AssetKey(asset), limit=1).records, f"{asset} not in the UI"
        messages = [r.event_log_entry.user_message for run in instance.get_runs()
                    for r in instance.get_records_for_run(run.run_id).records]
    assert any(m.startswith("embedded 160 texts") for m in messages), "the library's own lines reach the run logs"


@pytest.mark.slow
def test_issue_22_7_the_first_command_prints_at_most_40_lines_and_its_log_is_private(tmp_path):
    """The README's first command in a fresh home, fine-tune included: gistforge's own lines only (one per
    stage and the final lines); mteb's chatter, warnings, progress bars and the trainer's loss dicts go to
    the log file, which only its owner reads (issue 23 #9)."""
    home = tmp_path / "home"
    start = time.monotonic()
    out = subprocess.run([sys.executable, "-m", "gistforge.cli", "build"], cwd=ROOT, env=_env(home),
                         capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = (out.stderr + out.stdout).splitlines()
    print(f"first command: {len(lines)} console lines, exit 0 after {time.monotonic() - start:.1f} s")
    # an encode logs a progress line every 10 s it runs: how many depends on the machine's speed, not the CLI
    progress = re.compile(r"encode: \d+/\d+ texts \(\d+%\) in \d+ s, about \S+ s left")
    assert len([line for line in lines if not progress.search(line)]) <= 40, "\n".join(lines)
    debris = [line for line in lines if re.search(r"Warning|it/s\]|%\||\r|\{'loss'|train_runtime|mteb\.|"
                                                  r"Loading weights|Writing model shards", line)]
    assert not debris, debris
    assert "gistforge: fine-tuned encoder" in out.stdout and "gistforge: published local/" in out.stdout
    log_file, = (home / "logs").glob("build-*.log")
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600
    kept = log_file.read_text()
    assert "{'loss'" in kept and "mteb.evaluate" in kept, "the file has what the console has not"
