"""The pipeline on a real Dask cluster: a ``dask scheduler`` and two ``dask worker`` processes on
loopback, reporting to the session's real Prefect server.

``seti-auditor run ARCHIVE --dask-address ...`` runs in a subprocess, as a user would run it.
The scheduler's task stream then says which worker ran each task: every task ran on one of
the two workers (the CLI's own process ran none), both took work, and the training task
went to the worker that advertises the resource it asks for (``GPU=1`` here, an abstract
resource: no GPU is needed). The catalog must equal that of a local run with the same
settings: to stay within the test budget, the local run reuses the cluster run's tiles and
model (a copy of its work directory without scores, catalog and plots) and runs the score
flow in this process on a local cluster of thread workers, with the configuration the CLI
builds for ``seti-auditor score``. (A full local ``seti-auditor run`` of the same archive
gave the same catalog when this test was written, at about twice the cost; and
``benchmarks/overhead.py`` checks that the CLI and the bare functions give identical catalogs.)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = "3"
TASKS = ("inspect_files", "tile_regions", "train_vae", "score_region")  # must all run on the cluster


def _env(**extra: str) -> dict:
    """The session's environment (PREFECT_API_URL, PREFECT_HOME) with the repository importable."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PREFECT_SERVER_ANALYTICS_ENABLED": "false", **extra}


def _cli(*args: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, f"seti-auditor {' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}"
    return proc


@pytest.fixture(scope="module")
def dask_cluster_on_loopback(tmp_path_factory, prefect_server):
    """A scheduler and two single-threaded workers (one advertising GPU=1), as separate processes."""
    from distributed import Client

    root = tmp_path_factory.mktemp("dask-cluster")
    scheduler_file = root / "scheduler.json"
    env = _env()
    assert env["PREFECT_API_URL"] == prefect_server  # the workers report task runs there
    logs, procs = [], []

    def start(name: str, *args: str) -> None:
        log = open(root / f"{name}.log", "wb")
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", *args], cwd=root, env=env, stdout=log,
                                      stderr=subprocess.STDOUT))

    try:
        start("scheduler", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", "0",
              "--no-dashboard", "--scheduler-file", str(scheduler_file))
        deadline = time.monotonic() + 120
        while not scheduler_file.exists():
            assert procs[0].poll() is None, (root / "scheduler.log").read_text()
            assert time.monotonic() < deadline, "the scheduler did not write its address"
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        for name, extra in (("gpu-worker", ["--resources", "GPU=1"]), ("cpu-worker", [])):
            start(name, "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-dashboard", "--name", name,
                  "--host", "127.0.0.1", *extra)
        with Client(address, timeout=60) as client:
            client.wait_for_workers(2, timeout=120)
            client.get_task_stream()  # the scheduler records every task from now on
            yield {"address": address, "client": client, "root": root}
    finally:
        from infra.server import stop_process

        for p in reversed(procs):
            stop_process(p)
        for log in logs:
            log.close()


@pytest.fixture(scope="module")
def runs(dask_cluster_on_loopback, thread_runner):
    """A tiny archive through the external cluster; its tiles and model scored again locally."""
    from seti_auditor.archive import write_synthetic_archive

    cluster = dask_cluster_on_loopback
    root = cluster["root"]
    archive = root / "archive"
    write_synthetic_archive(archive, cadences=1, seed=5)
    workers = {w["name"]: addr for addr, w in
               cluster["client"].scheduler_info(n_workers=-1)["workers"].items()}
    t0 = time.time()
    remote = _cli("run", str(archive), "--workdir", str(root / "w-cluster"), "--epochs", EPOCHS,
                  "--dask-address", cluster["address"], cwd=root,
                  env=_env(DASK_SETI_AUDITOR__TRAIN_RESOURCES='{"GPU": 1}'))
    stream = cluster["client"].get_task_stream(start=t0 - 1)
    shutil.copytree(root / "w-cluster", root / "w-local", symlinks=True,
                    ignore=shutil.ignore_patterns("scores.zarr", "catalog.zarr", "plots", ".lock"))
    from flows.cli import _score_job, build_parser
    from flows.score import score_flow

    args = build_parser().parse_args(["score", "--workdir", str(root / "w-local")])
    local = score_flow.with_options(task_runner=thread_runner())(args.workdir, _score_job(args))
    return {"root": root, "stream": stream, "workers": workers, "remote": remote, "local": local}


def test_the_work_ran_on_the_external_workers(runs):
    ran = Counter((rec["key"].rsplit("-", 1)[0], rec["worker"]) for rec in runs["stream"])
    names = {name for name, _ in ran}
    assert set(TASKS) <= names, f"tasks seen by the scheduler: {sorted(names)}"
    ours = set(runs["workers"].values())
    assert {worker for _, worker in ran} <= ours
    by_worker = Counter()
    for (name, worker), n in ran.items():
        by_worker[worker] += n
    assert set(by_worker) == ours, f"one worker took no task: {dict(by_worker)}"
    # the training task asked for GPU=1: only the worker advertising it may run it
    train = [worker for (name, worker) in ran if name == "train_vae"]
    assert train == [runs["workers"]["gpu-worker"]]
    # as many regions scored as the score flow planned (one task per region, none lost)
    tiles = xr.open_zarr(str(runs["root"] / "w-cluster" / "tiles.zarr"), consolidated=False)
    scored = sum(n for (name, _), n in ran.items() if name == "score_region")
    from seti_auditor.score_archive import ScoreJob, plan_regions

    chunk = tiles["tiles"].encoding["chunks"][0]
    assert scored == len(plan_regions(tiles.sizes["tile"], chunk, ScoreJob().tiles_per_task))


def test_the_catalog_equals_a_local_run(runs):
    remote = xr.open_zarr(str(runs["root"] / "w-cluster" / "catalog.zarr"), consolidated=False).load()
    local = xr.open_zarr(str(runs["root"] / "w-local" / "catalog.zarr"), consolidated=False).load()
    assert remote.sizes["candidate"] > 0  # the archive's strong signals are found
    assert runs["local"].n_candidates == remote.sizes["candidate"]
    assert remote.attrs["run_id"] != local.attrs["run_id"]  # two runs
    assert sorted(remote.data_vars) == sorted(local.data_vars)
    for name in remote.data_vars:
        a, b = remote[name].values, local[name].values
        if a.dtype.kind == "f":
            np.testing.assert_array_equal(a, b, err_msg=name)
        else:
            assert (a == b).all(), name
    for group in ("rfi", "rejected"):
        r = xr.open_zarr(str(runs["root"] / "w-cluster" / "catalog.zarr"), group=group, consolidated=False).load()
        loc = xr.open_zarr(str(runs["root"] / "w-local" / "catalog.zarr"), group=group, consolidated=False).load()
        assert r.drop_attrs().equals(loc.drop_attrs()), group
