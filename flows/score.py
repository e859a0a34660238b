"""The score flow: tiles.zarr + the current model -> scores.zarr -> catalog.zarr + plots."""

from __future__ import annotations

import base64
import dataclasses
import json
import uuid
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_progress_artifact, create_table_artifact, \
    update_progress_artifact
from prefect.runtime import flow_run

from seti_auditor import __version__, catalog, modeldir, score_archive, scorestore, tilestore
from seti_auditor import workdir as wd
from seti_auditor.cadence_test import cadence_test
from tasks.score import plot_candidate, score_region

PLOTS = "plots"


@dataclasses.dataclass(frozen=True)
class ScoreSummary:
    """What a score run produced."""

    catalog: str  # path of catalog.zarr
    plots: list[str]  # candidate PNGs
    model_version: str  # the model that scored
    n_tiles: int  # valid tiles scored
    n_flagged: int  # (tile, sub-band) tests over the threshold
    n_candidates: int  # catalog rows
    n_rfi: int  # events recorded as RFI
    n_rejected: int  # events rejected by the cadence test
    candidates: pd.DataFrame  # the catalog rows (for printing)


@flow(name="score", flow_run_name="score {workdir}", validate_parameters=False)
def score_flow(workdir: str, job: score_archive.ScoreJob | None = None) -> ScoreSummary:
    """Score every tile with the current model, control false alarms, apply the cadence test."""
    job = job or score_archive.ScoreJob()
    with wd.locked(workdir):
        return _score(workdir, job)


def _score(workdir: str, job: score_archive.ScoreJob) -> ScoreSummary:
    logger = get_run_logger()
    meta = modeldir.read_meta(workdir)
    version = meta["model_version"]
    tiles_path = tilestore.store_path(workdir)
    tiling = tilestore.read_tiling_config(tiles_path)
    n = tilestore.n_tiles(tiles_path)
    scores_path = scorestore.store_path(workdir)
    fresh = scorestore.ensure_template(scores_path, n, tiling.chunk_tiles, job.score.subbands, version,
                                       score_archive.score_key(version, job),
                                       {"score_job": json.dumps(dataclasses.asdict(job)), "code_version": __version__})
    regions = score_archive.plan_regions(n, tiling.chunk_tiles, job.tiles_per_task)
    todo = [r for r in regions if fresh or not scorestore.scored_region(scores_path, *r)]
    logger.info("model %s: %d regions, %d to score", version, len(regions), len(todo))
    progress = create_progress_artifact(0.0, key="score-progress", description="regions scored (%)")
    futures = [score_region.submit(workdir, a, b, job, version) for a, b in todo]
    results = []
    for i, fut in enumerate(futures):
        results.append(fut.result())
        update_progress_artifact(progress, 100.0 * (i + 1) / len(futures))
    if len(todo) < len(regions):  # resumed: the p-values of earlier regions come from the store
        results = [score_archive.region_pvalues(workdir, a, b, job.q_report) for a, b in regions]
    fdr = score_archive.apply_fdr(workdir, results, job)

    table = score_archive.tile_table(workdir)
    candidates, rfi, rejected = (frame.assign(model_version=version) for frame in cadence_test(table, job.cadence))
    manifest = tilestore.load_manifest(tiles_path)
    run_id = str(flow_run.get_id() or uuid.uuid4())
    attrs = {
        "title": "seti-auditor candidate catalog",
        "code_version": __version__,
        "run_id": run_id,
        "score_job": dataclasses.asdict(job),
        "calibration": meta["extra"].get("calibrations", {}),
        "fdr": fdr,
        "model_config": meta["config"],
        "inputs": manifest[["name", "content_hash", "status", "reason"]].to_dict(orient="records"),
    }
    catalog.write_catalog(workdir, candidates, rfi, rejected, attrs=attrs, model_version=version)
    out_dir = Path(workdir) / PLOTS / version
    top = candidates.head(job.n_plots)
    plot_futures = [plot_candidate.submit(workdir, row.to_dict(), str(out_dir), name=f"{row.source_file} "
                                          f"{row.peak_freq_mhz:.6f} MHz") for _, row in top.iterrows()]
    plots = [f.result() for f in plot_futures]
    summary = ScoreSummary(catalog.store_path(workdir), plots, version, fdr["m"] // job.score.subbands, fdr["n_flagged"],
                           len(candidates), len(rfi), len(rejected), candidates)
    _report(summary, manifest, job)
    return summary


def _report(summary: ScoreSummary, manifest: pd.DataFrame, job: score_archive.ScoreJob) -> None:
    cols = ["source_file", "source_name", "cadence_id", "freq_min_mhz", "freq_max_mhz", "drift_hz_s",
            "score", "z_score", "p_value", "q_value", "n_on_scans", "cadence_test"]
    rows = summary.candidates[cols].head(50)
    create_table_artifact(
        [{k: (round(v, 8) if isinstance(v, float) else v) for k, v in r.items()} for r in rows.to_dict("records")],
        key="candidates", description="top candidates")
    n_rej = int((manifest.status == "rejected").sum())
    lines = [
        f"# Catalog `{summary.catalog}` (model `{summary.model_version}`)",
        f"* files: {int((manifest.status == 'ingested').sum())} ingested, {n_rej} rejected",
        f"* tiles scored: {summary.n_tiles}; flagged: {summary.n_flagged} "
        f"({job.thresholds.method}, q = {job.thresholds.q}, score = {job.score.score})",
        f"* candidates: {summary.n_candidates}; RFI events: {summary.n_rfi}; rejected by the cadence test: "
        f"{summary.n_rejected}",
    ]
    create_markdown_artifact("\n".join(lines), key="score-summary", description="score summary")
    for i, path in enumerate(summary.plots):
        png = base64.b64encode(Path(path).read_bytes()).decode()
        create_markdown_artifact(f"![{Path(path).name}](data:image/png;base64,{png})", key=f"candidate-plot-{i}",
                                 description=Path(path).name)
