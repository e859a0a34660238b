"""Candidate plots: the ON/OFF stack around a candidate, like the Breakthrough Listen event plots (I/O).

Each panel is one scan of the candidate's cadence (ABACAD top to bottom), showing the
bandpass-removed, standardised power of the tile store in a window around the candidate,
with time since the cadence start on the vertical axis. The candidate's drift line,
carried across the cadence, is drawn over every panel (dashed in the OFF scans).
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import zarr  # noqa: E402

from seti_auditor import tilestore  # noqa: E402
from seti_auditor.cadence import sanitise  # noqa: E402


def _window(group, file_id: int, fmin: float, fmax: float, valid, file_ids, fmins, fmaxs, chans):
    """Waterfall (time x freq) of a file's tiles overlapping [fmin, fmax], with its freq edges."""
    sel = np.flatnonzero(valid & (file_ids == file_id) & (fmaxs >= fmin) & (fmins <= fmax))
    if sel.size == 0:
        return None
    sel = sel[np.argsort(chans[sel], kind="stable")]
    tiles = np.asarray(group["tiles"].get_orthogonal_selection((sel, slice(None), slice(None))))
    image = np.concatenate(list(tiles), axis=1)  # (T, n * F), channel order
    return image, fmins[sel], fmaxs[sel]


def candidate_plot(workdir: str | os.PathLike, candidate: pd.Series, out_dir: str | os.PathLike,
                   margin_tiles: int = 1) -> Path:
    """Write the six-panel (or single-panel, outside a cadence) PNG of one candidate."""
    store = tilestore.store_path(workdir)
    g = zarr.open_group(str(store), mode="r")
    manifest = tilestore.load_manifest(store)
    valid = np.asarray(g["valid"][:], bool)
    file_ids = np.asarray(g["file_id"][:])
    fmins, fmaxs = np.asarray(g["freq_min_mhz"][:]), np.asarray(g["freq_max_mhz"][:])
    chans = np.asarray(g["chan_start"][:])
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
    fig, axes = plt.subplots(len(scans), 1, figsize=(7, 1.4 * len(scans) + 0.8), sharex=True, squeeze=False)
    for ax, (file_id, scan) in zip(axes[:, 0], scans.iterrows()):
        panel = _window(g, file_id, lo, hi, valid, file_ids, fmins, fmaxs, chans)
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
    fig.tight_layout()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    name = sanitise(f"{candidate.source_name}_{candidate.peak_freq_mhz:.6f}MHz_{candidate.tile_first}")
    path = out / f"{name}.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
