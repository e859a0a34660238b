"""The parent flow: ingest -> train (when needed) -> score, as subflows on one Dask cluster."""

from __future__ import annotations

import contextlib
import dataclasses
import os
import time
from collections import Counter
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.ingest import IngestSummary, ingest_flow
from flows.score import ScoreSummary, score_flow
from flows.train import train_flow
from infra.clusters import load_cluster_spec
from infra.runtime import ClusterConfig, dask_cluster, task_runner
from seti_auditor import catalog, modeldir, score_archive, tilestore
from seti_auditor import workdir as wd
from seti_auditor.configs import from_json
from seti_auditor.drift import DriftConfig
from seti_auditor.score_archive import ScoreJob
from seti_auditor.tiling import TilingConfig
from seti_auditor.training import TrainJob, TrainReport
from tasks.score import check_noise_drift

MODEL_POLICIES = ("reuse", "retrain", "auto")


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a pipeline run did."""

    ingest: IngestSummary  # files tiled and rejected
    train: TrainReport | None  # None when the current model was reused
    score: ScoreSummary | None  # None when nothing could be ingested
    model_decision: dict | None = None  # train or reuse, why, and the drift check under "auto" (decide_model)
    dask: dict | None = None  # the Dask cluster's work (dask_record); None on Prefect's thread pool


def needs_training(workdir: str, policy: str) -> bool:
    """Train when asked to, when there is no model, or when the model's tile shape differs.

    ``"auto"`` answers here as ``"reuse"`` does; its drift check is :func:`decide_model`.
    """
    if policy not in MODEL_POLICIES:
        raise ValueError(f"model policy {policy!r}; expected one of {MODEL_POLICIES}")
    if policy == "retrain" or not modeldir.has_model(workdir):
        return True
    tiling = tilestore.read_tiling_config(tilestore.store_path(workdir))
    return tuple(modeldir.read_meta(workdir)["config"]["tile"]) != (tiling.tile_time, tiling.tile_freq)


def decide_model(workdir: str, policy: str, drift: DriftConfig) -> dict:
    """Train a new model, or keep the current one? ``{"train", "policy", "reason"[, "drift"]}``.

    ``reuse`` keeps the model (training only when there is none, or its tile shape differs),
    ``retrain`` always trains, ``auto`` keeps it unless the noise of the files its catalog
    version does not cover yet has drifted beyond ``drift.max_shift_sigma``
    (:mod:`seti_auditor.drift`: a median shift of the reconstruction error of new OFF-source
    tiles, in robust sigmas of the model's calibration sample).
    """
    if needs_training(workdir, policy):
        why = ("asked (model policy retrain)" if policy == "retrain" else
               "no model yet" if not modeldir.has_model(workdir) else "the model's tile shape differs from the store's")
        return {"train": True, "policy": policy, "reason": why}
    if policy == "reuse":
        return {"train": False, "policy": policy, "reason": "model policy reuse"}
    version = modeldir.read_meta(workdir)["model_version"]
    prior = catalog.version_attrs(workdir, version) if version in catalog.list_versions(workdir) else None
    new = score_archive.uncovered_files(tilestore.load_manifest(tilestore.store_path(workdir)), prior)
    if not new:
        return {"train": False, "policy": policy, "reason": f"no new files since model {version}'s catalog"}
    verdict = check_noise_drift.submit(workdir, new, drift, version, n_files=len(new)).result()
    return {"train": verdict["drifted"], "policy": policy, "reason": verdict["reason"], "drift": verdict}


def _run_name() -> str:
    """``run ARCHIVE into WORKDIR (POLICY model)``: the run's name in the UI."""
    params = flow_run.parameters
    return (f"run {Path(params['archive_dir']).name} into {Path(params['workdir']).name} "
            f"({params.get('model_policy', 'reuse')} model)")


@contextlib.contextmanager
def run_cluster(dask_address: str | None, cluster_config: str | None):
    """The Dask scheduler the run's subflows share, and a client that watches it; ``(None, None)`` without one.

    ``cluster_config`` (a spec file, :func:`infra.clusters.load_cluster_spec`) builds a cluster for the
    length of the block (:func:`infra.runtime.dask_cluster`); ``dask_address`` names a running scheduler
    (the CLI's, or any other); neither: Prefect's thread pool.
    """
    if dask_address and cluster_config:
        raise ValueError(f"give dask_address ({dask_address}) or cluster_config ({cluster_config}), not both")
    if not dask_address and not cluster_config:
        yield None, None
        return
    from distributed import Client

    with contextlib.ExitStack() as stack:
        address = dask_address or stack.enter_context(
            dask_cluster(ClusterConfig(spec=load_cluster_spec(cluster_config))))
        # a watcher only: not the default scheduler of the flow's own dask computations (set_as_default)
        client = stack.enter_context(Client(address, timeout=120, set_as_default=False))
        client.get_task_stream()  # the scheduler records the tasks from now on (dask_record)
        yield address, client


def dask_record(client, address: str, since: float) -> dict:
    """Which Dask worker (address, process id) ran how many tasks of each kind since ``since``.

    ``{"address", "flow_pid", "workers": {worker: {"pid", "tasks": {task name: count}}}}``; task names
    are the Dask key prefixes: the Prefect tasks' function names (``tile_regions``, ``train_vae``, ...), and
    those of any dask collection a task or the flow computed on the cluster (``finalize``, ...).
    """
    from distributed.utils import key_split

    pids = client.run(os.getpid)  # every worker's process id
    ran = Counter((key_split(rec["key"]), rec["worker"]) for rec in client.get_task_stream(start=since))
    workers = {w: {"pid": int(pid), "tasks": {}} for w, pid in pids.items()}
    for (name, worker), n in sorted(ran.items()):
        workers.setdefault(worker, {"pid": None, "tasks": {}})["tasks"][name] = n
    return {"address": address, "flow_pid": os.getpid(), "workers": workers}


def _report_dask(record: dict) -> None:
    """The ``dask-tasks`` table (``flow_process``: the worker is a thread of the flow's process) and a log line."""
    rows = [{"worker": w, "pid": info["pid"], "flow_process": info["pid"] == record["flow_pid"], "task": name,
             "runs": n} for w, info in record["workers"].items() for name, n in info["tasks"].items()]
    create_table_artifact(rows, key="dask-tasks", description=f"tasks per Dask worker ({record['address']})")
    get_run_logger().info("Dask cluster %s: %d tasks on %d workers", record["address"],
                          sum(r["runs"] for r in rows), len(record["workers"]))


@flow(name="run", flow_run_name=_run_name, validate_parameters=False)
def run_flow(archive_dir: str, workdir: str, tiling: TilingConfig | None = None, train: TrainJob | None = None,
             score: ScoreJob | None = None, model_policy: str = "reuse", cadence_table: str | None = None,
             dask_address: str | None = None, drift: DriftConfig | None = None,
             cluster_config: str | None = None) -> RunSummary:
    """Ingest new files, train the auditor if needed (``model_policy``: reuse, retrain or auto, see
    :func:`decide_model`), score the new tiles (or, with a new model, the archive) and write the catalog.

    The subflows' tasks run on the Dask scheduler at ``dask_address``, on a cluster built for this run
    from the spec file ``cluster_config`` (e.g. ``infra/clusters/local.yaml``), or, with neither, on
    Prefect's thread pool. ``tiling``, ``train``, ``score`` and ``drift`` are configs or (from a
    deployment) possibly partial JSON objects of their settings (:func:`seti_auditor.configs.from_json`).
    """
    tiling = from_json(TilingConfig, tiling, "tiling")  # JSON from a deployment, or a config
    train = from_json(TrainJob, train, "train")
    score = from_json(ScoreJob, score, "score")
    drift = from_json(DriftConfig, drift, "drift")
    logger = get_run_logger()
    with wd.locked(workdir), run_cluster(dask_address, cluster_config) as (address, client):
        since = time.time()
        ingested = ingest_flow.with_options(task_runner=task_runner(address))(
            archive_dir, workdir, tiling=tiling, cadence_table=cadence_table)
        if not ingested.ok or ingested.n_tiles == 0:
            logger.error("nothing could be ingested from %s", archive_dir)
            return RunSummary(ingested, None, None)
        decision = decide_model(workdir, model_policy, drift)
        logger.info("model: %s (%s)", "train a new one" if decision["train"] else "keep the current one",
                    decision["reason"])
        create_markdown_artifact(f"# Model decision\n* policy: `{model_policy}`\n* "
                                 f"{'train a new model' if decision['train'] else 'keep the current model'}: "
                                 f"{decision['reason']}", key="model-decision", description="train or reuse")
        report = None
        if decision["train"]:
            report = train_flow.with_options(task_runner=task_runner(address))(workdir, train)
        scored = score_flow.with_options(task_runner=task_runner(address))(workdir, score)
        record = dask_record(client, address, since) if client is not None else None
    if record is not None:
        _report_dask(record)
    return RunSummary(ingested, report, scored, decision, record)
