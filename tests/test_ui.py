"""``seti-auditor ui``: the server's settings, and the demo run against it (``ui_demo``), read back through the API."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest

from infra.server import DB_ENV, DB_ENV_LEGACY, ServerConfig, api_url, database_url, server_env
from seti_auditor import modeldir


def test_server_env_points_the_ui_at_its_api_and_picks_the_database():
    cfg = ServerConfig(port=4321)
    env = server_env(cfg, {"PREFECT_API_URL": "http://elsewhere/api", DB_ENV_LEGACY: "postgresql+asyncpg://u:pw@db/p"})
    assert env["PREFECT_SERVER_UI_API_URL"] == api_url(cfg) == "http://127.0.0.1:4321/api"
    assert "PREFECT_API_URL" not in env  # the server is the API
    assert env[DB_ENV] == "postgresql+asyncpg://u:pw@db/p" and DB_ENV_LEGACY not in env
    assert database_url(ServerConfig(database_url="sqlite+aiosqlite:///x.db"), {DB_ENV: "postgresql+asyncpg://h/p"}) \
        == "sqlite+aiosqlite:///x.db"  # the argument wins over the environment
    assert database_url(cfg, {}) is None and DB_ENV not in server_env(cfg, {})  # SQLite in PREFECT_HOME
    with pytest.raises(ValueError, match="async driver"):
        database_url(ServerConfig(database_url="postgresql://h/p"), {})


def test_ui_knows_its_api_on_any_port(prefect_server):
    base = prefect_server.removesuffix("/api")
    assert not base.endswith(":4200")
    with urllib.request.urlopen(f"{base}/ui-settings", timeout=10) as resp:
        assert json.load(resp)["api_url"] == prefect_server


def test_demo_runs_and_artifacts_are_on_the_server(ui_demo):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas import filters as f

    work = ui_demo["work"]
    version = modeldir.read_meta(work)["model_version"]
    with get_client(sync_client=True) as client:
        (parent,) = client.read_flow_runs(flow_run_filter=f.FlowRunFilter(
            name=f.FlowRunFilterName(any_=[f"run archive into {work.name} (reuse model)"])))
        subflows = client.read_flow_runs(flow_run_filter=f.FlowRunFilter(
            parent_flow_run_id=f.FlowRunFilterParentFlowRunId(any_=[parent.id])))
        runs = [parent, *subflows]
        tasks = client.read_task_runs(flow_run_filter=f.FlowRunFilter(id=f.FlowRunFilterId(any_=[r.id for r in runs])))
        artifacts = client.read_artifacts(artifact_filter=f.ArtifactFilter(
            flow_run_id=f.ArtifactFilterFlowRunId(any_=[r.id for r in runs])))

    assert all(r.state.is_completed() for r in runs), [(r.name, r.state.name) for r in runs]
    assert sorted(r.name for r in subflows) == [f"ingest archive into {work.name}",
                                                 f"score {work.name} with model {version}",
                                                 f"train default VAE on {work.name} (3 epochs)"]
    names = [t.name for t in tasks]
    files = sorted(p.name for p in (work / "archive").glob("*.fil")) + sorted(
        p.name for p in (work / "archive").glob("*.h5"))
    # task runs name their observation file, their region and the model version
    tiling = [n for n in names if n.startswith("tile ")]  # the demo's small files share one ingest task
    assert tiling and all(n.split(" frequency tiles ")[0].removeprefix("tile ") in files for n in tiling), tiling
    more = [re.search(r"\(\+(\d+) more regions? of (\d+) files?\)", n) for n in tiling]
    assert sum(1 + int(m.group(1)) if m else 1 for m in more) == len(files)  # one region per demo file
    assert any(n.startswith("score blc") and f"with model {version}" in n for n in names), names
    assert all(t.state.is_completed() for t in tasks)

    by_key = {a.key: a for a in artifacts if a.key}
    assert by_key["candidates"].type == "table" and json.loads(by_key["candidates"].data)  # the catalog's top rows
    assert f"model `{version}`" in by_key["score-summary"].data
    assert by_key["candidate-plot-0"].data.startswith("![") and "data:image/png;base64," in by_key["candidate-plot-0"].data
    assert by_key["train-loss-curve"].type == "markdown"
    for key in ("ingest-progress", "train-progress", "score-progress"):
        assert by_key[key].type == "progress" and float(by_key[key].data) == 100.0
    # and the terminal showed the progress bars
    assert "[####################]" in ui_demo["stdout"] and "regions scored (100%)" in ui_demo["stdout"]
