"""The joint line searches' measurements (I/O): per-scan binned residuals and the joint statistic.

:mod:`seti_auditor.joint_search` holds the statistics; this module reads one cadence's tiles,
reconstructs them with the current model (:func:`seti_auditor.audit.residuals`), stitches each
scan's residual along frequency, bins it for each search (the fast search's 2-channel bins, the slow
search's full resolution), and runs the joint statistic on the ON triplet (the search)
and on the OFF triplet (the null, with the same trials and time geometry). It returns small
frames and counts only.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import zarr

from seti_auditor import modeldir, tilestore
from seti_auditor.audit import residuals
from seti_auditor.joint_search import (JointSearchConfig, ScanGeometry, TAIL_X, bin_rows, cadence_bytes, joint_triplet,
                                       mask_strong, off_values, scan_drifts, scan_map)
from seti_auditor.scoring import ScoreConfig, normal_scores

_SECONDS_PER_DAY = 86400.0
ON_TRIPLET, OFF_TRIPLET = (0, 2, 4), (1, 3, 5)


def scan_blocks(rows: pd.DataFrame) -> dict[int, pd.DataFrame]:
    """scan_index -> the cadence's rows of that scan's first time block (one block per scan is searched)."""
    out = {}
    for scan, grp in rows.groupby("scan_index", sort=True):
        t0 = grp["tstart_mjd"].min()
        out[int(scan)] = grp[np.abs(grp["tstart_mjd"] - t0) < 1e-9]
    return out


def read_scan(g, nchans: int | None, model, block: pd.DataFrame, score_cfg: ScoreConfig,
              fast_bins: tuple[int, ...]) -> dict[int, tuple[np.ndarray, ScanGeometry]]:
    """One scan block's binned residual ``(T, L // fast_bin)`` and its :class:`ScanGeometry`, per fast bin.

    ``g``: the tile store (open, read-only); ``nchans``: the file's channels (None: up to its last
    tile); ``block``: tile-table rows of one file's time block. The residuals of its tiles are
    placed at their channels (``chan_start``) of the file; channels without a valid tile are NaN.
    The model runs once, whatever the number of binnings.
    """
    tiles = np.unique(block["tile"].to_numpy(np.int64))
    cs = np.asarray(g["chan_start"].get_orthogonal_selection(tiles), np.int64)
    data = np.nan_to_num(np.asarray(g["tiles"].get_orthogonal_selection((tiles, slice(None), slice(None))), np.float32))
    z = residuals(model, data, score_cfg)
    t, f = z.shape[1], z.shape[2]
    width = max(nchans or 0, int(cs.max()) + f)
    strip = np.full((t, width), np.nan, np.float32)
    for i, c in enumerate(cs):
        strip[:, c : c + f] = z[i]
    r = block.iloc[0]
    foff_hz = float(r.foff_mhz) * 1e6
    fch1_hz = (float(r.tile_freq0_mhz) * 1e6) - int(g["chan_start"][int(r.tile)]) * foff_hz  # channel 0 of the file
    tsamp = float(r.tsamp_s)
    t_mid_s = float(r.tstart_mjd) * _SECONDS_PER_DAY + 0.5 * t * tsamp
    scores = normal_scores(strip)  # once for every binning
    return {fb: (bin_rows(scores, fb, scored=True),
                 ScanGeometry(t_mid_s=t_mid_s, f0_hz=fch1_hz + (fb - 1) / 2.0 * foff_hz, bin_hz=foff_hz * fb,
                              tsamp_s=tsamp))
            for fb in sorted(set(fast_bins))}


def _triplet(maps: dict, masked: dict, geos: dict, scans: tuple, others: tuple, grid: np.ndarray,
             cfg: JointSearchConfig):
    """Joint peaks of ``scans`` (their maps without strong lines) with the largest map value of ``others``
    (the veto scans, strong lines kept: a strong line there vetoes) near each."""
    ms, gs = [masked[s] for s in scans], [geos[s] for s in scans]
    peaks, n_trials, tail = joint_triplet(ms, gs, grid, cfg)
    ref = gs[len(gs) // 2]
    om, og = [maps[s] for s in others if s in maps], [geos[s] for s in others if s in maps]
    if not peaks.empty:
        vals = [off_values(om, og, ref, grid, p, cfg) if om else [] for p in peaks.to_dict("records")]
        peaks = peaks.assign(off_values=vals, off_max=[max(v) if v else -np.inf for v in vals],
                             n_off_checked=len(om))
    return peaks, n_trials, tail


def search_cadence(workdir: str, version: str, rows: pd.DataFrame, cfgs: dict[str, JointSearchConfig],
                   score_cfg: ScoreConfig) -> dict[str, dict]:
    """The joint searches of one cadence (``rows``: its rows of the tile table), one per ``cfgs`` entry
    (name -> its configuration: the fast and the slow search), on residuals computed once.

    Returns, per name, ``{"cadence_id", "peaks", "n_trials", "tail", "null_peaks", "n_trials_null", "tail_null",
    "bytes"}``: the ON triplet's peaks (:data:`seti_auditor.joint_search.PEAK_COLUMNS` plus the scans' files,
    times and geometry, ``off_max`` and ``n_off_checked``), its number of trials and tail counts
    (at :data:`seti_auditor.joint_search.TAIL_X`), and the same for the OFF triplet searched as if
    it were ON (its veto scans are the ON scans): the null; ``bytes``: the searched share of the six
    files (each file's size times the fraction of its integrations in the searched block), for
    the run's level per GB; ``skipped``: why the cadence was not searched (its searches would need more memory
    than ``max_cadence_gb``, :func:`seti_auditor.joint_search.cadence_bytes`), else "". A cadence without all six
    scans returns no trials.
    """
    cad = str(rows["cadence_id"].iloc[0]) if len(rows) else ""
    empty = {"cadence_id": cad, "peaks": pd.DataFrame(), "n_trials": 0, "tail": np.zeros(TAIL_X.size, np.int64),
             "null_peaks": pd.DataFrame(), "n_trials_null": 0, "tail_null": np.zeros(TAIL_X.size, np.int64), "bytes": 0,
             "skipped": ""}
    blocks = scan_blocks(rows[rows["scan_index"] >= 0])
    if not cfgs or not all(s in blocks for s in ON_TRIPLET + OFF_TRIPLET):
        return {name: dict(empty) for name in cfgs}
    path = tilestore.store_path(workdir)
    g = zarr.open_group(str(path), mode="r")
    manifest = tilestore.load_manifest(path)  # once per cadence, not per scan
    n_int, tile_f = int(g["tiles"].shape[1]), int(g["tiles"].shape[2])
    nchans = {s: int(manifest.iloc[int(b["file_id"].iloc[0])]["nchans"]) if "nchans" in manifest.columns else None
              for s, b in blocks.items()}  # each scan's file's channels (None: up to its last tile)
    width = max(n or tile_f * blocks[s]["tile"].nunique() for s, n in nchans.items())  # the widest scan's
    r0 = next(iter(blocks.values())).iloc[0]
    need = cadence_bytes(cfgs.values(), n_int, width, float(r0.tsamp_s), abs(float(r0.foff_mhz)) * 1e6)
    limit = min(c.max_cadence_gb for c in cfgs.values())
    if need > limit * 1e9:  # not searched, and said so (finish_joint counts and logs it)
        reason = f"{need / 1e9:.1f} GB for {width} channels per scan > max_cadence_gb {limit:g}"
        return {name: dict(empty, skipped=reason) for name in cfgs}
    model, _, meta, _ = modeldir.load_current(workdir)
    if meta["model_version"] != version:
        raise RuntimeError(f"{workdir}: current model is {meta['model_version']}, the run expected {version}")
    maps = {name: {} for name in cfgs}
    masked = {name: {} for name in cfgs}
    geos = {name: {} for name in cfgs}
    grids: dict[str, np.ndarray] = {}
    info, searched_bytes = {}, 0.0
    for s, block in blocks.items():
        fid = int(block["file_id"].iloc[0])
        binned = read_scan(g, nchans[s], model, block, score_cfg, tuple(c.fast_bin for c in cfgs.values()))
        n_int = next(iter(binned.values()))[0].shape[0]
        if "size_bytes" in manifest.columns:
            entry = manifest.iloc[fid]
            searched_bytes += float(entry["size_bytes"]) * min(1.0, n_int / max(int(entry["nints"]), 1))
        for name, cfg in cfgs.items():
            zb, geo = binned[cfg.fast_bin]
            if name not in grids:
                grids[name] = scan_drifts(cfg, geo.tsamp_s, geo.bin_hz, n_int)
            maps[name][s], geos[name][s] = scan_map(zb, grids[name], cfg.min_track_frac), geo
            masked[name][s] = mask_strong(maps[name][s], grids[name], n_int, cfg.strong_z)
        del binned
        r = block.iloc[0]
        info[s] = {"file_id": int(r.file_id), "source_file": str(r.source_file), "source_name": str(r.source_name),
                   "tstart_mjd": float(r.tstart_mjd), "tstop_mjd": float(r.tstop_mjd), "n_int": n_int}
    out = {}
    for name, cfg in cfgs.items():
        res = dict(empty, bytes=int(searched_bytes))
        for key, scans, others in (("", ON_TRIPLET, OFF_TRIPLET), ("_null", OFF_TRIPLET, ON_TRIPLET)):
            peaks, n_trials, tail = _triplet(maps[name], masked[name], geos[name], scans, others, grids[name], cfg)
            if not peaks.empty:
                peaks = peaks.assign(cadence_id=cad, scans=[list(scans)] * len(peaks),
                                     files=[[info[s] for s in scans]] * len(peaks),
                                     geometry=[[vars(geos[name][s]) for s in scans]] * len(peaks))
            res["peaks" if not key else "null_peaks"] = peaks
            res["n_trials" + key], res["tail" + key] = n_trials, tail
        out[name] = res
    return out
