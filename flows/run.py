"""The parent flow: ingest -> train (when needed) -> score, as subflows on one Dask cluster."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run

from flows.ingest import IngestSummary, ingest_flow
from flows.score import ScoreSummary, score_flow
from flows.train import train_flow
from infra.runtime import task_runner
from seti_auditor import catalog, modeldir, score_archive, tilestore
from seti_auditor import workdir as wd
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


@flow(name="run", flow_run_name=_run_name, validate_parameters=False)
def run_flow(archive_dir: str, workdir: str, tiling: TilingConfig | None = None, train: TrainJob | None = None,
             score: ScoreJob | None = None, model_policy: str = "reuse", cadence_table: str | None = None,
             dask_address: str | None = None, drift: DriftConfig | None = None) -> RunSummary:
    """Ingest new files, train the auditor if needed (``model_policy``: reuse, retrain or auto, see
    :func:`decide_model`), score the new tiles (or, with a new model, the archive) and write the catalog."""
    logger = get_run_logger()
    with wd.locked(workdir):
        ingested = ingest_flow.with_options(task_runner=task_runner(dask_address))(
            archive_dir, workdir, tiling=tiling, cadence_table=cadence_table)
        if not ingested.ok or ingested.n_tiles == 0:
            logger.error("nothing could be ingested from %s", archive_dir)
            return RunSummary(ingested, None, None)
        drift = DriftConfig(**drift) if isinstance(drift, dict) else drift or DriftConfig()  # JSON from a deployment
        decision = decide_model(workdir, model_policy, drift)
        logger.info("model: %s (%s)", "train a new one" if decision["train"] else "keep the current one",
                    decision["reason"])
        create_markdown_artifact(f"# Model decision\n* policy: `{model_policy}`\n* "
                                 f"{'train a new model' if decision['train'] else 'keep the current model'}: "
                                 f"{decision['reason']}", key="model-decision", description="train or reuse")
        report = None
        if decision["train"]:
            report = train_flow.with_options(task_runner=task_runner(dask_address))(workdir, train)
        scored = score_flow.with_options(task_runner=task_runner(dask_address))(workdir, score)
    return RunSummary(ingested, report, scored, decision)
