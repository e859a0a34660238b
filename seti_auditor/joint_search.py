"""The cadence-coherent joint search for fast-drifting lines (pure).

A line drifting ``k`` channels per integration is smeared over about ``k`` channels of every
integration, so one scan holds at best ``SNR / sqrt(k)`` of it in a matched track: 3.3-4.4
sigma for a 2 Hz/s line of SNR 12-16 in 2.79 Hz channels and 18.25 s integrations, below what
one tile (or one scan) can report. Its three ON scans together carry ``sqrt(3)`` times that.
This search sums the three ON scans of a cadence coherently along the line's track:

1. **Per scan** (:func:`bin_rows`): the residual of the scan's tiles stitched along frequency
   (NaN where a tile is absent), each integration's values replaced by their normal scores
   (:func:`seti_auditor.scoring.normal_scores`: the residual is skewed), summed over
   ``fast_bin`` adjacent channels (divided by ``sqrt(fast_bin)``), and each integration
   down-weighted where its residual is correlated along frequency (impulse rows).
2. **Per-scan map** (:func:`scan_map`): for every drift of a per-scan grid (binned channels
   per integration, steps of ``2 / (T - 1)``) and every binned channel ``c``, the sum of a
   boxcar of about the smear width (:func:`smear_width`) along ``c + d * (t - t_mid)``, over
   the square root of its pixels; each drift's row standardised by the median and robust
   spread (MAD) over channels, so that under noise every map value is close to N(0, 1) however
   the residual's neighbouring channels correlate. Tracks touching a strong line (a map value
   above ``strong_z``: RFI, or a line the tile-level search reports anyway) are left out
   (:func:`mask_strong`).
3. **Joint statistic** (:func:`joint_triplet`): a line at frequency ``f0`` at a reference time
   ``t_ref`` (the middle scan's mid-time), drift ``D`` (Hz/s) and chirp ``C`` (Hz/s^2) is at
   ``f0 + D dt + C dt^2 / 2`` with drift ``D + C dt`` in a scan ``dt`` seconds away; the joint
   statistic is the sum of the three scans' map values (each clipped at ``cap``) at those
   positions and drifts, over ``sqrt(3)``: N(0, 1) under noise (the scans are independent),
   ``sqrt(3)`` times one scan's S/N for a line. The drift grid is fine enough that the outer
   scans' positions move by at most ``drift_step_chan`` binned channels per step, the chirp
   grid likewise.
4. **Null and threshold**: every (channel, drift, chirp) trial is one N(0, 1) test; a run's
   Bonferroni p-value is ``min(1, N * Phi-bar(J))`` with ``N`` the trials of the whole run
   (:func:`bonferroni_p`): at most ``alpha`` false lines per run in expectation, whatever the
   archive's size. The OFF triplet of each cadence, with the same trials and time geometry,
   measures the tail (docs/statistics.md).
5. **Decision** (:func:`decide_peaks`): a peak (local maximum over channels of the best
   trial) is reported when its p-value is at most ``alpha``, each ON scan contributes at
   least ``min_component`` (no single huge patch makes the sum), and no OFF scan shows a
   track at its carried position (map value above ``veto_z`` within ``veto_half_chan``
   binned channels and one drift step: RFI).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
from scipy.special import ndtr

from seti_auditor.scoring import normal_scores

# the columns of a joint peak (:func:`joint_triplet`'s output; the decision adds its own)
PEAK_COLUMNS = ("ref_chan", "stat", "drift_hz_s", "chirp_hz_s2", "components", "chans", "drift_idx")


@dataclasses.dataclass(frozen=True)
class JointSearchConfig:
    """The cadence-coherent joint search for fast lines (see the module docstring)."""

    enabled: bool = True  # run it after the cadence line search (SNR >= 25 recall 0.94 -> 1.00 at 0 false; docs/statistics.md)
    min_drift_hz_s: float = 0.6  # smallest |drift| searched (Hz/s): ~where the full-resolution tile search stops
    max_drift_hz_s: float = 2.5  # largest |drift| searched (Hz/s): ~the tile-level binned ("fast") search's reach
    fast_bin: int = 4  # channels summed into one binned channel before the search
    drift_step_chan: float = 1.0  # fine-drift step: the outer scans' positions move <= this many binned channels
    chirp_hz_s2: float = 3e-4  # largest |chirp| searched (Hz/s^2); 0: straight lines only
    chirp_step_chan: float = 1.0  # chirp step: the outer scans' positions move <= this many binned channels
    min_track_frac: float = 0.5  # a per-scan track needs this fraction of its pixels inside the data
    cap: float = 5.0  # each scan's map value is clipped at this before the sum: one scan's outlier cannot carry it
    strong_z: float = 7.0  # per-scan map values above this are strong lines (RFI, or a line the tile search
    # reports by itself): every track of the scan that touches one is left out of the joint sum (mask_strong)
    prethreshold: float = 4.5  # peaks with a joint statistic below this are not returned by a cadence task
    peak_half_chan: int = 8  # peaks: local maxima over +- this many binned channels (reference time)
    alpha: float = 0.01  # Bonferroni level over every trial of the run (expected false lines per run <= alpha)
    min_component: float = 0.5  # each ON scan's map value at the line must be at least this (sigma)
    veto_z: float = 4.0  # an OFF scan shows the line (RFI) when its map exceeds this near the carried position
    veto_half_chan: int = 2  # ... within this many binned channels (and one per-scan drift step) of it

    def __post_init__(self) -> None:
        if not 0 < self.min_drift_hz_s < self.max_drift_hz_s:
            raise ValueError(f"JointSearchConfig needs 0 < min_drift_hz_s < max_drift_hz_s, got {self}")
        if self.fast_bin < 1 or self.drift_step_chan <= 0 or self.chirp_step_chan <= 0 or self.chirp_hz_s2 < 0:
            raise ValueError(f"invalid JointSearchConfig {self}")
        if not 0 < self.alpha < 1 or self.peak_half_chan < 0 or self.veto_half_chan < 0:
            raise ValueError(f"invalid JointSearchConfig {self}")
        if self.cap <= 0 or self.strong_z <= 0 or not 0 < self.min_track_frac <= 1:
            raise ValueError(f"JointSearchConfig needs cap, strong_z > 0 and 0 < min_track_frac <= 1, got {self}")


@dataclasses.dataclass(frozen=True)
class ScanGeometry:
    """Where one scan lies: its time, its binned channels' frequencies and its sampling."""

    t_mid_s: float  # mid-time of the scan (s, any common origin)
    f0_hz: float  # centre frequency of binned channel 0 (Hz)
    bin_hz: float  # signed width of a binned channel (Hz; negative when frequency falls with channel)
    tsamp_s: float  # integration time (s)


# --------------------------------------------------------------------------- per scan


def bin_rows(z_TxL: np.ndarray, fast_bin: int, box: int = 4, block: int | None = None) -> np.ndarray:
    """Normal scores per row, summed over ``fast_bin`` channels / ``sqrt(fast_bin)``: ``(T, L // fast_bin)``.

    A bin with a NaN pixel (an absent tile, a scan edge) is NaN; trailing channels that do not
    fill a bin are dropped. Each row is then divided (whole, or per block of ``block`` bins) by ``max(1, s)``,
    with ``s`` the robust spread (MAD) of sums of ``box`` adjacent bins over ``sqrt(box)``: an integration lifted by a
    broadband impulse keeps a residual correlated over tens of channels (lag-1 correlation up
    to 0.4 and ``s`` up to 2.3 in the benchmark's impulse rows, 1.0 elsewhere), which a track's
    boxcar sums; normal scores cannot see it (they equalise each pixel's marginal only).
    Without this, the null's tail beyond 5 sigma was 3-26 times the normal one. (Blocks of 512
    bins, for impulses that cover part of the band, were measured too: a noisier spread, which
    down-weights clean rows at random, lost recall and did not improve the tail beyond 5.)
    """
    z = normal_scores(z_TxL)
    t, n = z.shape
    nb = n // fast_bin
    zb = z[:, : nb * fast_bin].reshape(t, nb, fast_bin).sum(axis=2) / math.sqrt(fast_bin)
    seg = nb if block is None else max(box, (block // box) * box)
    for a in range(0, nb, seg):  # per block of ``block`` bins: an impulse may cover part of the band only
        part = zb[:, a : a + seg]
        nbox = part.shape[1] // box
        sums = part[:, : nbox * box].reshape(t, nbox, box).sum(axis=2) / math.sqrt(box)
        for i in range(t):
            v = sums[i][np.isfinite(sums[i])]
            if v.size >= 16:
                spread = 1.4826 * float(np.median(np.abs(v - np.median(v))))
                part[i] /= max(1.0, spread)
    return zb.astype(np.float32)


def smear_width(drift_chan: float) -> int:
    """Boxcar width (binned channels) of a line drifting ``drift_chan`` binned channels per integration.

    Its power in one integration spreads over ``|drift|`` channels plus the line's own width
    and the bin phase: a boxcar of ``round(|drift|) + 1`` channels holds nearly all of it
    (the benchmark's fast signals: ~3.3 binned channels per integration, boxcar 4).
    """
    return int(round(abs(drift_chan))) + 1


def scan_drifts(cfg: JointSearchConfig, tsamp_s: float, bin_hz: float, n_int: int) -> np.ndarray:
    """The per-scan drift grid (binned channels per integration, signed): both signs, with the chirp margin."""
    step = 2.0 / max(n_int - 1, 1)
    to_chan = tsamp_s / abs(bin_hz)
    margin = cfg.chirp_hz_s2 * 1200.0  # a chirp changes the drift by at most this between scans of a cadence
    lo = max(cfg.min_drift_hz_s - margin, 0.0) * to_chan
    hi = (cfg.max_drift_hz_s + margin) * to_chan
    pos = np.arange(math.floor(lo / step), math.ceil(hi / step) + 1) * step
    pos = pos[pos > 0]
    return np.concatenate([-pos[::-1], pos])


def scan_map(zb_TxN: np.ndarray, drifts: np.ndarray, min_track_frac: float = 0.5) -> np.ndarray:
    """Standardised track statistics ``(D, N)`` of a binned scan at every drift and channel.

    Track ``c + d * (t - t_mid)``, boxcar of :func:`smear_width` channels, sum over its
    pixels inside the data / sqrt(their number); NaN when fewer than ``min_track_frac`` of its
    pixels are inside. Each drift's row: (value - median) / (1.4826 MAD) over channels.
    """
    z = np.asarray(zb_TxN, np.float64)
    t, n = z.shape
    inside = np.isfinite(z)
    zero = np.zeros((t, 1))
    csum = np.concatenate([zero, np.cumsum(np.where(inside, z, 0.0), axis=1)], axis=1).ravel()
    cnt = np.concatenate([zero, np.cumsum(inside, axis=1)], axis=1).ravel()
    dt = np.arange(t)[:, None] - (t - 1) / 2.0
    row = (np.arange(t) * (n + 1))[:, None]
    chans = np.arange(n, dtype=np.float64)[None, :]
    out = np.full((len(drifts), n), np.nan, np.float32)
    for i, d in enumerate(drifts):
        w = smear_width(d)
        lo = np.rint(chans + d * dt - (w - 1) / 2.0).astype(np.int64)
        hi = np.clip(lo + w, 0, n) + row
        lo = np.clip(lo, 0, n) + row
        total = (csum.take(hi) - csum.take(lo)).sum(axis=0)
        pixels = (cnt.take(hi) - cnt.take(lo)).sum(axis=0)
        stat = np.where(pixels >= min_track_frac * t * w, total / np.sqrt(np.maximum(pixels, 1.0)), np.nan)
        ok = np.isfinite(stat)
        if ok.sum() < 32:
            continue
        loc = np.median(stat[ok])
        scale = max(1.4826 * float(np.median(np.abs(stat[ok] - loc))), 1e-6)
        out[i] = (stat - loc) / scale
    return out


def track_extent(drift_chan: np.ndarray, n_int: int) -> np.ndarray:
    """Half-extent (binned channels) of a track over a scan: its drift over half the scan plus half its boxcar."""
    d = np.abs(np.asarray(drift_chan, np.float64))
    return d * (n_int - 1) / 2.0 + (np.rint(d) + 1) / 2.0


def mask_strong(m_DxN: np.ndarray, drifts: np.ndarray, n_int: int, strong_z: float, margin: int = 2) -> np.ndarray:
    """The map with every track that touches a strong line (a value above ``strong_z``) set to NaN.

    A strong line (RFI of SNR 30-1000, or a bright signal) lifts not only its own track but
    every track that crosses it in a few integrations: those side lobes, paired with two
    scans of positive noise, made false joint peaks. The channels a strong track covers over
    the scan (plus ``margin``) are marked, and each drift's tracks whose own span meets a
    marked channel are left out.
    """
    n = m_DxN.shape[1]
    strong = np.nan_to_num(m_DxN, nan=-np.inf) > strong_z
    if not strong.any():
        return m_DxN
    marked = np.zeros(n + 1, np.int64)
    di, ci = np.nonzero(strong)
    ext = np.ceil(track_extent(drifts[di], n_int)).astype(np.int64) + margin
    np.add.at(marked, np.clip(ci - ext, 0, n), 1)
    np.add.at(marked, np.clip(ci + ext + 1, 0, n), -1)
    covered = np.concatenate([[0], np.cumsum(marked[:n]) > 0]).cumsum()  # covered[k]: marked channels below k
    out = m_DxN.copy()
    chans = np.arange(n)
    for i, d in enumerate(drifts):
        e = int(math.ceil(track_extent(d, n_int)))
        lo, hi = np.clip(chans - e, 0, n), np.clip(chans + e + 1, 0, n)
        out[i, covered[hi] - covered[lo] > 0] = np.nan
    return out


# --------------------------------------------------------------------------- the joint statistic


def trial_grid(cfg: JointSearchConfig, geo: list[ScanGeometry]) -> tuple[np.ndarray, np.ndarray]:
    """Fine drifts (Hz/s, both signs) and chirps (Hz/s^2) searched for a triplet ``geo`` (middle = reference)."""
    t_ref = geo[len(geo) // 2].t_mid_s
    span = max(abs(g.t_mid_s - t_ref) for g in geo)
    bin_hz = min(abs(g.bin_hz) for g in geo)
    step = cfg.drift_step_chan * bin_hz / max(span, 1e-9)
    pos = np.arange(cfg.min_drift_hz_s, cfg.max_drift_hz_s + 0.5 * step, step)
    drifts = np.concatenate([-pos[::-1], pos])
    if cfg.chirp_hz_s2 <= 0:
        return drifts, np.zeros(1)
    c_step = 2.0 * cfg.chirp_step_chan * bin_hz / max(span * span, 1e-9)
    nc = math.ceil(cfg.chirp_hz_s2 / c_step - 1e-9)
    return drifts, np.linspace(-cfg.chirp_hz_s2, cfg.chirp_hz_s2, 2 * nc + 1)


def _carry(g: ScanGeometry, ref: ScanGeometry, drift_hz_s, chirp_hz_s2, scan_drift_grid: np.ndarray):
    """Channel shift (reference channel -> this scan's channel) and per-scan drift index of each trial."""
    dt = g.t_mid_s - ref.t_mid_s
    offset_hz = drift_hz_s * dt + 0.5 * chirp_hz_s2 * dt * dt + (ref.f0_hz - g.f0_hz)
    shift = np.rint(offset_hz / g.bin_hz).astype(np.int64)
    d_chan = (drift_hz_s + chirp_hz_s2 * dt) * g.tsamp_s / g.bin_hz
    step = scan_drift_grid[1] - scan_drift_grid[0] if scan_drift_grid.size > 1 else 1.0
    idx = np.abs(scan_drift_grid[None, :] - np.atleast_1d(d_chan)[:, None]).argmin(axis=1)
    far = np.abs(scan_drift_grid[idx] - d_chan) > step  # outside the grid (never for the configured range)
    return shift, np.where(far, -1, idx)


def _gather(m_DxN: np.ndarray, idx: int, shift: int, n_ref: int) -> np.ndarray:
    """Map row ``idx`` read at channels ``arange(n_ref) + shift`` (NaN outside)."""
    out = np.full(n_ref, np.nan, np.float32)
    if idx < 0:
        return out
    n = m_DxN.shape[1]
    a, b = max(0, -shift), min(n_ref, n - shift)
    if b > a:
        out[a:b] = m_DxN[idx, a + shift : b + shift]
    return out


TAIL_X = np.arange(3.0, 7.01, 0.5)  # levels at which the joint statistic's tail is counted


def joint_triplet(maps: list[np.ndarray], geo: list[ScanGeometry], scan_drift_grid: np.ndarray,
                  cfg: JointSearchConfig) -> tuple[pd.DataFrame, int, np.ndarray]:
    """The joint statistic of one triplet of scans (the middle one is the reference).

    Returns ``(peaks, n_trials, tail)``: the peaks (:data:`PEAK_COLUMNS`: reference channel,
    statistic, drift, chirp, the three map values, the three scans' channels and drift
    indices) that are local maxima over ``+- peak_half_chan`` reference channels of the best
    trial with a statistic of at least ``prethreshold`` (among the trials where every scan's
    value is at least ``min_component``); the number of trials with all three values present;
    the number of those trials (any components) with a statistic above each of :data:`TAIL_X`.
    """
    ref = geo[len(geo) // 2]
    n_ref = maps[len(geo) // 2].shape[1]
    drifts, chirps = trial_grid(cfg, geo)
    best = np.full(n_ref, -np.inf, np.float32)
    best_k = np.zeros(n_ref, np.int64)
    n_trials = 0
    tail = np.zeros(TAIL_X.size, np.int64)
    combos = [(d, c) for d in drifts for c in chirps]
    carried = [_carry(g, ref, np.array([d for d, _ in combos]), np.array([c for _, c in combos]), scan_drift_grid)
               for g in geo]
    norm = 1.0 / math.sqrt(len(geo))
    for k in range(len(combos)):
        parts = [np.minimum(_gather(m, int(idx[k]), int(sh[k]), n_ref), cfg.cap) for m, (sh, idx) in zip(maps, carried)]
        j = np.sum(parts, axis=0) * norm
        ok = np.isfinite(j)
        n_trials += int(ok.sum())
        big = j[ok & (j > TAIL_X[0])]
        if big.size:
            tail += (big[:, None] > TAIL_X[None, :]).sum(axis=0)
        # only trials that every scan supports: one scan's huge patch (a strong RFI line met by a
        # track) cannot make a peak, nor hide a real line near it
        better = ok & (np.min(parts, axis=0) >= cfg.min_component) & (j > best)
        best[better] = j[better]
        best_k[better] = k
    peaks = _local_maxima(best, cfg.peak_half_chan, cfg.prethreshold)
    rows = []
    for c in peaks:
        k = int(best_k[c])
        chans = [int(c + sh[k]) for sh, _ in carried]
        idxs = [int(idx[k]) for _, idx in carried]
        comps = [float(m[i, ch]) for m, ch, i in zip(maps, chans, idxs)]
        rows.append({"ref_chan": int(c), "stat": float(best[c]), "drift_hz_s": float(combos[k][0]),
                     "chirp_hz_s2": float(combos[k][1]), "components": comps, "chans": chans, "drift_idx": idxs})
    return pd.DataFrame(rows, columns=list(PEAK_COLUMNS)), n_trials, tail


def _local_maxima(best: np.ndarray, half: int, level: float) -> np.ndarray:
    """Channels whose value is at least ``level`` and the largest within ``+- half`` channels (first of ties)."""
    cand = np.flatnonzero(best >= level)
    keep = []
    for c in cand[np.argsort(-best[cand], kind="stable")]:
        if all(abs(c - k) > half for k in keep):
            keep.append(int(c))
    return np.array(sorted(keep), np.int64)


# --------------------------------------------------------------------------- decision


def bonferroni_p(stat, n_trials: int) -> np.ndarray:
    """``min(1, n_trials * P(N(0, 1) > stat))``: the run-wide p-value of a joint peak."""
    return np.minimum(1.0, float(n_trials) * ndtr(-np.asarray(stat, np.float64)))


def off_values(maps: list[np.ndarray], geo: list[ScanGeometry], ref: ScanGeometry, scan_drift_grid: np.ndarray,
               peak: dict, cfg: JointSearchConfig) -> list[float]:
    """Per other scan (OFF): the largest map value near the peak's carried track (``-inf`` when outside)."""
    shifts_idx = [_carry(g, ref, np.array([peak["drift_hz_s"]]), np.array([peak["chirp_hz_s2"]]), scan_drift_grid)
                  for g in geo]
    out = []
    h = cfg.veto_half_chan
    for m, (sh, idx) in zip(maps, shifts_idx):
        c, i = int(peak["ref_chan"] + sh[0]), int(idx[0])
        if i < 0:
            out.append(-np.inf)
            continue
        win = m[max(i - 1, 0) : i + 2, max(c - h, 0) : max(c + h + 1, 0)]
        win = win[np.isfinite(win)]
        out.append(float(win.max()) if win.size else -np.inf)
    return out


def decide_peaks(peaks: pd.DataFrame, n_trials_run: int, cfg: JointSearchConfig) -> pd.DataFrame:
    """Each peak's run-wide p-value and verdict: "pass", "in_off" (an OFF scan shows it),
    "weak_scan" (an ON scan contributes less than ``min_component``) or "not_significant".

    ``peaks``: the cadences' peaks with ``off_max`` (the largest OFF map value near the track).
    """
    if peaks.empty:
        return peaks.assign(p=pd.Series(dtype=float), verdict=pd.Series(dtype=object))
    p = bonferroni_p(peaks["stat"].to_numpy(), n_trials_run)
    weak = np.array([min(c) < cfg.min_component for c in peaks["components"]], bool)
    in_off = peaks["off_max"].to_numpy(np.float64) > cfg.veto_z
    sig = p <= cfg.alpha
    verdict = np.select([~sig, in_off, weak], ["not_significant", "in_off", "weak_scan"], "pass")
    return peaks.assign(p=p, verdict=verdict)


def joint_events(decided: pd.DataFrame) -> pd.DataFrame:
    """Catalog events (:data:`seti_auditor.cadence_test.EVENT_COLUMNS`, ``method = "cadence_joint"``) of
    decided peaks: one per ON scan of each, with the peak's ``verdict`` and ``peak_id``.

    ``score`` is the joint statistic, ``z_score`` the scan's own map value, ``p_value`` and
    ``q_value`` the run-wide Bonferroni p-value (a family-wise bound also bounds the FDR);
    the band is the track over the scan (drift at the scan times its duration) plus the
    boxcar. Tile columns are left for the caller (``tile_first = tile_last = -1``).
    """
    events = []
    for pid, r in enumerate(decided.to_dict("records")):
        geos, files = r["geometry"], r["files"]
        t_ref = geos[len(geos) // 2]["t_mid_s"]
        for scan, g, f, chan, comp in zip(r["scans"], geos, files, r["chans"], r["components"]):
            dt = g["t_mid_s"] - t_ref
            drift = r["drift_hz_s"] + r["chirp_hz_s2"] * dt
            centre_hz = g["f0_hz"] + chan * g["bin_hz"]
            width = smear_width(drift * g["tsamp_s"] / g["bin_hz"])
            half_hz = abs(drift) * f["n_int"] * g["tsamp_s"] / 2.0 + width * abs(g["bin_hz"]) / 2.0
            events.append({
                "source_file": f["source_file"], "source_name": f["source_name"], "file_id": int(f["file_id"]),
                "cadence_id": str(r["cadence_id"]), "scan_index": int(scan),
                "on_source": True, "freq_min_mhz": (centre_hz - half_hz) / 1e6, "freq_max_mhz": (centre_hz + half_hz) / 1e6,
                "tstart_mjd": float(f["tstart_mjd"]), "tstop_mjd": float(f["tstop_mjd"]), "score": float(r["stat"]),
                "z_score": float(comp), "p_value": float(r["p"]), "q_value": float(r["p"]), "drift_hz_s": float(drift),
                "peak_freq_mhz": centre_hz / 1e6, "n_tiles": 0, "tile_first": -1, "tile_last": -1, "tiles": "",
                "n_on_scans": len(geos), "n_off_checked": int(r["n_off_checked"]), "cadence_test": "pass",
                "method": "cadence_joint", "verdict": str(r["verdict"]), "peak_id": pid,
            })  # fmt: skip
    return pd.DataFrame(events)
