"""Prefect tasks of the score flow: thin wrappers of :mod:`seti_auditor.score_archive` and plots."""

from __future__ import annotations

import pandas as pd
from prefect import task
from prefect.cache_policies import NO_CACHE

from seti_auditor import score_archive
from seti_auditor.drift import DriftConfig, noise_drift
from seti_auditor.plots import candidate_plot


# not cached by Prefect: a region's result is its rows of scores.zarr, written idempotently (the same
# chunk-aligned region, the ``scored`` marker last); a rerun skips scored regions and reads their p-values back
@task(name="score-region", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE,
      task_run_name="score {files} tiles {start}-{stop} with model {version}")
def score_region(workdir: str, start: int, stop: int, job: score_archive.ScoreJob, version: str,
                 files: str = "") -> dict:
    """Score one chunk-aligned region of tiles.zarr into the same region of scores.zarr (``files``: for the name)."""
    return score_archive.score_region(workdir, start, stop, job, version)


@task(name="plot-candidate", retries=1, task_run_name="plot {name}")
def plot_candidate(workdir: str, candidate: dict, out_dir: str, name: str = "") -> str:
    """The ON/OFF stack PNG of one candidate."""
    return str(candidate_plot(workdir, pd.Series(candidate), out_dir))


@task(name="follow-lines", retries=1, cache_policy=NO_CACHE, task_run_name="follow lines in cadence {cadence_id}")
def follow_lines(workdir: str, version: str, cadence_id: str, rows: pd.DataFrame, seeds: pd.DataFrame, m_tests: int,
                 n_seeds: int, job: score_archive.ScoreJob) -> pd.DataFrame:
    """The cadence line search in one cadence: its seeds followed through its scans."""
    return score_archive.follow_lines(workdir, version, rows, seeds, m_tests, n_seeds, job)


@task(name="check-noise-drift", retries=1, cache_policy=NO_CACHE,
      task_run_name="check the noise of {n_files} new file(s) against model {version}")
def check_noise_drift(workdir: str, file_ids: list[int], cfg: DriftConfig, version: str, n_files: int = 0) -> dict:
    """Reconstruction errors of new OFF-source tiles against the model's null (``version``, ``n_files``: the name)."""
    null, new = score_archive.new_noise_sample(workdir, file_ids, cfg)
    return noise_drift(null, new, cfg).to_dict()
