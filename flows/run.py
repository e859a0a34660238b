"""The parent flow: ingest -> train (when needed) -> score, as subflows on one Dask cluster."""

from __future__ import annotations

import dataclasses

from prefect import flow, get_run_logger

from flows.ingest import IngestSummary, ingest_flow
from flows.score import ScoreSummary, score_flow
from flows.train import train_flow
from infra.runtime import task_runner
from seti_auditor import modeldir, tilestore
from seti_auditor import workdir as wd
from seti_auditor.score_archive import ScoreJob
from seti_auditor.tiling import TilingConfig
from seti_auditor.training import TrainJob, TrainReport

MODEL_POLICIES = ("reuse", "retrain")


@dataclasses.dataclass(frozen=True)
class RunSummary:
    """What a pipeline run did."""

    ingest: IngestSummary  # files tiled and rejected
    train: TrainReport | None  # None when the current model was reused
    score: ScoreSummary | None  # None when nothing could be ingested


def needs_training(workdir: str, policy: str) -> bool:
    """Train when asked to, when there is no model, or when the model's tile shape differs."""
    if policy not in MODEL_POLICIES:
        raise ValueError(f"model policy {policy!r}; expected one of {MODEL_POLICIES}")
    if policy == "retrain" or not modeldir.has_model(workdir):
        return True
    tiling = tilestore.read_tiling_config(tilestore.store_path(workdir))
    return tuple(modeldir.read_meta(workdir)["config"]["tile"]) != (tiling.tile_time, tiling.tile_freq)


@flow(name="run", flow_run_name="run {archive_dir}", validate_parameters=False)
def run_flow(archive_dir: str, workdir: str, tiling: TilingConfig | None = None, train: TrainJob | None = None,
             score: ScoreJob | None = None, model_policy: str = "reuse", cadence_table: str | None = None,
             dask_address: str | None = None) -> RunSummary:
    """Ingest new files, train the auditor if needed, score the archive and write the catalog."""
    logger = get_run_logger()
    with wd.locked(workdir):
        ingested = ingest_flow.with_options(task_runner=task_runner(dask_address))(
            archive_dir, workdir, tiling=tiling, cadence_table=cadence_table)
        if not ingested.ok or ingested.n_tiles == 0:
            logger.error("nothing could be ingested from %s", archive_dir)
            return RunSummary(ingested, None, None)
        report = None
        if needs_training(workdir, model_policy):
            report = train_flow.with_options(task_runner=task_runner(dask_address))(workdir, train)
        scored = score_flow.with_options(task_runner=task_runner(dask_address))(workdir, score)
    return RunSummary(ingested, report, scored)
