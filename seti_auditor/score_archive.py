"""Scoring an archive's tiles and building its catalog (I/O; Prefect tasks wrap these).

* :func:`plan_regions` cuts the tile store into chunk-aligned regions, one per task;
* :func:`score_region` scores one region with the current model (loaded once per worker)
  and writes its rows of ``scores.zarr``; it returns only counts and the few small p-values,
  so the Dask graph and the results stay small;
* :func:`apply_fdr` runs Benjamini-Hochberg over the whole archive from those p-values;
* :func:`tile_table` + :func:`seti_auditor.cadence_test.cadence_test` turn flagged tiles
  into candidates, written by :func:`seti_auditor.catalog.write_catalog`.

p-values come from the held-out noise tiles scored when the model was trained (per
frequency band of ``band_mhz`` when the band has enough of them). Benjamini-Hochberg needs
every p-value only up to the level it can reject, so tasks return the tiles with
``p <= q_report`` and the number of tiles ``m``: the q-values of those are exact whenever
they are at most ``q_report`` (a larger p cannot lower them); ``q_value`` is NaN elsewhere.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import threading

import numpy as np
import pandas as pd
import zarr
from scipy.special import ndtri as sps_ndtri

from seti_auditor import __version__, modeldir, scorestore, tilestore
from seti_auditor.audit import audit_tiles, right_neighbours
from seti_auditor import cadence_lines, joint_lines
from seti_auditor.cadence_search import LineSearchConfig, overlaps, decide_lines, line_events, merge_lines, seeds
from seti_auditor.cadence_test import CadenceConfig, broadband_mask, sort_events
from seti_auditor.drift import DriftConfig
from seti_auditor.joint_search import TAIL_X, JointSearchConfig, decide_peaks, joint_events, run_alpha
from seti_auditor.scoring import ScoreConfig, chan_to_freq_mhz, drift_to_hz_s
from seti_auditor.stats import ThresholdConfig, bh_qvalues, decide
from seti_auditor.tiling import TilingConfig
from seti_auditor.training import score_selection

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class ScoreJob:
    """How the score flow turns tiles into a catalog."""

    score: ScoreConfig = ScoreConfig()  # the anomaly score ("line" residual search, or the article's "mse")
    # p-values -> flags: BH at q = 0.05 over every test of the archive ("article" = mu + k sigma); false
    # candidates are then controlled by the cadence test (a consistent line in two ON scans, none in the OFFs)
    thresholds: ThresholdConfig = ThresholdConfig(q=0.05)
    cadence: CadenceConfig = CadenceConfig(min_on_scans=2)  # event merging, RFI rules and the ON/OFF test
    lines: LineSearchConfig = LineSearchConfig()  # the cadence line search (weak lines followed through a cadence)
    band_mhz: float = 50.0  # width of the frequency bands calibrated separately (MHz)
    tiles_per_task: int = 4096  # tiles one scoring task handles (rounded to whole chunks)
    q_report: float = 0.2  # q-values are computed for tiles with p <= q_report (BH needs no more)
    n_plots: int = 8  # candidates that get an ON/OFF plot


def score_key(model_version: str, job: ScoreJob) -> str:
    """Identifies scores: the model, the scoring settings and the code that made them.

    Rows of ``scores.zarr`` made under the same key are reused by a rerun (resume); any other
    key means the whole store is scored again.
    """
    settings = json.dumps(dataclasses.asdict(job), sort_keys=True) + __version__
    return f"{model_version}-{hashlib.sha256(settings.encode()).hexdigest()[:12]}"


@dataclasses.dataclass(frozen=True)
class ScoreRun:
    """What a score run starts from (:func:`prepare_scores`)."""

    meta: dict  # the current model's metadata (modeldir.read_meta)
    version: str  # its model version
    tiling: TilingConfig  # the tile store's tiling
    n_tiles: int  # length of the tile dimension (valid and padding tiles)
    key: str  # score_key of the model and the job
    fresh: bool  # scores.zarr was (re)made empty for this key: nothing of it can be reused


def prepare_scores(workdir: str, job: ScoreJob) -> ScoreRun:
    """The current model, the store's shape, and ``scores.zarr``'s template for this model and job.

    The template is written once per score key (:func:`seti_auditor.scorestore.ensure_template`);
    a store made under another key is replaced, one made under this key is kept for resuming.
    """
    meta = modeldir.read_meta(workdir)
    version = meta["model_version"]
    tiles_path = tilestore.store_path(workdir)
    tiling = tilestore.read_tiling_config(tiles_path)
    n = tilestore.n_tiles(tiles_path)
    key = score_key(version, job)
    fresh = scorestore.ensure_template(scorestore.store_path(workdir), n, tiling.chunk_tiles, job.score.subbands,
                                       version, key, {"score_job": json.dumps(dataclasses.asdict(job)),
                                                      "code_version": __version__})
    return ScoreRun(meta, version, tiling, n, key, fresh)


def plan_regions(n_tiles: int, chunk_tiles: int, tiles_per_task: int) -> list[tuple[int, int]]:
    """Chunk-aligned ``[start, stop)`` ranges covering ``n_tiles`` rows."""
    step = max(chunk_tiles, (tiles_per_task // chunk_tiles) * chunk_tiles)
    return [(a, min(a + step, n_tiles)) for a in range(0, n_tiles, step)]


_model_lock = threading.Lock()


@functools.lru_cache(maxsize=2)
def _model(workdir: str, version: str, score_cfg: ScoreConfig):
    """The model and its null scores, loaded once per worker process (and version)."""
    model, cfg, meta, null = modeldir.load_current(workdir)
    if meta["model_version"] != version:
        raise RuntimeError(f"{workdir}: current model is {meta['model_version']}, the run expected {version}")
    trained_for = meta["extra"].get("score_config", {})
    if score_cfg.score == "line" and trained_for != dataclasses.asdict(score_cfg):  # recalibrate
        null = {**null, "score": score_selection(model, tilestore.store_path(workdir), null["tile"], score_cfg)["score"]}
    if score_cfg.score == "mse":  # the article's baseline: the null of its own statistic
        null = {**null, "score": score_selection(model, tilestore.store_path(workdir), null["tile"], score_cfg)["score"]}
    scores_NxS = np.asarray(null["score"], np.float64).reshape(len(null["tile"]), -1)
    freq_NxS = np.repeat(np.asarray(null["freq_mhz"], np.float64)[:, None], scores_NxS.shape[1], axis=1)
    return model, scores_NxS.ravel(), freq_NxS.ravel()


def load_model(workdir: str, version: str, score_cfg: ScoreConfig):
    with _model_lock:  # thread workers share the cache: load once
        return _model(os.path.abspath(workdir), version, score_cfg)


def band_of(freq_mhz: np.ndarray, band_mhz: float) -> np.ndarray:
    """Calibration band of each frequency: a fixed grid, the same in every task."""
    return np.floor(np.asarray(freq_mhz, np.float64) / band_mhz).astype(np.int64)


def score_region(workdir: str, start: int, stop: int, job: ScoreJob, version: str) -> dict:
    """Score tiles ``[start, stop)`` and write their rows of ``scores.zarr``.

    Returns ``{"start", "n_valid", "kept_tile", "kept_p"}``: the flat ``tile * S + subband``
    indices with ``p <= job.q_report`` (for the archive-wide BH step) and the number of tests
    (valid tiles times sub-bands).
    """
    model, null, null_freq = load_model(workdir, version, job.score)
    g = zarr.open_group(str(tilestore.store_path(workdir)), mode="r")
    valid = np.asarray(g["valid"][start:stop], bool)
    n, sb = stop - start, job.score.subbands
    rows = {name: np.full((n, sb) if name in scorestore.SUBBAND_VARS else n, fill, dtype=dtype)
            for name, (dtype, fill) in scorestore.SCORE_VARS.items()}
    rows["model_version"] = np.full(n, version, object)
    rows["scored"][:] = True
    kept, kept_p = np.zeros(0, np.int64), np.zeros(0, np.float64)
    if valid.any():
        tiles = np.nan_to_num(np.asarray(g["tiles"][start:stop], np.float32)[valid])
        fmid = 0.5 * (np.asarray(g["freq_min_mhz"][start:stop]) + np.asarray(g["freq_max_mhz"][start:stop]))[valid]
        right = right_neighbours(np.asarray(g["file_id"][start:stop])[valid], np.asarray(g["time_start"][start:stop])[valid],
                                 np.asarray(g["chan_start"][start:stop])[valid], tiles.shape[2])
        verdict = audit_tiles(model, tiles, job.score, right)
        bands = np.repeat(band_of(fmid, job.band_mhz)[:, None], sb, axis=1).ravel()
        decision = decide(verdict.score.ravel(), null, bands, band_of(null_freq, job.band_mhz), job.thresholds)
        shape = verdict.score.shape
        rows["recon_error"][valid] = verdict.recon_error
        for name, values in (("score", verdict.score), ("z_score", decision.z.reshape(shape)),
                             ("p_value", decision.p.reshape(shape)), ("drift_chan", verdict.drift_chan)):
            rows[name][valid] = values
        rows["peak_chan"][valid] = np.where(np.isfinite(verdict.peak_chan), np.round(verdict.peak_chan), -1)
        if job.thresholds.method != "bh":  # per-tile rules; BH is archive-wide (apply_fdr)
            rows["flagged"][valid] = decision.flagged.reshape(shape)
        p_full = np.full((n, sb), np.inf)
        p_full[valid] = decision.p.reshape(shape)
        kept = start * sb + np.flatnonzero(p_full.ravel() <= job.q_report)  # flat (tile, subband) index
        kept_p = p_full.ravel()[kept - start * sb]
    scorestore.write_region(scorestore.store_path(workdir), start, rows, g["tiles"].chunks[0])
    return {"start": start, "n_valid": int(valid.sum()) * sb, "kept_tile": kept, "kept_p": kept_p}


def apply_fdr(workdir: str, results: list[dict], job: ScoreJob) -> dict:
    """Archive-wide Benjamini-Hochberg: write ``q_value`` (and ``flagged`` for the BH rule)."""
    m = sum(r["n_valid"] for r in results)
    tiles = np.concatenate([r["kept_tile"] for r in results]) if results else np.zeros(0, np.int64)
    p = np.concatenate([r["kept_p"] for r in results]) if results else np.zeros(0)
    q = bh_qvalues(p, m)  # the k smallest of m p-values (the rest are larger)
    exact = q <= job.q_report
    path = scorestore.store_path(workdir)
    g = zarr.open_group(str(path), mode="r+")
    shape = g["q_value"].shape
    q_all = np.full(shape[0] * shape[1], np.nan)
    q_all[tiles[exact]] = q[exact]
    g["q_value"][:] = q_all.reshape(shape)
    if job.thresholds.method == "bh":
        flagged = np.zeros(q_all.size, bool)
        flagged[tiles[q <= job.thresholds.q]] = True
        g["flagged"][:] = flagged.reshape(shape)
    flagged_n = int(np.asarray(g["flagged"][:]).sum())
    return {"m": m, "n_small_p": int(p.size), "n_flagged": flagged_n}


def tile_table(workdir: str) -> pd.DataFrame:
    """One row per (valid tile, sub-band) with coordinates and scores (the cadence test's input).

    ``tile`` is the tile's index; ``freq_min_mhz``/``freq_max_mhz`` bound the sub-band's channels.
    """
    tg = zarr.open_group(str(tilestore.store_path(workdir)), mode="r")
    sg = zarr.open_group(str(scorestore.store_path(workdir)), mode="r")
    valid = np.asarray(tg["valid"][:], bool)
    scored = np.asarray(sg["scored"][: valid.size], bool)
    idx = np.flatnonzero(valid & scored)
    sb = int(sg["score"].shape[1])
    tile_col = lambda name: np.repeat(np.asarray(tg[name][:])[idx], sb)  # noqa: E731
    band_col = lambda name: np.asarray(sg[name][:])[idx].ravel()  # noqa: E731
    manifest = tilestore.load_manifest(tilestore.store_path(workdir))
    tiling = tilestore.read_tiling_config(tilestore.store_path(workdir))
    file_id = tile_col("file_id")
    tsamp = manifest["tsamp_s"].to_numpy()[file_id]
    foff = manifest["foff_mhz"].to_numpy()[file_id]
    fch1 = manifest["fch1_mhz"].to_numpy()[file_id]
    width = tiling.tile_freq // sb
    sub = np.tile(np.arange(sb), idx.size)
    first_chan = tile_col("chan_start") + sub * width
    edge_a, edge_b = fch1 + first_chan * foff, fch1 + (first_chan + width - 1) * foff
    tstart = tile_col("tstart_mjd")
    peak = band_col("peak_chan").astype(np.float64)
    centre = np.where(peak >= 0, peak, sub * width + (width - 1) / 2.0)
    return pd.DataFrame({
        "tile": np.repeat(idx, sb),
        "subband": sub,
        "file_id": file_id,
        "source_file": tile_col("source_file").astype(object),
        "source_name": tile_col("source_name").astype(object),
        "cadence_id": tile_col("cadence_id").astype(object),
        "scan_index": tile_col("scan_index").astype(np.int64),
        "on_source": tile_col("on_source").astype(bool),
        "freq_min_mhz": np.minimum(edge_a, edge_b),
        "freq_max_mhz": np.maximum(edge_a, edge_b),
        "tstart_mjd": tstart,
        "tstop_mjd": tstart + tiling.tile_time * tsamp / 86400.0,
        "score": band_col("score").astype(np.float64),
        "recon_error": np.repeat(np.asarray(sg["recon_error"][:])[idx], sb),
        "z": band_col("z_score").astype(np.float64),
        "p": band_col("p_value"),
        "q": band_col("q_value"),
        "flagged": band_col("flagged").astype(bool),
        "drift_hz_s": drift_to_hz_s(band_col("drift_chan"), foff, tsamp),
        "peak_freq_mhz": chan_to_freq_mhz(centre, fch1 + tile_col("chan_start") * foff, foff),
        "foff_mhz": foff,
        "tsamp_s": tsamp,
        "tile_freq0_mhz": fch1 + tile_col("chan_start") * foff,
    })


def region_pvalues(workdir: str, start: int, stop: int, q_report: float) -> dict:
    """The :func:`score_region` result of an already scored region, read back from the store."""
    g = zarr.open_group(str(scorestore.store_path(workdir)), mode="r")
    valid = np.asarray(zarr.open_group(str(tilestore.store_path(workdir)), mode="r")["valid"][start:stop], bool)
    p = np.asarray(g["p_value"][start:stop])  # (n, S)
    keep = valid[:, None] & (p <= q_report)
    sb = p.shape[1]
    return {"start": start, "n_valid": int(valid.sum()) * sb, "kept_tile": start * sb + np.flatnonzero(keep.ravel()),
            "kept_p": p[keep]}


# --------------------------------------------------------------------------- the cadence line search


@dataclasses.dataclass(frozen=True)
class LinePlan:
    """What the cadence line search follows (small: seeds and the cadences' rows, no pixels)."""

    seeds: pd.DataFrame  # seed rows of the tile table (with a ``seed`` id)
    cadences: dict[str, pd.DataFrame]  # cadence_id -> its rows of the tile table (those with seeds)
    m_tests: int  # ON rows of cadences: the number of tests of the combined BH step


def plan_lines(table: pd.DataFrame, job: ScoreJob) -> LinePlan:
    """Seeds of the cadence line search from the tile table, and the rows of their cadences."""
    t = table.reset_index(drop=True)
    t = t.assign(cadence_id=t["cadence_id"].fillna("").astype(str))
    seed_rows = seeds(t, broadband_mask(t, job.cadence), job.lines)
    in_cad = t[(t["cadence_id"] != "") & (t["scan_index"] >= 0)]
    cads = {c: g for c, g in in_cad.groupby("cadence_id", sort=True) if c in set(seed_rows["cadence_id"])}
    m = int(in_cad["on_source"].astype(bool).sum())
    return LinePlan(seed_rows, cads, m)


def follow_lines(workdir: str, version: str, rows: pd.DataFrame, seed_rows: pd.DataFrame, m_tests: int, n_seeds: int,
                 job: ScoreJob) -> pd.DataFrame:
    """Measure the lines of one cadence's seeds in the blocks of the cadence (``rows``: its tile-table rows)."""
    return cadence_lines.follow_cadence(workdir, version, rows, seed_rows, m_tests, n_seeds, job.lines, job.score)


def finish_lines(plan: LinePlan, measured: pd.DataFrame, candidates: pd.DataFrame, rfi: pd.DataFrame,
                 rejected: pd.DataFrame, job: ScoreJob) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Decide the lines and merge them into the tile-level events; returns the three tables and counts."""
    lines, rows = decide_lines(plan.seeds, measured, plan.m_tests, job.lines)
    counts = {"seeds": len(plan.seeds), "measured": len(measured), "lines": len(lines), "m": plan.m_tests}
    if lines.empty:
        return candidates, rfi, rejected, counts
    counts.update({k: int((lines["verdict"] == k).sum()) for k in ("pass", "in_off", "few_on_scans", "not_significant")})
    events = line_events(rows, plan.seeds)
    verdict = rows["verdict"].to_numpy().copy()
    # a line row lying on a tile-level RFI event of its own scan (a line in the OFF scans, or in all
    # six) is that RFI seen along another track: the whole line goes to the RFI table
    narrow_rfi = rfi[rfi["reason"] != "broadband"] if not rfi.empty else rfi
    on_rfi = np.array([bool(overlaps(ev, narrow_rfi).any()) for _, ev in events.iterrows()], bool)
    bad_seeds = set(rows.loc[on_rfi & (verdict == "pass"), "seed"])
    verdict[rows["seed"].isin(bad_seeds).to_numpy() & (verdict == "pass")] = "on_rfi"
    counts["on_rfi"] = len(bad_seeds)
    passing = events[verdict == "pass"] if not events.empty else events
    before = len(candidates)
    candidates, rejected = merge_lines(candidates, rejected, passing)
    counts["added"] = len(candidates) - before
    vetoed = events[np.isin(verdict, ("in_off", "on_rfi"))].assign(
        cadence_test="fail", reason=np.where(verdict[np.isin(verdict, ("in_off", "on_rfi"))] == "in_off", "line_in_off", "line_on_rfi"))
    if not vetoed.empty:
        rfi = pd.concat([rfi, vetoed], ignore_index=True)
    return sort_events(candidates, False), sort_events(rfi, True), sort_events(rejected, True), counts


# --------------------------------------------------------------------------- the joint line searches (fast, slow)


def joint_configs(job: ScoreJob) -> dict[str, JointSearchConfig]:
    """The joint searches that run (name -> configuration; the name is also their key in the line search's counts):
    ``joint`` (fast lines) and ``joint_slow`` (slow lines), each when enabled, with the line score, after the
    cadence line search."""
    if not (job.score.score == "line" and job.lines.enabled):
        return {}
    return {name: cfg for name, cfg in (("joint", job.lines.joint), ("joint_slow", job.lines.joint_slow))
            if cfg.enabled}


def joint_enabled(job: ScoreJob) -> bool:
    """Whether any joint search runs (:func:`joint_configs`)."""
    return bool(joint_configs(job))


def plan_joint(table: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """cadence_id -> its rows of the tile table, for cadences with all six scans (the joint search's input)."""
    t = table[(table["cadence_id"].fillna("").astype(str) != "") & (table["scan_index"] >= 0)]
    cols = ["tile", "file_id", "source_file", "source_name", "cadence_id", "scan_index", "on_source", "freq_min_mhz",
            "freq_max_mhz", "tstart_mjd", "tstop_mjd", "foff_mhz", "tsamp_s", "tile_freq0_mhz"]
    out = {}
    for cad, grp in t.groupby(t["cadence_id"].astype(str), sort=True):
        if set(range(6)) <= set(grp["scan_index"].astype(int)):
            out[cad] = grp[cols].drop_duplicates("tile").reset_index(drop=True)
    return out


def search_joint(workdir: str, version: str, rows: pd.DataFrame, job: ScoreJob) -> dict[str, dict]:
    """The joint searches of one cadence (its tile-table rows): per search, peaks, trials and tail counts (small)."""
    return joint_lines.search_cadence(workdir, version, rows, joint_configs(job), job.score)


def _tiles_of(events: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Fill an event's tile columns from the tile table (tiles of its file and time block overlapping its band)."""
    if events.empty:
        return events
    ev = events.copy()
    by_block = {k: g for k, g in table.groupby([table["file_id"], table["tstart_mjd"].round(9)])}
    for i, r in ev.iterrows():
        g = by_block.get((r.file_id, round(r.tstart_mjd, 9)))
        if g is None:
            continue
        hit = np.unique(g.loc[(g["freq_min_mhz"] <= r.freq_max_mhz) & (g["freq_max_mhz"] >= r.freq_min_mhz), "tile"])
        if hit.size:
            ev.at[i, "tile_first"], ev.at[i, "tile_last"] = int(hit.min()), int(hit.max())
            ev.at[i, "n_tiles"], ev.at[i, "tiles"] = int(hit.size), ",".join(str(int(x)) for x in hit)
    return ev


def finish_joints(results: list[dict[str, dict]], table: pd.DataFrame, candidates: pd.DataFrame, rfi: pd.DataFrame,
                  rejected: pd.DataFrame, job: ScoreJob) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """:func:`finish_joint` for each joint search (``results``: :func:`search_joint`'s, one per cadence), fast
    first; each is decided over its own trials at its own level. Returns the frames and ``{name: counts}``."""
    counts = {}
    for name, cfg in joint_configs(job).items():
        candidates, rfi, rejected, counts[name] = finish_joint([r[name] for r in results], table, candidates, rfi,
                                                               rejected, job, cfg, name)
    return candidates, rfi, rejected, counts


def finish_joint(results: list[dict], table: pd.DataFrame, candidates: pd.DataFrame, rfi: pd.DataFrame,
                 rejected: pd.DataFrame, job: ScoreJob, cfg: JointSearchConfig | None = None, name: str = "joint"
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Decide the joint peaks of every cadence (Bonferroni over the run's trials, at the run's level
    :func:`seti_auditor.joint_search.run_alpha` of the searched bytes) and merge them.

    A passing peak becomes one candidate row per ON scan (``method = "cadence_joint"``) unless
    one of its rows lies on a tile-level RFI event of its scan (then the peak goes to the RFI
    table, ``joint_on_rfi``); significant peaks that an OFF scan shows go to the RFI table
    (``joint_in_off``). Rows overlapping an already reported candidate of their scan are dropped
    (:func:`seti_auditor.cadence_search.merge_lines`). Counts include the null: the OFF triplets
    searched as if ON, with their tail counts and the peaks that would have passed. ``cfg``: the search's
    configuration (default: the fast search's, ``job.lines.joint``); ``name``: its name in logs (:func:`joint_configs`).
    """
    cfg = job.lines.joint if cfg is None else cfg
    n_trials = int(sum(r["n_trials"] for r in results))
    n_null = int(sum(r["n_trials_null"] for r in results))
    tail = np.sum([r["tail"] for r in results], axis=0) if results else np.zeros(TAIL_X.size, np.int64)
    tail_null = np.sum([r["tail_null"] for r in results], axis=0) if results else np.zeros(TAIL_X.size, np.int64)
    frames = [r["peaks"] for r in results if len(r["peaks"])]
    peaks = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
    null_frames = [r["null_peaks"] for r in results if len(r["null_peaks"])]
    null_peaks = pd.concat(null_frames, ignore_index=True) if null_frames else pd.DataFrame()
    gb = sum(r.get("bytes", 0) for r in results) / 1e9
    alpha = run_alpha(cfg, gb)
    level = float(-sps_ndtri(min(1.0, alpha / max(n_trials, 1))))
    skipped = [(r["cadence_id"], r["skipped"]) for r in results if r.get("skipped")]
    if skipped:  # too wide for memory (joint_lines.search_cadence): the other searches still cover them
        log.warning("%s search: %d cadence(s) not searched, e.g. %s: %s", name, len(skipped), skipped[0][0],
                    skipped[0][1])
    counts = {"cadences": len(results) - len(skipped), "skipped": len(skipped),
              "skipped_cadences": [c for c, _ in skipped[:20]], "trials": n_trials, "gb": round(gb, 6), "alpha": alpha,
              "alpha_per_run": cfg.alpha, "alpha_per_gb": cfg.alpha_per_gb, "threshold": level,
              "peaks": len(peaks), "tail_x": [float(x) for x in TAIL_X], "tail": [int(x) for x in tail],
              "null": {"trials": n_null, "tail": [int(x) for x in tail_null], "peaks": len(null_peaks)}}
    if not null_peaks.empty:  # the OFF triplets' peaks under the same decision (their veto scans are the ON scans)
        nd = decide_peaks(null_peaks, n_null, cfg, alpha)
        counts["null"].update({k: int((nd["verdict"] == k).sum()) for k in ("pass", "in_off", "weak_scan")})
        counts["null"]["max_stat"] = float(nd["stat"].max())
    if peaks.empty:
        return candidates, rfi, rejected, counts
    decided = decide_peaks(peaks, n_trials, cfg, alpha)
    counts.update({k: int((decided["verdict"] == k).sum()) for k in ("pass", "in_off", "weak_scan", "not_significant")})
    counts["max_stat"] = float(decided["stat"].max())
    keep = decided[decided["verdict"].isin(["pass", "in_off"])]
    events = _tiles_of(joint_events(keep), table) if not keep.empty else pd.DataFrame()
    if events.empty:
        return candidates, rfi, rejected, counts
    narrow_rfi = rfi[rfi["reason"] != "broadband"] if not rfi.empty else rfi
    on_rfi = np.array([bool(overlaps(ev, narrow_rfi).any()) for _, ev in events.iterrows()], bool)
    bad = set(events.loc[on_rfi & (events["verdict"] == "pass"), "peak_id"])
    verdict = np.where(events["peak_id"].isin(bad) & (events["verdict"] == "pass"), "on_rfi", events["verdict"])
    counts["on_rfi"] = len(bad)
    cols = [c for c in events.columns if c not in ("verdict", "peak_id")]
    passing = events.loc[verdict == "pass", cols]
    before = len(candidates)
    candidates, rejected = merge_lines(candidates, rejected, passing.reset_index(drop=True))
    counts["added"] = len(candidates) - before
    vetoed = events.loc[verdict != "pass", cols].assign(
        cadence_test="fail", reason=np.where(verdict[verdict != "pass"] == "in_off", "joint_in_off", "joint_on_rfi"))
    if not vetoed.empty:
        rfi = pd.concat([rfi, vetoed], ignore_index=True)
    return sort_events(candidates, False), sort_events(rfi, True), sort_events(rejected, True), counts


# --------------------------------------------------------------------------- incremental runs

INCREMENT_MODES = ("full", "append", "unchanged")


@dataclasses.dataclass(frozen=True)
class IncrementPlan:
    """What a score run does with the current catalog version of its model."""

    mode: str  # "full": decide the whole archive, (re)write the version; "append": decide the new files and
    # append their rows; "unchanged": nothing new, nothing written
    new_files: list[int]  # manifest rows (ingested files) the version does not cover yet
    reason: str  # why this mode, in words


def covered_inputs(manifest: pd.DataFrame) -> list[dict]:
    """The ingested files (name, content hash, cadence) a catalog written now covers."""
    live = manifest[manifest.status == "ingested"]
    return [{"name": str(r.name), "content_hash": str(r.content_hash), "cadence_id": str(r.cadence_id)}
            for r in live.itertuples()]


def uncovered_files(manifest: pd.DataFrame, prior: dict | None) -> list[int]:
    """Manifest rows of ingested files a catalog version (its attributes ``prior``) does not cover.

    Every ingested file when there is no version or it does not record what it covers.
    """
    covered = {(c["name"], c["content_hash"]) for c in (prior or {}).get("covered", [])}
    return [int(i) for i in manifest.index[manifest.status == "ingested"]
            if (str(manifest.at[i, "name"]), str(manifest.at[i, "content_hash"])) not in covered]


def plan_increment(manifest: pd.DataFrame, prior: dict | None, key: str, scores_fresh: bool,
                   is_current: bool) -> IncrementPlan:
    """Full, append or unchanged, from the version's attributes (``prior``) and the manifest.

    Appending needs the version to be current, made under the same ``score_key`` (model and
    scoring settings), with the scores of the files it covers still in ``scores.zarr``, and
    every file it covers still ingested with the same content; then the ingested files it
    does not cover are the new ones. Otherwise (a covered file changed or left the archive,
    other settings, a catalog older than incremental runs) the version is decided whole.
    """
    live = manifest.index[manifest.status == "ingested"]
    keys = {(str(manifest.at[i, "name"]), str(manifest.at[i, "content_hash"])): i for i in live}
    every = list(keys.values())
    if prior is None:
        return IncrementPlan("full", every, "no catalog version for this model yet")
    if not is_current:
        return IncrementPlan("full", every, "this model's catalog version is not the current one")
    if prior.get("score_key") != key:
        return IncrementPlan("full", every, "the catalog version was made with other scoring settings")
    if scores_fresh:
        return IncrementPlan("full", every, "scores.zarr was rebuilt")
    if "covered" not in prior:
        return IncrementPlan("full", every, "the catalog version does not record the inputs it covers")
    covered = {(c["name"], c["content_hash"]) for c in prior["covered"]}
    gone = covered - set(keys)
    if gone:
        return IncrementPlan("full", every, f"{len(gone)} covered file(s) changed or left the archive: "
                             + ", ".join(sorted(n for n, _ in gone)[:5]))
    new = uncovered_files(manifest, prior)
    # a covered file regrouped into a cadence: decided again with it when that cadence has a new file
    fresh_cadences = {str(manifest.at[i, "cadence_id"]) for i in new} - {""}
    was = {(c["name"], c["content_hash"]): c.get("cadence_id") for c in prior["covered"]}
    moved = sorted(k[0] for k, i in keys.items() if k in was and was[k] is not None
                   and was[k] != str(manifest.at[i, "cadence_id"])
                   and str(manifest.at[i, "cadence_id"]) not in fresh_cadences)
    if moved:
        return IncrementPlan("full", every, f"{len(moved)} covered file(s) changed cadence: " + ", ".join(moved[:5]))
    if not new:
        return IncrementPlan("unchanged", [], "every ingested file is in the catalog already")
    return IncrementPlan("append", new, f"{len(new)} new file(s) since the last run")


def unscored_regions(scores_path, n_tiles: int, chunk_tiles: int, tiles_per_task: int) -> list[tuple[int, int]]:
    """Chunk-aligned ``[start, stop)`` ranges covering every chunk with an unscored row.

    Consecutive unscored chunks form one run, cut into pieces of at most ``tiles_per_task``
    tiles (whole chunks): after new files were added, only their tiles are planned.
    """
    scored = np.asarray(zarr.open_group(str(scores_path), mode="r")["scored"][:n_tiles], bool)
    n_chunks = -(-n_tiles // chunk_tiles)
    pad = np.ones(n_chunks * chunk_tiles, bool)
    pad[:n_tiles] = scored
    todo = ~pad.reshape(n_chunks, chunk_tiles).all(axis=1)
    step = max(1, tiles_per_task // chunk_tiles)
    regions, c = [], 0
    while c < n_chunks:
        if not todo[c]:
            c += 1
            continue
        end = c
        while end < n_chunks and todo[end] and end - c < step:
            end += 1
        regions.append((c * chunk_tiles, min(end * chunk_tiles, n_tiles)))
        c = end
    return regions


def file_ranges(manifest: pd.DataFrame, rows: list[int]) -> list[tuple[int, int]]:
    """The (chunk-aligned, padded) tile ranges of some manifest rows, in store order."""
    return sorted((int(manifest.at[i, "tile_start"]), int(manifest.at[i, "tile_stop"])) for i in rows)


def apply_fdr_rows(workdir: str, results: list[dict], job: ScoreJob, ranges: list[tuple[int, int]]) -> dict:
    """Benjamini-Hochberg over one batch: the tests in ``results`` form their own family.

    Like :func:`apply_fdr`, but ``q_value`` (and ``flagged`` under the BH rule) are written in the
    rows of ``ranges`` only (chunk-aligned file ranges): the rows of earlier batches are left as
    their own family decided them. FDR is then controlled at ``q`` within each batch, hence on
    average over the archive.
    """
    m = sum(r["n_valid"] for r in results)
    tiles = np.concatenate([r["kept_tile"] for r in results]) if results else np.zeros(0, np.int64)
    p = np.concatenate([r["kept_p"] for r in results]) if results else np.zeros(0)
    q = bh_qvalues(p, m)  # the k smallest of m p-values (the rest are larger)
    g = zarr.open_group(str(scorestore.store_path(workdir)), mode="r+")
    sb = int(g["q_value"].shape[1])
    n_flagged = 0
    for a, b in ranges:
        inside = (tiles >= a * sb) & (tiles < b * sb)
        q_rows = np.full((b - a) * sb, np.nan)
        exact = inside & (q <= job.q_report)
        q_rows[tiles[exact] - a * sb] = q[exact]
        g["q_value"][a:b] = q_rows.reshape(b - a, sb)
        if job.thresholds.method == "bh":
            flagged = np.zeros((b - a) * sb, bool)
            flagged[tiles[inside & (q <= job.thresholds.q)] - a * sb] = True
            g["flagged"][a:b] = flagged.reshape(b - a, sb)
        n_flagged += int(np.asarray(g["flagged"][a:b]).sum())
    return {"m": m, "n_small_p": int(p.size), "n_flagged": n_flagged}


def batch_table(table: pd.DataFrame, file_ids: list[int]) -> pd.DataFrame:
    """The rows of the tile table a batch decides: its files, and every file of a cadence they belong to.

    A cadence that mixes old and new files is decided anew (the old files' rows keep the flags of
    their own batch); files outside any cadence are decided alone.
    """
    mine = table["file_id"].isin(file_ids)
    cadences = set(table.loc[mine, "cadence_id"].astype(str)) - {""}
    return table[mine | table["cadence_id"].astype(str).isin(cadences)]


def _overlapping(row, known: pd.DataFrame) -> bool:
    """Same file, overlapping time range (strictly) and overlapping frequency range (closed)."""
    return bool(((known["tstart_mjd"] < row.tstop_mjd) & (row.tstart_mjd < known["tstop_mjd"])
                 & (known["freq_min_mhz"] <= row.freq_max_mhz) & (row.freq_min_mhz <= known["freq_max_mhz"])).any())


def drop_known(frames: dict[str, pd.DataFrame], known: dict[str, pd.DataFrame]) -> tuple[dict[str, pd.DataFrame], int]:
    """Remove new events that the catalog holds already (in any of its three tables).

    An event is known when a row of the same ``source_file`` overlaps it in time and frequency
    (a cadence re-decided because a new file joined it finds its old files' events again; those
    rows stay as they were). Returns the remaining frames and the number dropped.
    """
    old = pd.concat([f[["source_file", "tstart_mjd", "tstop_mjd", "freq_min_mhz", "freq_max_mhz"]]
                     for f in known.values() if len(f)], ignore_index=True) if any(len(f) for f in known.values()) \
        else pd.DataFrame(columns=["source_file", "tstart_mjd", "tstop_mjd", "freq_min_mhz", "freq_max_mhz"])
    by_file = {name: rows for name, rows in old.groupby("source_file")}
    out, dropped = {}, 0
    for name, frame in frames.items():
        keep = np.array([not (r.source_file in by_file and _overlapping(r, by_file[r.source_file]))
                         for r in frame.itertuples()], bool)
        dropped += int((~keep).sum()) if keep.size else 0
        out[name] = frame[keep] if keep.size else frame
    return out, dropped


def new_noise_sample(workdir: str, file_ids: list[int], cfg: DriftConfig) -> tuple[np.ndarray, np.ndarray]:
    """Reconstruction errors of the model's null tiles and of new OFF-source, ordinary tiles.

    The new tiles are those of ``file_ids`` chosen as the null was (valid, ``max_abs_z`` within the
    training pre-screen, OFF-source when in a cadence); at most ``cfg.max_tiles`` of them (a seeded
    sample) are scored with the current model, exactly as the null tiles were.
    """
    model, _, meta, null = modeldir.load_current(workdir)
    rule = meta["extra"].get("holdout", {}).get("rule", {})
    max_abs_z = float(rule.get("ordinary_max_abs_z", 6.0))
    store = tilestore.store_path(workdir)
    g = zarr.open_group(str(store), mode="r")
    valid = np.asarray(g["valid"][:], bool)
    mine = np.isin(np.asarray(g["file_id"][:]), np.asarray(file_ids, np.int64))
    ordinary = np.asarray(g["max_abs_z"][:]) <= max_abs_z
    on = np.asarray(g["on_source"][:], bool) & (np.asarray(g["scan_index"][:]) >= 0)
    idx = np.flatnonzero(valid & mine & ordinary & ~on)
    if idx.size > cfg.max_tiles:
        idx = np.sort(np.random.default_rng(cfg.seed).choice(idx, cfg.max_tiles, replace=False))
    mse_only = ScoreConfig(score="mse", batch_size=min(1024, max(1, idx.size)))  # recon_error needs no line search
    new = score_selection(model, store, idx, mse_only)["recon_error"] if idx.size else np.zeros(0, np.float32)
    return np.asarray(null["recon_error"], np.float64), np.asarray(new, np.float64)
