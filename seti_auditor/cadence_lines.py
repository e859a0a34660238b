"""The cadence line search's measurements (I/O): residual strips and window statistics.

:mod:`seti_auditor.cadence_search` plans where to look and decides; this module reads the
tiles, reconstructs them with the current model and runs
:func:`seti_auditor.scoring.window_stat` on strips of three neighbouring tiles (the target
tile and its neighbours in frequency, so that a track near a tile edge is summed whole).
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import zarr

from seti_auditor import modeldir, tilestore
from seti_auditor.audit import residuals
from seti_auditor.cadence_search import LineSearchConfig, blocks, next_targets, widths_for
from seti_auditor.scoring import ScoreConfig, window_pvalue, window_stat

log = logging.getLogger(__name__)


def _neighbour_index(g, manifest: pd.DataFrame, file_ids) -> dict[tuple[int, int, int], int]:
    """(file_id, time_start, chan_start) -> tile, over the tile ranges of the given files."""
    index: dict[tuple[int, int, int], int] = {}
    for fid in sorted({int(f) for f in file_ids}):
        row = manifest.iloc[fid]
        a, b = int(row["tile_start"]), int(row["tile_start"]) + int(row["n_tiles"])
        if b <= a:
            continue
        valid = np.asarray(g["valid"][a:b], bool)
        ts, cs = np.asarray(g["time_start"][a:b]), np.asarray(g["chan_start"][a:b])
        for i in np.flatnonzero(valid):
            index[(fid, int(ts[i]), int(cs[i]))] = a + int(i)
    return index


def read_strips(workdir: str, model, tiles: np.ndarray, score_cfg: ScoreConfig) -> dict[int, np.ndarray]:
    """tile -> residual strip ``(T, 3F)``: left neighbour, the tile, right neighbour (NaN where absent)."""
    tiles = np.unique(np.asarray(tiles, np.int64))
    if tiles.size == 0:
        return {}
    path = tilestore.store_path(workdir)
    g = zarr.open_group(str(path), mode="r")
    manifest = tilestore.load_manifest(path)
    f = int(g["tiles"].shape[2])
    fid = np.asarray(g["file_id"].get_orthogonal_selection(tiles))
    ts = np.asarray(g["time_start"].get_orthogonal_selection(tiles))
    cs = np.asarray(g["chan_start"].get_orthogonal_selection(tiles))
    index = _neighbour_index(g, manifest, fid)
    sides = [[index.get((int(a), int(b), int(c) + d * f), -1) for a, b, c in zip(fid, ts, cs)] for d in (-1, 1)]
    needed = np.unique(np.concatenate([tiles, *(np.asarray(s)[np.asarray(s) >= 0] for s in sides)]))
    data = np.nan_to_num(np.asarray(g["tiles"].get_orthogonal_selection((needed, slice(None), slice(None)))))
    z = residuals(model, data, score_cfg)
    pos = {int(t): i for i, t in enumerate(needed)}
    nan = np.full(z.shape[1:], np.nan, np.float32)
    out = {}
    for i, t in enumerate(tiles):
        left, right = sides[0][i], sides[1][i]
        parts = [z[pos[left]] if left >= 0 else nan, z[pos[int(t)]], z[pos[right]] if right >= 0 else nan]
        out[int(t)] = np.concatenate(parts, axis=1)
    return out


def follow_cadence(workdir: str, version: str, rows: pd.DataFrame, seed_rows: pd.DataFrame, m_tests: int,
                   n_seeds: int, cfg: LineSearchConfig, score_cfg: ScoreConfig) -> pd.DataFrame:
    """Follow every seed of one cadence through its time blocks (rounds of :func:`next_targets`).

    ``rows``: the cadence's rows of the tile table (with ``foff_mhz``, ``tsamp_s``,
    ``tile_freq0_mhz``); ``m_tests`` and ``n_seeds`` (of the whole run) bound the p-value a line
    could pass the archive-wide BH step with, below which OFF scans are measured. Returns the measured targets: :data:`TARGET_COLUMNS` plus ``stat``,
    ``p``, ``chan`` (from the tile's first channel), ``drift_chan``, ``width``, ``n_int``.
    Residual strips are computed once per tile and kept for the later rounds.
    """
    if seed_rows.empty:
        return pd.DataFrame()
    model, _, meta, _ = modeldir.load_current(workdir)
    if meta["model_version"] != version:
        raise RuntimeError(f"{workdir}: current model is {meta['model_version']}, the run expected {version}")
    tile_time = int(zarr.open_group(str(tilestore.store_path(workdir)), mode="r")["tiles"].shape[1])
    cad_blocks = blocks(rows)
    gate = cfg.q * n_seeds / max(m_tests, 1)  # the largest p any line of these seeds could pass BH with
    strips: dict[int, np.ndarray] = {}
    measured = pd.DataFrame()
    for _ in range(len(cad_blocks)):
        targets = next_targets(seed_rows, cad_blocks, measured, cfg, tile_time, score_cfg.max_drift, gate)
        if targets.empty:
            break
        need = [t for t in targets["tile"].unique() if t >= 0 and int(t) not in strips]
        strips.update(read_strips(workdir, model, np.asarray(need, np.int64), score_cfg))
        measured = pd.concat([measured, _measure(targets, strips, tile_time)], ignore_index=True)
    return measured


def _measure(targets: pd.DataFrame, strips: dict[int, np.ndarray], tile_time: int) -> pd.DataFrame:
    out = []
    for t in targets.to_dict("records"):
        if t["tile"] < 0:
            out.append({**t, "stat": -np.inf, "p": 1.0, "chan": np.nan, "drift_chan": np.nan, "width": 0,
                        "n_int": tile_time})
            continue
        strip = strips[int(t["tile"])]
        f = strip.shape[1] // 3
        stat, chan, drift, width, n_tracks = window_stat(
            strip, t["chan0"] + f, t["drift0_chan"], t["half_chan"], t["half_drift_chan"], t["drift_step_chan"],
            widths_for(t["drift0_chan"]))
        out.append({**t, "stat": stat, "p": window_pvalue(stat, n_tracks), "chan": chan - f, "drift_chan": drift,
                    "width": width, "n_int": tile_time})
    return pd.DataFrame(out)
