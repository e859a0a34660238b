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

from seti_auditor import __version__, modeldir, scorestore, tilestore
from seti_auditor.audit import audit_tiles, right_neighbours
from seti_auditor.cadence_test import CadenceConfig
from seti_auditor.scoring import ScoreConfig, chan_to_freq_mhz, drift_to_hz_s
from seti_auditor.stats import ThresholdConfig, decide
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


def bh_sparse(p_kept: np.ndarray, m: int) -> np.ndarray:
    """Benjamini-Hochberg q-values of the ``k`` smallest of ``m`` p-values (the rest larger)."""
    p = np.asarray(p_kept, np.float64)
    if p.size == 0:
        return p
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, p.size + 1)
    q_sorted = np.minimum(np.minimum.accumulate(ranked[::-1])[::-1], 1.0)
    q = np.empty_like(q_sorted)
    q[order] = q_sorted
    return q


def apply_fdr(workdir: str, results: list[dict], job: ScoreJob) -> dict:
    """Archive-wide Benjamini-Hochberg: write ``q_value`` (and ``flagged`` for the BH rule)."""
    m = sum(r["n_valid"] for r in results)
    tiles = np.concatenate([r["kept_tile"] for r in results]) if results else np.zeros(0, np.int64)
    p = np.concatenate([r["kept_p"] for r in results]) if results else np.zeros(0)
    q = bh_sparse(p, max(m, 1))
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
