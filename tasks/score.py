"""Prefect tasks of the score flow: thin wrappers of :mod:`seti_auditor.score_archive` and plots."""

from __future__ import annotations

import pandas as pd
from prefect import task

from seti_auditor import score_archive
from seti_auditor.plots import candidate_plot


@task(name="score-region", retries=2, retry_delay_seconds=2,
      task_run_name="score tiles {start}-{stop} with {version}")
def score_region(workdir: str, start: int, stop: int, job: score_archive.ScoreJob, version: str) -> dict:
    """Score one chunk-aligned region of tiles.zarr into the same region of scores.zarr."""
    return score_archive.score_region(workdir, start, stop, job, version)


@task(name="plot-candidate", retries=1, task_run_name="plot {name}")
def plot_candidate(workdir: str, candidate: dict, out_dir: str, name: str = "") -> str:
    """The ON/OFF stack PNG of one candidate."""
    return str(candidate_plot(workdir, pd.Series(candidate), out_dir))
