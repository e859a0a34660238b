"""The score flow: tiles.zarr + the current model -> scores.zarr -> catalog.zarr + plots.

A run compares the catalog version of the current model with the tile store's manifest
(:func:`seti_auditor.score_archive.plan_increment`) and takes one of three paths:

* ``full``: no version for this model yet (a new model), other scoring settings, or a file the
  version covers changed or left: every unscored region is scored, Benjamini-Hochberg runs over
  the whole archive, and the version is written whole (:func:`seti_auditor.catalog.write_catalog`);
* ``append``: new files only: their regions are scored, their tests form a BH family of their
  own (FDR at ``q`` per batch), the cadences they belong to are decided anew, events the version
  holds already are dropped, and the rest is appended (:func:`seti_auditor.catalog.append_rows`);
* ``unchanged``: nothing new; nothing is scored or written.

The version's attributes record the inputs it covers (``covered``) and every batch (``batches``).
"""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pandas as pd
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.progress import progress_reporter
from seti_auditor import __version__, catalog, modeldir, score_archive, scorestore, tilestore
from seti_auditor import workdir as wd
from seti_auditor.cadence_test import cadence_test
from seti_auditor.configs import from_json
from tasks.score import follow_lines, plot_candidates, score_region, search_joint

PLOTS = "plots"
PLOTS_PER_TASK = 4  # candidate plots per task: the default 8 plots run on two workers at once (~0.3 s each)


@dataclasses.dataclass(frozen=True)
class ScoreSummary:
    """What a score run produced: ``n_tiles``/``n_flagged`` count this run's tests (its BH family), the
    ``n_candidates``/``n_rfi``/``n_rejected`` counts and ``candidates`` the catalog version as it now stands."""

    catalog: str  # path of catalog.zarr
    plots: list[str]  # candidate PNGs made by this run (of its new candidates)
    model_version: str  # the model that scored
    n_tiles: int  # valid tiles tested by this run (its Benjamini-Hochberg family)
    n_flagged: int  # (tile, sub-band) tests of this run over the threshold
    n_candidates: int  # catalog rows
    n_rfi: int  # events recorded as RFI
    n_rejected: int  # events rejected by the cadence test
    candidates: pd.DataFrame  # the catalog rows (for printing)
    mode: str = "full"  # "full" (version decided whole), "append" (new files' rows appended) or "unchanged"
    batch: dict | None = None  # this run's batch record (files, m, thresholds, rows added); None when unchanged


def _run_name() -> str:
    """``score WORKDIR with model VERSION``: the run's name in the UI."""
    workdir = flow_run.parameters["workdir"]
    version = modeldir.read_meta(workdir)["model_version"] if modeldir.has_model(workdir) else "(no model)"
    return f"score {Path(workdir).name} with model {version}"


def _files_in(manifest: pd.DataFrame, start: int, stop: int) -> str:
    """The observation files with tiles in ``[start, stop)``, for a task run's name."""
    names = list(manifest.name[(manifest.status == "ingested") & (manifest.tile_start < stop)
                               & (manifest.tile_stop > start)])
    return names[0] + (f" (+{len(names) - 1} more)" if len(names) > 1 else "") if names else "no file"


@flow(name="score", flow_run_name=_run_name, validate_parameters=False)
def score_flow(workdir: str, job: score_archive.ScoreJob | None = None) -> ScoreSummary:
    """Score every tile with the current model, control false alarms, apply the cadence test."""
    job = from_json(score_archive.ScoreJob, job, "job")  # JSON from a deployment, or a config
    with wd.locked(workdir):
        return _score(workdir, job)


def _score(workdir: str, job: score_archive.ScoreJob) -> ScoreSummary:
    logger = get_run_logger()
    run = score_archive.prepare_scores(workdir, job)
    meta, version, tiling, n, key, fresh = run.meta, run.version, run.tiling, run.n_tiles, run.key, run.fresh
    manifest = tilestore.load_manifest(tilestore.store_path(workdir))
    prior = catalog.version_attrs(workdir, version) if version in catalog.list_versions(workdir) else None
    plan = score_archive.plan_increment(manifest, prior, key, fresh, catalog.current_version(workdir) == version)
    logger.info("model %s, catalog mode %s: %s", version, plan.mode, plan.reason)
    if plan.mode == "unchanged":
        summary = _unchanged(workdir, version, plan)
        _report(summary, manifest, job)
        return summary

    regions = score_archive.plan_regions(n, tiling.chunk_tiles, job.tiles_per_task)
    todo = regions if fresh else score_archive.unscored_regions(scorestore.store_path(workdir), n, tiling.chunk_tiles,
                                                                job.tiles_per_task)
    logger.info("model %s: %d tiles, %d regions to score %s%s", version, n, len(todo), todo[:4],
                " ..." if len(todo) > 4 else "")
    progress = progress_reporter("score-progress", "regions scored", len(todo))
    futures = [score_region.submit(workdir, a, b, job, version, files=_files_in(manifest, a, b)) for a, b in todo]
    results = []
    for i, fut in enumerate(futures):
        results.append(fut.result())
        progress(i + 1)

    if plan.mode == "full":  # one family: every test of the archive
        if todo != regions:  # resumed or grown: the p-values of the other regions come from the store
            results = [score_archive.region_pvalues(workdir, a, b, job.q_report) for a, b in regions]
        fdr = score_archive.apply_fdr(workdir, results, job)
        table = score_archive.tile_table(workdir)
    else:  # append: the new files' tests are a family of their own (FDR at q per batch)
        ranges = score_archive.file_ranges(manifest, plan.new_files)
        family = [score_archive.region_pvalues(workdir, a, b, job.q_report) for a, b in ranges]
        fdr = score_archive.apply_fdr_rows(workdir, family, job, ranges)
        table = score_archive.batch_table(score_archive.tile_table(workdir), plan.new_files)
    candidates, rfi, rejected = cadence_test(table, job.cadence)
    lines = {}
    if job.lines.enabled:
        candidates, rfi, rejected, lines = _line_search(workdir, version, table, job, candidates, rfi, rejected)
        logger.info("cadence line search: %s", lines)
    candidates, rfi, rejected = (frame.assign(model_version=version) for frame in (candidates, rfi, rejected))
    run_id = str(flow_run.get_id() or uuid.uuid4())
    new_files = manifest.loc[plan.new_files]
    batch = {"run_id": run_id, "mode": plan.mode, "reason": plan.reason, "code_version": __version__,
             "files": [{"name": str(r.name), "content_hash": str(r.content_hash)} for r in new_files.itertuples()],
             "method": job.thresholds.method, "q": job.thresholds.q, **fdr, "line_search": lines}
    attrs = {
        "title": "seti-auditor candidate catalog",
        "code_version": __version__,
        "run_id": run_id,
        "score_job": dataclasses.asdict(job),
        "score_key": key,
        "calibration": meta["extra"].get("calibrations", {}),
        "fdr": fdr,
        "fdr_scope": "batch: each run's new tiles are one Benjamini-Hochberg family at q (attribute batches)",
        "line_search": lines,
        "model_config": meta["config"],
        "inputs": manifest[["name", "content_hash", "status", "reason"]].to_dict(orient="records"),
        "covered": score_archive.covered_inputs(manifest),
    }
    candidates = _write_catalog(workdir, version, plan, prior, {"candidates": candidates, "rfi": rfi,
                                                                 "rejected": rejected}, attrs, batch)
    logger.info("catalog %s (%s): %s", version, plan.mode, {t: b - a for t, (a, b) in batch["rows"].items()})
    out_dir = Path(workdir) / PLOTS / version
    top = candidates.head(job.n_plots).to_dict("records")  # this run's new candidates
    futures = [plot_candidates.submit(workdir, top[i : i + PLOTS_PER_TASK], str(out_dir), version, first=i)
               for i in range(0, len(top), PLOTS_PER_TASK)]  # each task uploads its plots as artifacts
    plots = [p for f in futures for p in f.result()]
    summary = _summary(workdir, version, plan, plots, fdr["m"] // job.score.subbands, fdr["n_flagged"], batch)
    _report(summary, manifest, job)
    return summary


def _write_catalog(workdir: str, version: str, plan, prior: dict | None, frames: dict[str, pd.DataFrame], attrs: dict,
                   batch: dict) -> pd.DataFrame:
    """Write the version whole (full) or append the batch's new rows; returns the candidates written."""
    if plan.mode == "full":
        batch["rows"] = {t: [0, len(f)] for t, f in frames.items()}
        catalog.write_catalog(workdir, frames["candidates"], frames["rfi"], frames["rejected"],
                              attrs={**attrs, "batches": [batch]}, model_version=version)
        return frames["candidates"]
    known = catalog.version_frames(workdir, version)
    frames, batch["n_known_dropped"] = score_archive.drop_known(frames, known)
    batch["rows"] = {t: [len(known[t]), len(known[t]) + len(f)] for t, f in frames.items()}
    added = catalog.append_rows(workdir, frames["candidates"], frames["rfi"], frames["rejected"],
                                attrs={**attrs, "batches": [*prior.get("batches", []), batch]}, model_version=version)
    if {t: list(r) for t, r in added.items()} != batch["rows"]:
        raise RuntimeError(f"{workdir}: catalog rows {added} differ from the planned {batch['rows']}")
    return frames["candidates"]


def _summary(workdir: str, version: str, plan, plots: list[str], n_tiles: int, n_flagged: int,
             batch: dict | None) -> ScoreSummary:
    """The summary of a run: the tests of its family, and the catalog version as it now stands."""
    tables = catalog.version_frames(workdir, version)
    cands = tables["candidates"].sort_values("score", ascending=False, kind="stable").reset_index(drop=True)
    return ScoreSummary(catalog.store_path(workdir), plots, version, n_tiles, n_flagged, len(cands),
                        len(tables["rfi"]), len(tables["rejected"]), cands, plan.mode, batch)


def _unchanged(workdir: str, version: str, plan) -> ScoreSummary:
    """Nothing new since the catalog version was written: nothing is scored, written or plotted."""
    return _summary(workdir, version, plan, [], 0, 0, None)


def _line_search(workdir, version, table, job, candidates, rfi, rejected):
    """The cadence line search: one task per cadence with seeds, then the archive-wide decision; then (when
    enabled) the joint line searches (fast and slow), one task per complete cadence (submitted with the first, decided
    after it)."""
    plan = score_archive.plan_lines(table, job)
    futures = [follow_lines.submit(workdir, version, cad, rows, plan.seeds[plan.seeds["cadence_id"] == cad],
                                   plan.m_tests, len(plan.seeds), job)
               for cad, rows in plan.cadences.items()]
    joint = score_archive.plan_joint(table) if score_archive.joint_enabled(job) else {}
    joint_futures = [search_joint.submit(workdir, version, cad, rows, job) for cad, rows in joint.items()]
    measured = [f.result() for f in futures]
    measured = pd.concat(measured, ignore_index=True) if measured else pd.DataFrame()
    candidates, rfi, rejected, counts = score_archive.finish_lines(plan, measured, candidates, rfi, rejected, job)
    if score_archive.joint_enabled(job):
        results = [f.result() for f in joint_futures]
        candidates, rfi, rejected, joint_counts = score_archive.finish_joints(results, table, candidates, rfi,
                                                                             rejected, job)
        counts.update(joint_counts)
    return candidates, rfi, rejected, counts


def _mode_words(summary: ScoreSummary) -> str:
    if summary.batch is None:
        return "nothing new since the catalog version was written; nothing scored or written"
    added = ", ".join(f"{b - a} {t}" for t, (a, b) in summary.batch["rows"].items())
    what = "version written whole" if summary.mode == "full" else "rows appended to the version"
    return f"{len(summary.batch['files'])} file(s) decided; {what}: {added}"


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
        f"* this run ({summary.mode}): {_mode_words(summary)}",
        f"* tiles tested by this run: {summary.n_tiles}; flagged: {summary.n_flagged} "
        f"({job.thresholds.method}, q = {job.thresholds.q} over this run's tests, score = {job.score.score})",
        f"* candidates: {summary.n_candidates}; RFI events: {summary.n_rfi}; rejected by the cadence test: "
        f"{summary.n_rejected}",
    ]
    create_markdown_artifact("\n".join(lines), key="score-summary", description="score summary")
    # the candidate plots' artifacts (candidate-plot-N) come from the plot tasks (tasks.score.plot_candidates)
