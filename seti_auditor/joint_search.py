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
   (:func:`bonferroni_p`), compared with the run's level (:func:`run_alpha`): ``alpha`` false
   lines per run in expectation, or ``alpha_per_gb`` per GB of the searched cadences' files
   when that is larger. A fixed level per run would make the threshold rise with the run's
   size (``sqrt(2 ln N)``, 2-channel bins: 6.65 sigma for 177 MB, 6.91 for 1 GB, ~8 for 1 TB) and a
   survey's sensitivity depend on how its archive is batched; a level per GB keeps the
   false-alarm rate per GB (the issue's target: at most 1) and the threshold nearly fixed.
   The OFF triplet of each cadence, with the same trials and time geometry, measures the
   tail (docs/statistics.md).
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
    """The cadence-coherent joint search (see the module docstring): for fast lines as the defaults are, for slow
    lines as :data:`SLOW_JOINT` is."""

    enabled: bool = True  # run it after the cadence line search (SNR >= 25 recall 0.94 -> 1.00 at 0 false; docs/statistics.md)
    min_drift_hz_s: float = 0.6  # smallest |drift| searched (Hz/s): ~where the full-resolution tile search stops
    max_drift_hz_s: float = 2.5  # largest |drift| searched (Hz/s): ~the tile-level binned ("fast") search's reach
    fast_bin: int = 2  # channels summed into one binned channel before the search (4: 0.85 of a fast line's
    # optimal S/N against 0.90 with 2, measured by injection, at half the maps' cost; docs/statistics.md)
    drift_step_chan: float = 2.0  # fine-drift step: the outer scans' positions move <= this many binned channels
    chirp_hz_s2: float = 3e-4  # largest |chirp| searched (Hz/s^2); 0: straight lines only
    chirp_step_chan: float = 2.0  # chirp step: the outer scans' positions move <= this many binned channels
    min_track_frac: float = 0.5  # a per-scan track needs this fraction of its pixels inside the data
    cap: float = 5.0  # each scan's map value is clipped at this before the sum: one scan's outlier cannot carry it
    strong_z: float = 7.0  # per-scan map values above this are strong lines (RFI, or a line the tile search
    # reports by itself): every track of the scan that touches one is left out of the joint sum (mask_strong)
    prethreshold: float = 4.5  # peaks with a joint statistic below this are not returned by a cadence task
    peak_half_chan: int = 8  # peaks: local maxima over +- this many binned channels (reference time)
    alpha: float = 0.01  # Bonferroni level over every trial of the run (expected false lines per run <= alpha) ...
    alpha_per_gb: float = 0.02  # ... or this many per GB of the cadences' files, if larger (run_alpha): past
    # alpha / alpha_per_gb = 0.5 GB the budget grows with the data, so the threshold stops rising with the run's size
    min_component: float = 0.5  # each ON scan's map value at the line must be at least this (sigma)
    veto_z: float = 4.0  # an OFF scan shows the line (RFI) when its map exceeds this near the carried position
    veto_half_chan: int = 2  # ... within this many binned channels (and one per-scan drift step) of it
    max_cadence_gb: float = 8.0  # a cadence whose joint searches would hold more memory than this (cadence_bytes)
    # is not searched but counted as skipped: each search keeps six scans' maps of drifts x channels, whole files
    # wide (the benchmark's 65536 channels: 0.5 GB for both searches; a 64 M-channel BL file: hundreds of GB)

    def __post_init__(self) -> None:
        if not 0 <= self.min_drift_hz_s < self.max_drift_hz_s:
            raise ValueError(f"JointSearchConfig needs 0 <= min_drift_hz_s < max_drift_hz_s, got {self}")
        if self.fast_bin < 1 or self.drift_step_chan <= 0 or self.chirp_step_chan <= 0 or self.chirp_hz_s2 < 0:
            raise ValueError(f"invalid JointSearchConfig {self}")
        if not 0 < self.alpha < 1 or self.alpha_per_gb < 0 or self.peak_half_chan < 0 or self.veto_half_chan < 0:
            raise ValueError(f"invalid JointSearchConfig {self}")
        if self.max_cadence_gb <= 0:
            raise ValueError(f"JointSearchConfig needs max_cadence_gb > 0, got {self}")
        if self.cap <= 0 or self.strong_z <= 0 or not 0 < self.min_track_frac <= 1:
            raise ValueError(f"JointSearchConfig needs cap, strong_z > 0 and 0 < min_track_frac <= 1, got {self}")


# the slow search: the same statistic at full resolution (no binning) from zero drift up to where the fast search
# starts. Slow lines stay within ~1-2 channels per integration, so the tile-level searches see them, but one scan
# at a time: an SNR-8 line at 0.2 Hz/s (~7 sigma in one scan at best, ~12 over the three ON scans) is mostly below
# what one scan can report at the archive's false-alarm level (docs/statistics.md). Such a line is ~2 channels
# wide, so the drift grid is twice as fine as the fast search's (in channels): with steps that move the outer scans
# by 2 channels, an SNR-8 line's outer scan fell from 5.6 to 1.6 sigma between grid points (tests/test_joint_search.py).
SLOW_JOINT = JointSearchConfig(min_drift_hz_s=0.0, max_drift_hz_s=0.6, fast_bin=1, drift_step_chan=1.0)


@dataclasses.dataclass(frozen=True)
class ScanGeometry:
    """Where one scan lies: its time, its binned channels' frequencies and its sampling."""

    t_mid_s: float  # mid-time of the scan (s, any common origin)
    f0_hz: float  # centre frequency of binned channel 0 (Hz)
    bin_hz: float  # signed width of a binned channel (Hz; negative when frequency falls with channel)
    tsamp_s: float  # integration time (s)


# --------------------------------------------------------------------------- per scan


def bin_rows(z_TxL: np.ndarray, fast_bin: int, box: int = 4, block: int | None = None, scored: bool = False
             ) -> np.ndarray:
    """Normal scores per row, summed over ``fast_bin`` channels / ``sqrt(fast_bin)``: ``(T, L // fast_bin)``.
    ``scored``: ``z_TxL`` already holds them (:func:`seti_auditor.scoring.normal_scores`; computed once for two
    binnings, the same values).

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
    z = z_TxL if scored else normal_scores(z_TxL)
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
    (the benchmark's fast signals: ~6.5 binned channels of 2 per integration, boxcar 8).
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
    zero = pos[pos == 0][:1]  # a search down to zero drift (the slow search) has it once
    pos = pos[pos > 0]
    return np.concatenate([-pos[::-1], zero, pos])


def cadence_bytes(cfgs, n_int: int, nchans: int, tsamp_s: float, foff_hz: float) -> int:
    """Memory (bytes, float32) that one cadence's joint searches ``cfgs`` hold at their peak: for the scan being
    read, its tiles, residual, stitched strip and normal scores (``n_int x nchans`` each); for every search, the
    six scans' maps and their masked copies (per-scan drifts x binned channels)."""
    total = 4 * 4 * n_int * nchans
    for cfg in cfgs:
        drifts = scan_drifts(cfg, tsamp_s, foff_hz * cfg.fast_bin, n_int).size
        total += 4 * 2 * 6 * drifts * (nchans // cfg.fast_bin)
    return int(total)


def _track_offsets(d: float, n_int: int) -> tuple[int, np.ndarray, np.ndarray, np.ndarray]:
    """Boxcar width ``w`` of drift ``d`` and, per integration, ``d * (t - t_mid)``, the offset
    ``rint(d * (t - t_mid) - (w - 1) / 2)`` of the boxcar's first channel from the track's channel,
    and whether that rounding is a tie.

    Channel ``c``'s boxcar starts at ``rint(c + d * (t - t_mid) - (w - 1) / 2)``: ``c`` plus the
    offset for every channel, except in a tie (the value before rounding within ``1e-6`` of a half
    integer), where the float sum rounds half to even (or not, as its last bits fall) and
    neighbouring channels' boxcars go different ways (:func:`_tie_starts`).
    """
    w = smear_width(d)
    ddt = d * (np.arange(n_int) - (n_int - 1) / 2.0)
    x = ddt - (w - 1) / 2.0
    tie = np.abs(np.abs(x - np.floor(x)) - 0.5) <= 1e-6
    return w, ddt, np.rint(x).astype(np.int64), tie


def _tie_starts(chans_f: np.ndarray, ddt: float, w: int) -> np.ndarray:
    """Each channel's boxcar start in an integration whose rounding is a tie, computed channel by channel."""
    first = chans_f + ddt
    first -= (w - 1) / 2.0
    return np.rint(first, out=first).astype(np.int64)


def _median(v: np.ndarray) -> float:
    """``np.median`` of a 1-d float64 array without NaN (the same value; ``v`` may be reordered).

    The middle order statistics are selected among the values between two bounds taken near
    the median of a sparse sample (after counting the values below them): a partition of about
    a fifth of the array instead of all of it. Should the bounds miss the middle (a tail
    probability of ~1e-5), the whole array is partitioned.
    """
    h = v.size // 2
    ks = [h] if v.size % 2 else [h - 1, h]
    mid = v
    if v.size >= 4096:
        s = np.sort(v[:: v.size // 512])
        q, margin = s.size // 2, 48  # ~4 standard deviations of the sample's middle quantile
        lo, hi = s[max(q - margin, 0)], s[min(q + margin, s.size - 1)]
        below = int(np.count_nonzero(v < lo))
        sel = v[(v >= lo) & (v <= hi)]  # the values ranked below + 0 .. below + sel.size - 1
        if below <= ks[0] and ks[-1] < below + sel.size:
            mid, ks = sel, [k - below for k in ks]
    mid.partition(ks)
    return float(mid[ks[0]]) if len(ks) == 1 else float((mid[ks[0]] + mid[ks[1]]) / 2.0)


def _padded_cumsum(x_TxN: np.ndarray, pad: int) -> np.ndarray:
    """Zero-prefixed cumulative sum along channels, index ``pad + k`` holding that of ``clip(k, 0, n)``."""
    t, n = x_TxN.shape
    out = np.empty((t, n + 1 + 2 * pad), np.float64)
    out[:, : pad + 1] = 0.0
    np.cumsum(x_TxN, axis=1, out=out[:, pad + 1 : pad + 1 + n])
    out[:, pad + 1 + n :] = out[:, pad + n : pad + n + 1]
    return out


def _row_slice(box_row: np.ndarray, off: int, starts: np.ndarray | None, pad: int, n: int) -> np.ndarray:
    """``box_row[pad + first(c)]`` for every channel ``c``: a view when ``first(c) = c + off``, else
    gathered at ``starts`` (a tie's per-channel starts)."""
    if starts is None:
        return box_row[pad + off : pad + off + n]
    return box_row.take(starts + pad)


def scan_map(zb_TxN: np.ndarray, drifts: np.ndarray, min_track_frac: float = 0.5) -> np.ndarray:
    """Standardised track statistics ``(D, N)`` of a binned scan at every drift and channel.

    Track ``c + d * (t - t_mid)``, boxcar of :func:`smear_width` channels, sum over its
    pixels inside the data / sqrt(their number); NaN when fewer than ``min_track_frac`` of its
    pixels are inside. Each drift's row: (value - median) / (1.4826 MAD) over channels.

    Integration ``t``'s boxcar starts at channel ``rint(c + d * (t - t_mid) - (w - 1) / 2)``
    (:func:`_track_offsets`): ``c`` plus one offset for every channel, so each integration's
    boxcar sums are one contiguous slice of the row's padded cumulative sum (no per-channel
    index arrays), except in integrations where the offset before rounding is a half integer
    (e.g. the first and last of an even boxcar at drifts that are multiples of the grid step,
    for 16 integrations): there ``rint`` rounds half to even, so even and odd channels' boxcars
    go different ways, and those integrations are gathered channel by channel. The map is
    therefore the same, bit for bit, as the per-channel formula's (tests/test_joint_search.py).
    """
    z = np.asarray(zb_TxN, np.float64)
    t, n = z.shape
    out = np.full((len(drifts), n), np.nan, np.float32)
    if not len(drifts) or not n:
        return out
    inside = np.isfinite(z)
    chans = np.arange(n)
    chans_f = chans.astype(np.float64)
    tracks = [_track_offsets(float(d), t) for d in drifts]
    # a tie's starts are within one channel of the offset's: every boxcar stays inside the padded sums
    pad = max(int(np.abs(offs).max()) + 1 + w for w, _, offs, _ in tracks)
    csum = _padded_cumsum(np.where(inside, z, 0.0), pad)
    bad_rows = np.flatnonzero(~inside.all(axis=1))  # rows with absent pixels: counted out of the tracks' pixels
    bsum = _padded_cumsum((~inside[bad_rows]).astype(np.float64), pad) if bad_rows.size else None
    edge = chans if 2 * pad >= n else np.concatenate([chans[:pad], chans[n - pad :]])  # tracks that may leave [0, n)
    for w in sorted({tr[0] for tr in tracks}):
        box = csum[:, w:] - csum[:, :-w]  # box[r, pad + k]: the sum over channels [k, k + w) of row r, clipped
        bbox = bsum[:, w:] - bsum[:, :-w] if bsum is not None else None
        for i in (i for i, tr in enumerate(tracks) if tr[0] == w):
            _, ddt, offs, tie = tracks[i]
            offs = offs.tolist()
            starts = [_tie_starts(chans_f, ddt[r], w) if tie[r] else None for r in range(t)]
            total = _row_slice(box[0], offs[0], starts[0], pad, n).copy()
            for r in range(1, t):
                total += _row_slice(box[r], offs[r], starts[r], pad, n)
            lo = np.stack([edge + o if s is None else s[edge] for o, s in zip(offs, starts)])
            pixels = np.full(n, float(t * w))
            pixels[edge] = (np.clip(lo + w, 0, n) - np.clip(lo, 0, n)).sum(axis=0)
            for j, r in enumerate(bad_rows):
                pixels -= _row_slice(bbox[j], offs[r], starts[r], pad, n)
            stat = np.where(pixels >= min_track_frac * t * w, total / np.sqrt(np.maximum(pixels, 1.0)), np.nan)
            v = stat[np.isfinite(stat)]
            if v.size < 32:
                continue
            loc = _median(v)
            v -= loc
            scale = max(1.4826 * _median(np.abs(v, out=v)), 1e-6)
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
    strong = m_DxN > strong_z  # NaN compares False
    if not strong.any():
        return m_DxN
    marked = np.zeros(n + 1, np.int64)
    di, ci = np.nonzero(strong)
    ext = np.ceil(track_extent(drifts[di], n_int)).astype(np.int64) + margin
    np.add.at(marked, np.clip(ci - ext, 0, n), 1)
    np.add.at(marked, np.clip(ci + ext + 1, 0, n), -1)
    covered = np.concatenate([[0], np.cumsum(marked[:n]) > 0]).cumsum()  # covered[k]: marked channels below k
    out = m_DxN.copy()
    extents = np.ceil(track_extent(drifts, n_int)).astype(np.int64)
    for e in np.unique(extents):  # a track of half-extent e at channel c spans [c - e, c + e]
        e = int(e)
        padded = np.concatenate([np.zeros(e, covered.dtype), covered, np.full(e, covered[-1])])  # [e + k]: clip(k)
        hit = padded[2 * e + 1 : 2 * e + 1 + n] - padded[:n] > 0
        if hit.any():
            rows = np.flatnonzero(extents == e)
            out[np.ix_(rows, np.flatnonzero(hit))] = np.nan
    return out


# --------------------------------------------------------------------------- the joint statistic


def trial_grid(cfg: JointSearchConfig, geo: list[ScanGeometry]) -> tuple[np.ndarray, np.ndarray]:
    """Fine drifts (Hz/s, both signs) and chirps (Hz/s^2) searched for a triplet ``geo`` (middle = reference)."""
    t_ref = geo[len(geo) // 2].t_mid_s
    span = max(abs(g.t_mid_s - t_ref) for g in geo)
    bin_hz = min(abs(g.bin_hz) for g in geo)
    step = cfg.drift_step_chan * bin_hz / max(span, 1e-9)
    pos = np.arange(cfg.min_drift_hz_s, cfg.max_drift_hz_s + 0.5 * step, step)
    drifts = np.concatenate([-pos[::-1][: pos.size - int(pos[0] == 0)], pos])  # zero drift once
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


TAIL_X = np.arange(3.0, 7.01, 0.5)  # levels at which the joint statistic's tail is counted
_BATCH = 16  # combos whose joint statistics are counted (trials, tail) together in joint_triplet


def _inf_map(m_DxN: np.ndarray, cap: float, floor: float | None = None) -> np.ndarray:
    """``min(m, cap)`` as float32 with NaN (and, given ``floor``, values below it) as ``-inf``.

    ``-inf`` propagates through the joint sum exactly as NaN did (no ``+inf`` survives the cap),
    so a sum is finite exactly where all three values are present (and at least ``floor``).
    """
    out = np.minimum(np.asarray(m_DxN, np.float32), np.float32(cap))
    if floor is None:
        return np.fmax(out, -np.inf, out=out)  # fmax(NaN, -inf) = -inf
    return np.where(out >= floor, out, np.float32(-np.inf))


def joint_triplet(maps: list[np.ndarray], geo: list[ScanGeometry], scan_drift_grid: np.ndarray,
                  cfg: JointSearchConfig) -> tuple[pd.DataFrame, int, np.ndarray]:
    """The joint statistic of one triplet of scans (the middle one is the reference).

    Returns ``(peaks, n_trials, tail)``: the peaks (:data:`PEAK_COLUMNS`: reference channel,
    statistic, drift, chirp, the three map values, the three scans' channels and drift
    indices) that are local maxima over ``+- peak_half_chan`` reference channels of the best
    trial with a statistic of at least ``prethreshold`` (among the trials where every scan's
    value is at least ``min_component``); the number of trials with all three values present;
    the number of those trials (any components) with a statistic above each of :data:`TAIL_X`.

    Each trial's statistic is ``(v0 + v1 + v2) * (1 / sqrt(3))`` in float32, the ``v`` the
    scans' capped map values read through views of the maps (no per-trial copies). The best
    trial per channel is a running maximum of the sums over the maps whose values below
    ``min_component`` are ``-inf`` (the scaling is monotone, so it commutes with the maximum);
    the trial that gives a peak its maximum (the first, as a strict running update would keep)
    is found afterwards at the peaks' channels only.
    """
    ref = geo[len(geo) // 2]
    n_ref = maps[len(geo) // 2].shape[1]
    drifts, chirps = trial_grid(cfg, geo)
    n_trials = 0
    tail = np.zeros(TAIL_X.size, np.int64)
    combos = [(d, c) for d in drifts for c in chirps]
    carried = [_carry(g, ref, np.array([d for d, _ in combos]), np.array([c for _, c in combos]), scan_drift_grid)
               for g in geo]
    norm = np.float32(1.0 / math.sqrt(len(geo)))
    full = [_inf_map(m, cfg.cap) for m in maps]  # the statistic: trials and tail
    # the best trial only among trials that every scan supports: one scan's huge patch (a strong RFI line met by
    # a track) cannot make a peak, nor hide a real line near it
    support = [_inf_map(m, cfg.cap, cfg.min_component) for m in maps]
    # per combo, the reference channels [a, b) that every scan's shifted row covers (elsewhere a value is absent)
    a = np.zeros(len(combos), np.int64)
    b = np.full(len(combos), n_ref, np.int64)
    for m, (sh, idx) in zip(maps, carried):
        a = np.maximum(a, -sh)
        b = np.minimum(b, np.where(idx < 0, 0, m.shape[1] - sh))
    a, b = a.tolist(), b.tolist()
    rows_of = [idx.tolist() for _, idx in carried]
    shifts = [sh.tolist() for sh, _ in carried]
    lowest = np.float32(0.999 * TAIL_X[0] / norm)  # a sum at most this has a statistic below TAIL_X[0]
    best = np.full(n_ref, -np.inf, np.float32)
    part = np.empty(n_ref, np.float32)
    batch = np.empty((_BATCH, n_ref), np.float32)
    for k0 in range(0, len(combos), _BATCH):
        rows = batch[: min(_BATCH, len(combos) - k0)]
        for k, row in enumerate(rows, start=k0):
            lo, hi = a[k], b[k]
            if hi <= lo:
                row.fill(-np.inf)
                continue
            row[:lo] = -np.inf
            row[hi:] = -np.inf
            j, s = row[lo:hi], part[lo:hi]
            for q, (f, u, i, o) in enumerate(zip(full, support, rows_of, shifts)):
                v, w = f[i[k], lo + o[k] : hi + o[k]], u[i[k], lo + o[k] : hi + o[k]]
                if q == 0:
                    v0, w0 = v, w
                elif q == 1:
                    np.add(v0, v, out=j)
                    np.add(w0, w, out=s)
                else:
                    j += v
                    s += w
            if len(full) == 1:
                j[:], s[:] = v0, w0
            np.maximum(best[lo:hi], s, out=best[lo:hi])
        n_trials += int(np.count_nonzero(np.isfinite(rows)))  # the sums are finite or -inf
        big = rows[rows > lowest] * norm  # every statistic above TAIL_X[0], and a few just below
        big = big[big > TAIL_X[0]]
        if big.size:
            tail += (big[:, None] > TAIL_X[None, :]).sum(axis=0)
    best *= norm
    peaks = _local_maxima(best, cfg.peak_half_chan, cfg.prethreshold)
    best_k = _first_best(peaks, best, support, carried, norm)
    rows = []
    for c, k in zip(peaks, best_k):
        chans = [int(c + sh[k]) for sh, _ in carried]
        idxs = [int(idx[k]) for _, idx in carried]
        comps = [float(m[i, ch]) for m, ch, i in zip(maps, chans, idxs)]
        rows.append({"ref_chan": int(c), "stat": float(best[c]), "drift_hz_s": float(combos[k][0]),
                     "chirp_hz_s2": float(combos[k][1]), "components": comps, "chans": chans, "drift_idx": idxs})
    return pd.DataFrame(rows, columns=list(PEAK_COLUMNS)), n_trials, tail


def _first_best(chans: np.ndarray, best: np.ndarray, support: list[np.ndarray], carried: list, norm: np.float32
                ) -> np.ndarray:
    """Per reference channel of ``chans``: the first trial whose supported statistic equals ``best`` there."""
    out = np.zeros(len(chans), np.int64)
    for j, c in enumerate(chans):
        stat = None
        for s, (sh, idx) in zip(support, carried):
            ch = c + sh
            inside = (idx >= 0) & (ch >= 0) & (ch < s.shape[1])
            v = np.full(sh.size, -np.inf, np.float32)
            v[inside] = s[idx[inside], ch[inside]]
            stat = v if stat is None else stat + v
        out[j] = int(np.flatnonzero(stat * norm == best[c])[0])
    return out


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


def run_alpha(cfg: JointSearchConfig, gb: float) -> float:
    """The run's Bonferroni level: ``alpha`` per run, or ``alpha_per_gb`` per GB of ``gb`` searched if larger."""
    return min(1.0, max(cfg.alpha, cfg.alpha_per_gb * max(gb, 0.0)))


def decide_peaks(peaks: pd.DataFrame, n_trials_run: int, cfg: JointSearchConfig, alpha: float | None = None
                 ) -> pd.DataFrame:
    """Each peak's run-wide p-value and verdict: "pass", "in_off" (an OFF scan shows it),
    "weak_scan" (an ON scan contributes less than ``min_component``) or "not_significant".

    ``peaks``: the cadences' peaks with ``off_max`` (the largest OFF map value near the track);
    ``alpha``: the run's level (:func:`run_alpha`; None: ``cfg.alpha``).
    """
    if peaks.empty:
        return peaks.assign(p=pd.Series(dtype=float), verdict=pd.Series(dtype=object))
    p = bonferroni_p(peaks["stat"].to_numpy(), n_trials_run)
    weak = np.array([min(c) < cfg.min_component for c in peaks["components"]], bool)
    in_off = peaks["off_max"].to_numpy(np.float64) > cfg.veto_z
    sig = p <= (cfg.alpha if alpha is None else alpha)
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
