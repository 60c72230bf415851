"""Dagster's web server on 127.0.0.1 for a test, and its GraphQL API (the one the UI itself uses): how tests ask
Dagster what it shows a user (run status, staleness) without reaching into its private modules."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import urllib.request
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from tests.waiting import until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def gql(url: str, query: str, variables: dict | None = None) -> dict:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    req = urllib.request.Request(f"{url}/graphql", data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        body = json.loads(resp.read())
    assert "errors" not in body, body
    return body["data"]


@contextmanager
def serving(argv: list[str], cwd: Path, env: dict[str, str], log_file: Path, port: int,
            timeout_s: float = 180) -> Iterator[str]:
    """Start `argv` (a web server listening on `port`), yield its URL once it answers, stop it on the way out."""
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"{url}/server_info", timeout=5)
            return True
        except OSError:
            return False

    with open(log_file, "w") as log:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            until(f"{argv[0]} serving", answers, timeout_s=timeout_s, every_s=1, proc=proc,
                  log=lambda: log_file.read_text()[-3000:])
            yield url
        finally:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
