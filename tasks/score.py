"""Prefect tasks of the score flow: thin wrappers of :mod:`seti_auditor.score_archive` and plots."""

from __future__ import annotations

import base64
from pathlib import Path

import pandas as pd
from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from seti_auditor import score_archive
from seti_auditor.drift import DriftConfig, noise_drift
from seti_auditor.plots import candidate_plots
from tasks.retries import retry_unless_disk_refuses


# not cached by Prefect: a region's result is its rows of scores.zarr, written idempotently (the same
# chunk-aligned region, the ``scored`` marker last); a rerun skips scored regions and reads their p-values back
@task(name="score-region", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE,
      task_run_name="score {files} tiles {start}-{stop} with model {version}", retry_condition_fn=retry_unless_disk_refuses)
def score_region(workdir: str, start: int, stop: int, job: score_archive.ScoreJob, version: str,
                 files: str = "") -> dict:
    """Score one chunk-aligned region of tiles.zarr into the same region of scores.zarr (``files``: for the name)."""
    return score_archive.score_region(workdir, start, stop, job, version)


def _plots_name(parameters: dict) -> str:
    """``plot N candidates of model V``: the task run's name in the UI."""
    n = len(parameters["candidates"])
    return f"plot {n} candidate{'s' if n != 1 else ''} of model {parameters['version']}"


@task(name="plot-candidates", retries=1, cache_policy=NO_CACHE, task_run_name=_plots_name)
def plot_candidates(workdir: str, candidates: list[dict], out_dir: str, version: str = "", first: int = 0) -> list[str]:
    """The ON/OFF stack PNGs of some of the top candidates (the store's coordinates read once per task), each
    also an image artifact of the run, ``candidate-plot-N`` (``first``: the N of the first). Made here, each task's
    uploads overlap the other tasks' drawing instead of queueing at the end of the flow."""
    paths = [str(p) for p in candidate_plots(workdir, candidates, out_dir)]
    for i, path in enumerate(paths, start=first):
        png = base64.b64encode(Path(path).read_bytes()).decode()
        create_markdown_artifact(f"![{Path(path).name}](data:image/png;base64,{png})", key=f"candidate-plot-{i}",
                                 description=Path(path).name)
    return paths


@task(name="follow-lines", retries=1, cache_policy=NO_CACHE, task_run_name="follow lines in cadence {cadence_id}")
def follow_lines(workdir: str, version: str, cadence_id: str, rows: pd.DataFrame, seeds: pd.DataFrame, m_tests: int,
                 n_seeds: int, job: score_archive.ScoreJob) -> pd.DataFrame:
    """The cadence line search in one cadence: its seeds followed through its scans."""
    return score_archive.follow_lines(workdir, version, rows, seeds, m_tests, n_seeds, job)


@task(name="joint-search", retries=1, cache_policy=NO_CACHE, task_run_name="joint line searches in cadence {cadence_id}")
def search_joint(workdir: str, version: str, cadence_id: str, rows: pd.DataFrame, job: score_archive.ScoreJob) -> dict:
    """The joint line searches (fast, slow) in one cadence: per search, its ON and OFF triplets' peaks, trials
    and tail counts."""
    return score_archive.search_joint(workdir, version, rows, job)


@task(name="check-noise-drift", retries=1, cache_policy=NO_CACHE,
      task_run_name="check the noise of {n_files} new file(s) against model {version}")
def check_noise_drift(workdir: str, file_ids: list[int], cfg: DriftConfig, version: str, n_files: int = 0) -> dict:
    """Reconstruction errors of new OFF-source tiles against the model's null (``version``, ``n_files``: the name)."""
    null, new = score_archive.new_noise_sample(workdir, file_ids, cfg)
    return noise_drift(null, new, cfg).to_dict()
