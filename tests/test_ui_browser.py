"""The Prefect UI in a real browser: headless Debian chromium opens the session's server after
the demo (``ui_demo``), finds the demo's flow runs and the catalog artifact, and keeps screenshots.

Screenshots go to a temporary directory; with ``SETI_AUDITOR_SCREENSHOT_DIR`` set they are also
copied there (``SETI_AUDITOR_SCREENSHOT_DIR=docs/img`` refreshes the README's pictures).
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from seti_auditor import modeldir

CHROMIUM = shutil.which("chromium")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="needs Debian's chromium on PATH "
                                "(`apt-get install -y chromium`; .ci/run installs it)")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--hide-scrollbars", "--window-size=1400,1000"]
BUDGET_MS = 20_000  # virtual time the UI's JavaScript gets to fetch from the API and render


def _chromium(url: str, profile: Path, *args: str) -> str:
    out = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={BUDGET_MS}",
                          *args, url], capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, f"chromium exited {out.returncode} on {url}:\n{out.stderr[-2000:]}"
    return out.stdout


def _page_text(url: str, profile: Path, expected: list[str], tries: int = 3) -> str:
    """The rendered text of a page (``--dump-dom``), reloaded until it shows ``expected`` (a busy server is slow)."""
    for _ in range(tries):
        dom = re.sub(r"<(script|style)\b.*?</\1>", " ", _chromium(url, profile, "--dump-dom"), flags=re.S)
        text = re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", dom)))
        if all(e in text for e in expected):
            return text
    raise AssertionError(f"{url} never showed {expected}; it showed: {text[:2000]}")


def _screenshot(url: str, profile: Path, path: Path) -> Path:
    _chromium(url, profile, f"--screenshot={path}")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000  # not a blank page
    if target := os.environ.get("SETI_AUDITOR_SCREENSHOT_DIR"):
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def test_ui_shows_the_demo_runs_and_the_catalog_artifact(ui_demo, prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import filters as f

    work = ui_demo["work"]
    version = modeldir.read_meta(work)["model_version"]
    parent_name, score_name = f"run archive into {work.name} (reuse model)", f"score {work.name} with model {version}"
    with get_client(sync_client=True) as client:
        (score,) = client.read_flow_runs(flow_run_filter=f.FlowRunFilter(name=f.FlowRunFilterName(any_=[score_name])))
        (catalog,) = client.read_artifacts(artifact_filter=f.ArtifactFilter(
            key=f.ArtifactFilterKey(any_=["candidates"]), flow_run_id=f.ArtifactFilterFlowRunId(any_=[score.id])))
    ui, profile = prefect_server.removesuffix("/api") + "/v2", tmp_path / "chromium-profile"

    # the runs page lists the parent run and its subflows by their readable names
    _page_text(f"{ui}/runs", profile, [parent_name, score_name, f"ingest archive into {work.name}"])

    # the score run's artifacts tab: the catalog table, the summary and the plots
    run_url = f"{ui}/runs/flow-run/{score.id}?tab=Artifacts"
    _page_text(run_url, profile, [score_name, f"Parent Run {parent_name}", "candidates", "score-summary",
                                  "candidate-plot-0"])
    _screenshot(run_url, profile, tmp_path / "ui-flow-run.png")

    # the catalog artifact itself: rows of the catalog, linked to its flow run
    first = json.loads(catalog.data)[0]["source_file"]
    _page_text(f"{ui}/artifacts/artifact/{catalog.id}", profile, ["candidates", "source_file", first, score_name])
    _screenshot(f"{ui}/artifacts/artifact/{catalog.id}", profile, tmp_path / "ui-catalog-artifact.png")
