"""A Dask worker process SIGKILLed while the score flow runs on a real scheduler."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import numpy as np

from seti_auditor import catalog, scorestore
from tests.faults.support import (JOB, REPO, assert_same_arrays, assert_same_catalog, chunk_mtimes, copy_workdir,
                                  read_every_chunk)


def _start_cluster(tmp_path, n_workers: int = 2):
    """``dask scheduler`` and ``dask worker`` processes on loopback; (address, processes)."""
    sched_file = tmp_path / "scheduler.json"
    log = open(tmp_path / "dask.log", "ab")
    procs = [subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                               "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
                               str(sched_file)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)]
    deadline = time.monotonic() + 120
    while not sched_file.exists():
        assert time.monotonic() < deadline and procs[0].poll() is None, "the scheduler did not start"
        time.sleep(0.1)
    for _ in range(n_workers):
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file", str(sched_file),
             "--nthreads", "1", "--no-nanny", "--host", "127.0.0.1", "--dashboard-address", "127.0.0.1:0"],
            cwd=REPO, stdout=log, stderr=subprocess.STDOUT))
    from distributed import Client

    client = Client(scheduler_file=str(sched_file), timeout=120)
    client.wait_for_workers(n_workers, timeout=120)
    return client, procs


def test_worker_killed_mid_scoring(tmp_path, trained):
    """Injects: SIGKILL of one of two Dask worker processes (no nanny to restart it) while it runs a score
    task, once the first region of 24 is in scores.zarr.

    Must hold: the score flow completes on the surviving worker; every tile's row is scored
    (``scored`` all true), the score store equals a clean run's row for row (no region lost or
    written twice with other values), and the catalog equals the clean run's with no duplicate row.
    """
    from prefect_dask import DaskTaskRunner

    from flows.score import score_flow

    work, clean = copy_workdir(trained.unscored, tmp_path / "work"), trained.scored

    client, procs = _start_cluster(tmp_path)
    try:
        outcome: dict = {}

        def score() -> None:
            try:
                dask_runner = DaskTaskRunner(address=client.scheduler.address)
                outcome["summary"] = score_flow.with_options(task_runner=dask_runner)(str(work), JOB)
            except BaseException as exc:  # noqa: BLE001 - reported by the test below
                outcome["error"] = exc

        pids = client.run(os.getpid)  # worker address -> process id
        runner = threading.Thread(target=score)
        runner.start()
        scored = work / "scores.zarr" / "scored"
        deadline = time.monotonic() + 300
        victim = None
        while victim is None:
            assert runner.is_alive(), f"scoring ended before a worker could be killed: {outcome}"
            assert time.monotonic() < deadline, "no region was scored in time"
            if chunk_mtimes(scored):
                busy = [addr for addr, keys in client.processing().items() if keys]
                if busy:
                    victim = pids[busy[0]]
                    break
            time.sleep(0.01)
        n_done = len(chunk_mtimes(scored))
        os.kill(victim, signal.SIGKILL)
        runner.join(timeout=600)
        assert not runner.is_alive() and "error" not in outcome, outcome
        assert n_done < 24, "killed too late: every region was already scored"
        assert len(client.scheduler_info()["workers"]) == 1  # the victim is gone for good
    finally:
        client.close()
        for proc in procs:
            proc.kill()
            proc.wait()

    scores = read_every_chunk(scorestore.store_path(work))
    assert scores["scored"].all()
    assert_same_arrays(scores, read_every_chunk(scorestore.store_path(clean)))
    assert_same_catalog(work, clean)
    cands = catalog.open_catalog(work).to_dataframe()
    assert not cands.duplicated(["source_file", "tile_first", "tile_last", "peak_freq_mhz"]).any()
    assert np.array_equal(np.sort(cands.tile_first.to_numpy()), np.sort(catalog.open_catalog(clean).tile_first.values))
