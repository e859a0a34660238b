"""Prefect task of the train flow: a thin wrapper of :func:`seti_auditor.training.train_model`."""

from __future__ import annotations

import time

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact

from seti_auditor.training import TrainJob, TrainReport, train_model


PROGRESS_EVERY_S = 2.0  # the training progress artifact moves at most this often (seconds)


@task(name="train-vae", retries=1, retry_delay_seconds=5, task_run_name="train {job.preset} VAE")
def train_vae(workdir: str, job: TrainJob) -> TrainReport:
    """Train (resuming from the last checkpoint on a retry), calibrate and publish the model."""
    logger = get_run_logger()
    progress = create_progress_artifact(0.0, key="train-progress", description="training epochs done (%)")
    last = [time.monotonic()]

    def on_epoch(epoch: int, metrics: dict) -> None:
        logger.info("epoch %d/%d: loss %.4g (recon %.4g, kl %.4g), %.0f tiles/s", epoch + 1, job.epochs,
                    metrics["loss"], metrics["recon"], metrics["kl"], metrics["tiles_per_s"])
        # at most one API call per PROGRESS_EVERY_S (short epochs would wait on the API), and the last epoch
        if time.monotonic() - last[0] >= PROGRESS_EVERY_S or epoch + 1 >= job.epochs:
            last[0] = time.monotonic()
            update_progress_artifact(progress, 100.0 * (epoch + 1) / max(job.epochs, 1))

    return train_model(workdir, job, on_epoch=on_epoch)
