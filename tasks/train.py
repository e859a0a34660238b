"""Prefect task of the train flow: a thin wrapper of :func:`seti_auditor.training.train_model`."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from seti_auditor.training import TrainJob, TrainReport, train_model


@task(name="train-vae", retries=1, retry_delay_seconds=5, task_run_name="train {job.preset} VAE")
def train_vae(workdir: str, job: TrainJob) -> TrainReport:
    """Train (resuming from the last checkpoint on a retry), calibrate and publish the model."""
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, key="train-progress", description="training epochs done (%)")

    def on_epoch(epoch: int, metrics: dict) -> None:
        logger.info("epoch %d/%d: loss %.4g (recon %.4g, kl %.4g), %.0f tiles/s", epoch + 1, job.epochs,
                    metrics["loss"], metrics["recon"], metrics["kl"], metrics["tiles_per_s"])
        update_progress_artifact(progress, 100.0 * (epoch + 1) / max(job.epochs, 1))

    return train_model(workdir, job, on_epoch=on_epoch)
