"""``infra/prefect.yaml`` for real: create the process work pool, deploy every deployment with
``prefect deploy``, and run the nightly deployment through ``prefect worker start --run-once`` on a
tiny archive, with JSON settings overrides, on the Dask cluster its ``cluster_config`` builds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from seti_auditor import catalog, modeldir
from seti_auditor.archive import write_synthetic_archive
from seti_auditor.score_archive import ScoreJob
from seti_auditor.synth import ObsConfig, SynthConfig

REPO = Path(__file__).resolve().parents[1]
POOL = "seti-auditor-process"
TASKS = ("inspect_files", "train_vae")  # task names that must show on the Dask workers (besides tiling, scoring)


def _run(args: list[str], cwd: Path, timeout: float) -> str:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def test_nightly_deployment_runs_on_dask_with_json_overrides(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.workers.process import ProcessWorker

    archive, work = tmp_path / "archive", tmp_path / "work"
    write_synthetic_archive(archive, cadences=1, seed=5, config=SynthConfig(obs=ObsConfig(n_coarse=1)))  # 96 tiles

    # the pool as `prefect work-pool create POOL --type process` makes it (through the API: one CLI start less)
    with get_client(sync_client=True) as client:
        client.create_work_pool(WorkPoolCreate(name=POOL, type="process",
                                               base_job_template=ProcessWorker.get_default_base_job_template()),
                                overwrite=True)
    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    _run(prefect + ["deploy", "--all", "--prefect-file", "infra/prefect.yaml"], REPO, 180)

    # partial JSON objects laid over the defaults. To keep the test short: the article's MSE score (no line
    # search to compile, in training's calibration or in scoring: ~20 s here) and no candidate plots (~15 s)
    overrides = {"train": {"epochs": 2, "score": {"score": "mse"}},
                 "score": {"score": {"score": "mse"}, "thresholds": {"q": 0.02, "tail": "exponential"}, "n_plots": 0}}
    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("run/nightly-reprocess")
        train = client.read_deployment_by_name("train/train-on-demand")
        client.pause_deployment(nightly.id)  # its cron must not hand this worker a run; manual runs still go
        run = client.create_flow_run_from_deployment(
            nightly.id, parameters={"archive_dir": str(archive), "workdir": str(work), **overrides})
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"] and not train.schedules
    assert set(nightly.parameters) == {"archive_dir", "workdir", "model_policy", "cluster_config"}
    assert nightly.parameters["cluster_config"] == "infra/clusters/local.yaml"  # Dask by default
    assert {nightly.work_pool_name, train.work_pool_name} == {POOL}
    assert train.entrypoint == "flows/train.py:train_flow" and set(train.parameters) == {"workdir"}
    # the pull step returns to the directory `prefect deploy` ran in (the worker below runs elsewhere)
    assert nightly.pull_steps == train.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]

    log = _run(prefect + ["worker", "start", "--pool", POOL, "--run-once"], tmp_path, 480)

    with get_client(sync_client=True) as client:
        done = client.read_flow_run(run.id)
        artifacts = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))}
    assert done.state.is_completed(), f"{done.state}\n{log[-3000:]}"
    assert done.parameters["train"] == overrides["train"]

    # the overrides took effect, laid over the defaults: 2 epochs, MSE, BH at q = 0.02, no plots, the rest as is
    meta = modeldir.read_meta(work)
    assert meta["extra"]["train_config"]["epochs"] == 2 and len(meta["extra"]["history"]) == 2
    assert meta["extra"]["score_config"]["score"] == "mse"
    job = catalog.open_catalog(work).attrs["score_job"]
    assert job["score"]["score"] == "mse" and job["score"]["max_drift"] == ScoreJob().score.max_drift
    assert job["thresholds"]["q"] == 0.02 and job["thresholds"]["method"] == ScoreJob().thresholds.method
    assert job["cadence"]["min_on_scans"] == ScoreJob().cadence.min_on_scans and job["n_plots"] == 0
    assert not (work / "plots").exists() or not any((work / "plots").rglob("*.png"))

    # the tasks ran on the run's Dask cluster: worker processes other than the flow's
    rows = json.loads(artifacts["dask-tasks"].data)
    assert rows and not any(r["flow_process"] for r in rows)
    names = {r["task"] for r in rows}
    assert set(TASKS) <= names, names
    assert any(n.startswith("tile_region") for n in names) and any(n.startswith("score_region") for n in names)
    assert {r["worker"].split("://")[0] for r in rows} == {"tcp"}
