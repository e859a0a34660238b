"""``infra/prefect.yaml`` for real: create the process work pool, deploy every deployment with
``prefect deploy``, and run the train deployment through ``prefect worker start --run-once``."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from seti_auditor import modeldir
from seti_auditor.archive import write_synthetic_archive
from seti_auditor.synth import ObsConfig, SynthConfig

REPO = Path(__file__).resolve().parents[1]
POOL = "seti-auditor-process"


def _run(args: list[str], cwd: Path, timeout: float) -> str:
    out = subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(args)} exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def test_train_deployment_runs_on_a_process_worker(prefect_server, tmp_path):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    from flows.ingest import ingest_flow

    archive, work = tmp_path / "archive", tmp_path / "work"
    write_synthetic_archive(archive, cadences=1, seed=5, config=SynthConfig(obs=ObsConfig(n_coarse=2)))
    assert ingest_flow(str(archive), str(work)).n_tiles > 0  # the train deployment needs tiles.zarr

    prefect = [sys.executable, "-m", "prefect", "--no-prompt"]
    _run(prefect + ["work-pool", "create", POOL, "--type", "process", "--overwrite"], REPO, 120)
    _run(prefect + ["deploy", "--all", "--prefect-file", "infra/prefect.yaml"], REPO, 180)

    with get_client(sync_client=True) as client:
        nightly = client.read_deployment_by_name("run/nightly-reprocess")
        train = client.read_deployment_by_name("train/train-on-demand")
        client.pause_deployment(nightly.id)  # its cron must not hand this worker a run
        run = client.create_flow_run_from_deployment(train.id, parameters={"workdir": str(work), "job": {"epochs": 2}})
    assert [s.schedule.cron for s in nightly.schedules] == ["0 2 * * *"] and not train.schedules
    assert set(nightly.parameters) == {"archive_dir", "workdir", "model_policy"}
    assert {nightly.work_pool_name, train.work_pool_name} == {POOL}
    # the pull step returns to the directory `prefect deploy` ran in (the worker below runs elsewhere)
    assert train.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}]

    log = _run(prefect + ["worker", "start", "--pool", POOL, "--run-once"], tmp_path, 300)

    with get_client(sync_client=True) as client:
        done = client.read_flow_run(run.id)
        artifacts = {a.key: a for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))}
    assert done.state.is_completed(), f"{done.state}\n{log[-3000:]}"
    assert done.name == "train default VAE on work (2 epochs)"
    assert modeldir.has_model(work)
    version = modeldir.read_meta(work)["model_version"]
    assert version in artifacts["train-summary"].data
    assert [row["epoch"] for row in json.loads(artifacts["train-loss"].data)] == [0, 1]  # the overridden job
