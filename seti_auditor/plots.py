"""Candidate plots: the ON/OFF stack around a candidate, like the Breakthrough Listen event plots (I/O).

Each panel is one scan of the candidate's cadence (ABACAD top to bottom), showing the
bandpass-removed, standardised power of the tile store in a window around the candidate,
with time since the cadence start on the vertical axis. The candidate's drift line,
carried across the cadence, is drawn over every panel (dashed in the OFF scans).

Figures are made with matplotlib's object API (``Figure``, no ``pyplot`` state), so plots can be
drawn in several threads at once (Dask thread workers); the store's tile coordinates are read once
per batch of plots (:class:`StoreIndex`), not once per plot.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import zarr
from matplotlib.figure import Figure

from seti_auditor import tilestore
from seti_auditor.cadence import sanitise

_WIDTH_IN = 7.0  # figure width (inches)
_PANEL_IN = 1.4  # height of one scan's panel (inches)
_MARGIN_IN = (0.55, 0.35)  # fixed bottom (axis label) and top (title) margins (inches): no layout pass


@dataclasses.dataclass(frozen=True)
class StoreIndex:
    """What every plot of one tile store needs: the open group, the manifest and the tile coordinates."""

    group: zarr.Group  # tiles.zarr, read-only
    manifest: pd.DataFrame  # one row per input file
    valid: np.ndarray  # (N,) bool, tiles holding data
    file_ids: np.ndarray  # (N,) file of each tile
    fmins: np.ndarray  # (N,) lower frequency edge of each tile (MHz)
    fmaxs: np.ndarray  # (N,) upper frequency edge (MHz)
    chans: np.ndarray  # (N,) first channel of each tile in its file

    @classmethod
    def load(cls, workdir: str | os.PathLike) -> StoreIndex:
        store = tilestore.store_path(workdir)
        g = zarr.open_group(str(store), mode="r")
        return cls(g, tilestore.load_manifest(store), np.asarray(g["valid"][:], bool), np.asarray(g["file_id"][:]),
                   np.asarray(g["freq_min_mhz"][:]), np.asarray(g["freq_max_mhz"][:]), np.asarray(g["chan_start"][:]))


def _window(ix: StoreIndex, file_id: int, fmin: float, fmax: float):
    """Waterfall (time x freq) of a file's tiles overlapping [fmin, fmax], with its freq edges."""
    sel = np.flatnonzero(ix.valid & (ix.file_ids == file_id) & (ix.fmaxs >= fmin) & (ix.fmins <= fmax))
    if sel.size == 0:
        return None
    sel = sel[np.argsort(ix.chans[sel], kind="stable")]
    tiles = np.asarray(ix.group["tiles"].get_orthogonal_selection((sel, slice(None), slice(None))))
    image = np.concatenate(list(tiles), axis=1)  # (T, n * F), channel order
    return image, ix.fmins[sel], ix.fmaxs[sel]


def candidate_plots(workdir: str | os.PathLike, candidates: Iterable[Mapping], out_dir: str | os.PathLike,
                    margin_tiles: int = 1) -> list[Path]:
    """:func:`candidate_plot` for each candidate, the store's coordinates read once."""
    index = StoreIndex.load(workdir)
    return [candidate_plot(workdir, pd.Series(c), out_dir, margin_tiles, index) for c in candidates]


def candidate_plot(workdir: str | os.PathLike, candidate: pd.Series, out_dir: str | os.PathLike,
                   margin_tiles: int = 1, index: StoreIndex | None = None) -> Path:
    """Write the six-panel (or single-panel, outside a cadence) PNG of one candidate.

    ``index``: the store's :class:`StoreIndex`, when several plots share it (:func:`candidate_plots`).
    """
    ix = StoreIndex.load(workdir) if index is None else index
    manifest, valid, fmins, fmaxs = ix.manifest, ix.valid, ix.fmins, ix.fmaxs
    width = float(fmaxs[valid][0] - fmins[valid][0]) if valid.any() else 0.0
    lo = float(candidate.freq_min_mhz) - margin_tiles * width
    hi = float(candidate.freq_max_mhz) + margin_tiles * width

    if candidate.cadence_id:
        scans = manifest[(manifest.cadence_id == candidate.cadence_id) & (manifest.status == "ingested")]
        scans = scans.sort_values("scan_index")
    else:
        scans = manifest[manifest.name == candidate.source_file]
    t0 = float(scans.tstart_mjd.min())
    t_peak = 0.5 * (float(candidate.tstart_mjd) + float(candidate.tstop_mjd))
    height = _PANEL_IN * len(scans) + sum(_MARGIN_IN)
    fig = Figure(figsize=(_WIDTH_IN, height))
    axes = fig.subplots(len(scans), 1, sharex=True, squeeze=False)
    fig.subplots_adjust(left=0.09, right=0.98, bottom=_MARGIN_IN[0] / height, top=1.0 - _MARGIN_IN[1] / height,
                        hspace=0.08)
    for ax, (file_id, scan) in zip(axes[:, 0], scans.iterrows()):
        panel = _window(ix, file_id, lo, hi)
        t_a = (scan.tstart_mjd - t0) * 86400.0
        t_b = (scan.tstop_mjd - t0) * 86400.0
        if panel is not None:
            image, pmin, pmax = panel
            f_first, f_last = (pmax[0], pmin[-1]) if scan.foff_mhz < 0 else (pmin[0], pmax[-1])
            ax.imshow(image, aspect="auto", origin="lower", cmap="viridis", vmin=-2, vmax=6,
                      extent=(f_first, f_last, t_a, t_b), interpolation="nearest")
        t = np.linspace(t_a, t_b, 8)
        track = float(candidate.peak_freq_mhz) + float(candidate.drift_hz_s) * 1e-6 * (t - (t_peak - t0) * 86400.0)
        ax.plot(track, t, color="white", lw=0.8, ls="-" if scan.on_source else "--")
        ax.set_xlim(min(lo, hi), max(lo, hi))
        ax.set_ylabel("s", fontsize=7)
        label = f"{'ON ' if scan.on_source else 'OFF'} {scan.source_name}  {scan['name']}"
        ax.text(0.01, 0.85, label, transform=ax.transAxes, color="white", fontsize=7)
    axes[-1, 0].set_xlabel("frequency (MHz)")
    axes[0, 0].set_title(f"{candidate.source_name}  {candidate.peak_freq_mhz:.6f} MHz  "
                         f"drift {candidate.drift_hz_s:+.3f} Hz/s  score {candidate.score:.1f}  "
                         f"q {candidate.q_value:.2g}", fontsize=8)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = sanitise(f"{candidate.source_name}_{candidate.peak_freq_mhz:.6f}MHz_{candidate.tile_first}")
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    return path
