"""End to end through the real Dagster UI: webserver + daemon on 127.0.0.1, headless Chromium via Playwright.

Launches the embedded default through the GraphQL API the UI itself uses (clicking through launchpads is
brittle across Dagster releases), then verifies the results in the UI pages and saves screenshots.
Skips when Chromium or Playwright is missing; `.ci/run` installs both, so it runs in CI.
"""

import os
import shutil
import sys
from pathlib import Path

import pytest

from tests.dagster_web import free_port, gql, serving
from tests.waiting import until

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
playwright = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
pytestmark = [pytest.mark.slow, pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")]
ROOT = Path(__file__).resolve().parents[1]
ASSETS = ["mteb_test_texts", "medi_triplets", "mteb_train_split", "mined_triplets", "triplet_dataset", "published_dataset"]

LAUNCH = """mutation($p: ExecutionParams!) { launchRun(executionParams: $p) {
  __typename ... on LaunchRunSuccess { run { runId } } ... on PythonError { message }
  ... on InvalidSubsetError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
STATUS = """query($id: ID!) { runOrError(runId: $id) { ... on Run { status } } }"""
REPOS = """{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }"""


@pytest.fixture(scope="module")
def dagster_ui(tmp_path_factory):
    home = tmp_path_factory.mktemp("dagster_home")
    shutil.copy(ROOT / "dagster.yaml", home / "dagster.yaml")
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "GISTFORGE_HOME": str(home / "gistforge"),
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.pop("GISTFORGE_CONFIG", None)
    dg_cli = str(Path(sys.executable).parent / "dg")  # Dagster's current CLI, as the README's UI section says
    with serving([dg_cli, "dev", "--use-active-venv", "--host", "127.0.0.1", "--port", str(port)], ROOT, env,
                 home / "dagster-dev.log", port) as url:
        yield url, home


def _run(url: str, repo: dict, job: str, partition: str | None = None, timeout: float = 300) -> str:
    params = {"selector": {"repositoryName": repo["name"], "repositoryLocationName": repo["location"]["name"],
                           "jobName": job},
              "executionMetadata": {"tags": [{"key": "dagster/partition", "value": partition}] if partition else []}}
    launched = gql(url, LAUNCH, {"p": params})["launchRun"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["runId"]
    def ended() -> str | None:
        status = gql(url, STATUS, {"id": run_id})["runOrError"]["status"]
        return status if status in ("SUCCESS", "FAILURE", "CANCELED") else None

    status = until(f"end of run {run_id} of {job}", ended, timeout_s=timeout, every_s=2)
    assert status == "SUCCESS", f"run {run_id} of {job} ended {status}"
    return run_id


def _open(page, url: str) -> None:
    page.goto(url, wait_until="networkidle", timeout=120_000)  # Playwright's default, 30 s, is tight on a loaded CI
    skip = page.get_by_role("button", name="Skip")
    if skip.count():  # Dagster's one-off "join the community" dialog
        skip.first.click()


def test_materialise_the_embedded_default_from_the_ui(dagster_ui, tmp_path):
    url, home = dagster_ui
    shots = Path(os.environ.get("UI_SCREENSHOT_DIR", tmp_path))  # not GISTFORGE_*: conftest clears those
    shots.mkdir(parents=True, exist_ok=True)
    repo = gql(url, REPOS)["repositoriesOrError"]["nodes"][0]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000})
        try:
            _open(page, f"{url}/asset-groups")  # the lineage graph, collapsed to its four groups
            for group in ("ingest", "mine", "publish", "train"):
                page.get_by_text(group, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "ui-graph.png"), full_page=True)
            _open(page, f"{url}/assets")
            for name in ASSETS:
                page.get_by_text(name, exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "ui-assets.png"), full_page=True)

            _run(url, repo, "ingest_medi")
            for task in ("Banking77Classification", "ImdbClassification", "ChatterbotTopics"):
                _run(url, repo, "ingest_and_mine", task)
            run_id = _run(url, repo, "build_and_publish")

            _open(page, f"{url}/runs/{run_id}")
            page.get_by_text("published_dataset").first.wait_for(timeout=60_000)
            page.get_by_text("Success").first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "ui-run.png"), full_page=True)

            _open(page, f"{url}/assets/published_dataset")
            tag = next(t.name for t in (home / "gistforge/hub/datasets--local--gistforge-medi-mteb-triplets/refs").iterdir()
                       if t.name != "main")
            page.get_by_text(tag, exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("load_dataset", exact=False).first.wait_for(timeout=60_000)
            snapshot = next((home / "gistforge/hub/datasets--local--gistforge-medi-mteb-triplets/snapshots").iterdir())
            page.get_by_text(str(snapshot), exact=False).first.wait_for(timeout=60_000)  # the version, as a path
            page.screenshot(path=str(shots / "ui-published.png"), full_page=True)

            # per-task counts as a table (MetadataValue.table), not markdown
            _open(page, f"{url}/assets/triplet_dataset")
            page.get_by_text("rows_per_task", exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("mteb_banking77", exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "ui-triplet-table.png"), full_page=True)

            # the non-blocking WARN checks of mining (IVF recall, precision agreement)
            _open(page, f"{url}/assets/mined_triplets?view=checks")
            page.get_by_text("ivf_recall", exact=True).first.wait_for(timeout=60_000)
            page.get_by_text("guide_agreement", exact=True).first.wait_for(timeout=60_000)
            page.screenshot(path=str(shots / "ui-mined-checks.png"), full_page=True)

        finally:
            browser.close()
