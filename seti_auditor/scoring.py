"""Per-tile anomaly scores on the residual of a reconstruction.

Two statistics on the residual ``r = x - recon`` of ``N`` tiles of shape ``T x F``
(integrations x channels):

``"mse"``
    The article's baseline, the mean squared residual of each tile.

``"line"`` (default)
    A de-Doppler line search. The residual is robustly standardised per tile
    (``z``, median 0 and robust sigma 1, see :func:`standardise_residual`) and
    clipped to ``[-clip, clip]``. For every drift ``d`` (channels per
    integration) on a grid from ``-max_drift`` to ``+max_drift``, every boxcar
    width ``w`` and every channel ``c``, the track

    ``{(t, f) : f = c + round(d * (t - t_mid) + phi) + j,  0 <= j < w,  0 <= t < T}``

    with ``t_mid = (T - 1) / 2`` and a sub-channel phase ``phi`` (0 and 1/2 by
    default: with one phase only, a line lying between the grid's rounding
    points loses ~20% of its signal on average; two phases lose ~14%) is summed, and the sum divided by the square
    root of the number of its pixels that fall inside the tile. Under pure
    Gaussian noise every such track statistic is N(0, 1); the tile's score is
    the maximum over drifts, widths and channels (a max of correlated unit
    normals, which :mod:`seti_auditor.stats` calibrates against held-out null
    scores). Boxcars of width > 1 collect signals whose power is smeared over
    several channels per integration (fast drifts). Tracks with fewer than
    ``min_track_frac * T`` integrations inside the tile are ignored.

    Clipping bounds what a single pixel can add to a track of ``n`` pixels to
    ``clip / sqrt(n)`` (1.0 for ``clip=4`` and a 16-pixel track): a few huge RFI
    pixels cannot dominate the maximum, while a faint line (about 1 sigma per
    pixel) is hardly touched by the clip.

The track sums are computed by a scan over integrations that gathers, for all
drifts at once, each row's shifted channels; a boxcar over channels commutes
with the de-Doppler sum, so all widths come from one set of sums by a cumulative
sum along frequency.

Besides the score, the line statistic returns the best track's drift (channels
per integration) and its centre channel at the tile's middle integration
``t_mid`` (a float: boxcar centre), so that a catalog can say where inside the
tile the line is; :func:`drift_to_hz_s` and :func:`chan_to_freq_mhz` convert them.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtri

logger = logging.getLogger(__name__)

_EPS = 1e-12


@dataclasses.dataclass(frozen=True)
class ScoreConfig:
    """How tiles are scored (hashable: it is a static argument of the jitted scorer)."""

    score: str = "line"  # "line" (de-Doppler line search) or "mse" (article baseline)
    max_drift: float = 4.0  # largest |drift| searched, channels per integration
    drift_step: float | None = None  # drift grid step; None: 2 / (T - 1), track ends within ~0.5 ch
    phases: tuple[float, ...] = (0.0, 0.5)  # sub-channel track offsets (lines between channels)
    widths: tuple[int, ...] = (1, 2, 3, 4, 6)  # boxcar widths in channels (smeared fast drifts)
    clip: float = 4.0  # clip of the standardised residual before summing (RFI robustness)
    min_track_frac: float = 0.25  # ignore tracks with fewer integrations inside the tile
    batch_size: int = 1024  # tiles per jitted call in score_tiles (one compiled shape)
    fast_bin: int = 4  # channels summed for a second, coarser search (drifts up to max_drift * fast_bin); 1 = off
    subbands: int = 4  # best track reported per sub-band of the tile, so a strong line cannot hide another
    # divide each integration's residual by its robust spread (an impulse raises a row's noise); off: the demo's noise
    # p-values then failed the uniformity test against the Gumbel null (docs/statistics.md)
    row_scale: bool = False
    blank_lift: float = 0.5  # integrations whose input level is this far (robust sigma) from the tile's are blanked; 0 = off

    def __post_init__(self) -> None:
        object.__setattr__(self, "widths", tuple(int(w) for w in self.widths))
        object.__setattr__(self, "phases", tuple(float(p) for p in self.phases))
        if self.fast_bin < 1 or self.subbands < 1:
            raise ValueError("fast_bin and subbands must be >= 1")
        if self.score not in ("line", "mse"):
            raise ValueError(f"unknown score {self.score!r}; expected 'line' or 'mse'")
        if self.max_drift < 0 or self.clip <= 0 or not self.widths or min(self.widths) < 1:
            raise ValueError(f"invalid ScoreConfig {self}")
        if self.drift_step is not None and self.drift_step <= 0:
            raise ValueError("drift_step must be positive")
        if self.blank_lift < 0:
            raise ValueError("blank_lift must be >= 0 (0 = no impulse blanking)")


class TileScores(NamedTuple):
    """Scores of ``N`` tiles: arrays ``(N,)``, or ``(N, S)`` with ``S = cfg.subbands > 1``."""

    score: np.ndarray  # float32 statistic (larger = more anomalous)
    drift: np.ndarray  # float32 best drift, channels / integration (NaN for "mse")
    chan: np.ndarray  # float32 best track centre channel at t_mid (NaN for "mse")
    width: np.ndarray  # int32 best boxcar width in channels (0 for "mse")


# --------------------------------------------------------------------------- baseline


@jax.jit
def mse_score(x_NxTxF: jax.Array, recon_NxTxF: jax.Array) -> jax.Array:
    """Mean squared residual per tile (the article's score).

    Parameters
    ----------
    x_NxTxF, recon_NxTxF : array (N, T, F)
        Input tiles and their reconstructions, in the same space.

    Returns
    -------
    jax.Array (N,)
        ``mean((x - recon)**2)`` over each tile.
    """
    r = jnp.asarray(x_NxTxF, jnp.float32) - jnp.asarray(recon_NxTxF, jnp.float32)
    return jnp.mean(r * r, axis=(1, 2))


@functools.partial(jax.jit, static_argnames="subbands")
def subband_mse(x_NxTxF: jax.Array, recon_NxTxF: jax.Array, subbands: int) -> jax.Array:
    """Mean squared residual of each of ``subbands`` equal channel ranges of each tile, ``(N, S)``."""
    r = jnp.asarray(x_NxTxF, jnp.float32) - jnp.asarray(recon_NxTxF, jnp.float32)
    n, t, f = r.shape
    return jnp.mean((r * r).reshape(n, t, subbands, f // subbands), axis=(1, 3))


# --------------------------------------------------------------------------- standardisation


def _block_size(n_chan: int) -> int:
    """Pixels per block of the robust first guess: 64-channel row segments, or whole rows."""
    return 64 if n_chan > 128 and n_chan % 64 == 0 else n_chan


def _truncated_sd_factor(c: float) -> float:
    """Standard deviation of a unit normal truncated to ``[-c, c]``."""
    phi = math.exp(-0.5 * c * c) / math.sqrt(2 * math.pi)
    mass = math.erf(c / math.sqrt(2))
    return math.sqrt(1.0 - 2.0 * c * phi / mass)


def standardise_residual(r_NxTxF: jax.Array, refine_clip: float = 4.0) -> jax.Array:
    """Robustly standardise each tile of residuals to median ~0 and sigma ~1.

    A first guess takes the median over blocks (row segments) of the block means
    and standard deviations, which a few RFI pixels or a narrow line cannot move
    much; two refinement passes then take the mean and standard deviation of
    the pixels within ``refine_clip`` guessed sigmas (corrected for the
    truncation). Linear in the number of pixels (no sort of the whole tile).

    Parameters
    ----------
    r_NxTxF : array (N, T, F)
        Residuals.
    refine_clip : float
        Pixels beyond this many sigmas are left out of the refinement.

    Returns
    -------
    jax.Array (N, T, F)
        Standardised residuals (not clipped).
    """
    n, t, f = r_NxTxF.shape
    b = _block_size(f)
    blocks = r_NxTxF.reshape(n, -1, b)
    loc = jnp.median(blocks.mean(-1), axis=1)[:, None, None]
    scale = jnp.median(blocks.std(-1), axis=1)[:, None, None]
    sd_factor = _truncated_sd_factor(refine_clip)
    for _ in range(2):
        z = (r_NxTxF - loc) / (scale + _EPS)
        keep = jnp.abs(z) < refine_clip
        cnt = jnp.maximum(keep.sum(axis=(1, 2), keepdims=True), 1)
        mu = jnp.where(keep, r_NxTxF, 0.0).sum(axis=(1, 2), keepdims=True) / cnt
        var = jnp.where(keep, (r_NxTxF - mu) ** 2, 0.0).sum(axis=(1, 2), keepdims=True) / cnt
        loc, scale = mu, jnp.sqrt(var) / sd_factor
    return (r_NxTxF - loc) / (scale + _EPS)


def _residual_z(x_NxTxF: jax.Array, recon_NxTxF: jax.Array, row_scale: bool = False,
                blank_lift: float = 0.0) -> jax.Array:
    """The standardised residual: each integration's level removed (and its spread), impulse rows blanked.

    A broadband impulse lifts whole integrations: each row's median is removed (a narrowband
    line holds a few channels of a row and hardly moves it). It also raises those rows' noise
    (chi-squared noise grows with the power): a track crossing them sums wider pixels, and
    tiles in an impulse's band were flagged ~3 times as often as elsewhere in the detection
    benchmark (docs/statistics.md). ``row_scale`` divides each row by its MAD-based sigma, which
    a narrowband line does not move either, so every integration weighs the same.

    ``blank_lift > 0``: integrations of the *input* whose median lies more than ``blank_lift``
    from the tile's median row level are set to 0 (impulse blanking, as radio pipelines blank
    impulsive RFI in time). Removing an impulse's level is not enough: its power passes through
    the bandpass like the sky's, so wherever the ingest's bandpass estimate is off (coarse-channel
    roll-off, the DC bin) the impulse rows keep that error times the impulse's level, a
    zero-drift feature of 2-3 integrations that no other scan repeats (the false candidate of the
    1 GB benchmark, seed 2). A row median of 256 noise pixels scatters by ~0.08 sigma, so a lift
    of 0.5 sigma is an impulse, never noise; a narrowband line does not move the median.
    """
    x = jnp.asarray(x_NxTxF, jnp.float32)
    r = x - jnp.asarray(recon_NxTxF, jnp.float32)
    r = r - jnp.median(r, axis=2, keepdims=True)
    if row_scale:
        mad = jnp.median(jnp.abs(r), axis=2, keepdims=True)
        r = r / (mad / jnp.maximum(jnp.median(mad, axis=1, keepdims=True), _EPS) + _EPS)  # rows to the tile's typical spread
    if blank_lift > 0:
        level = jnp.median(x, axis=2, keepdims=True)  # (N, T, 1)
        lifted = jnp.abs(level - jnp.median(level, axis=1, keepdims=True)) > blank_lift
        r = jnp.where(lifted, 0.0, r)  # zero after the level removal: the standardisation sees typical rows
        z = standardise_residual(r)
        return jnp.where(lifted, 0.0, z)
    return standardise_residual(r)


@functools.partial(jax.jit, static_argnames=("clip", "row_scale", "blank_lift"))
def residual_z(x_NxTxF: jax.Array, recon_NxTxF: jax.Array, clip: float, row_scale: bool = False,
               blank_lift: float = 0.0) -> jax.Array:
    """The standardised, clipped residual that the line search sums, ``(N, T, F)``."""
    return jnp.clip(_residual_z(x_NxTxF, recon_NxTxF, row_scale, blank_lift), -clip, clip)


# --------------------------------------------------------------------------- track geometry


@dataclasses.dataclass(frozen=True)
class _TrackPlan:
    """Static geometry of the line search for one tile shape (numpy, built at trace time)."""

    drifts: np.ndarray  # (D,) drift of each track pattern, channels / integration
    phases: np.ndarray  # (D,) sub-channel offset of each pattern at t_mid
    shifts_TxD: np.ndarray  # (T, D) integer channel offset of each track at each integration
    pad: int  # zero padding on each side of the channel axis
    counts_WxDxF: np.ndarray  # pixels inside the tile for each width / drift / channel
    valid_WxDxF: np.ndarray  # tracks long enough to be searched


def drift_grid(n_int: int, cfg: ScoreConfig) -> np.ndarray:
    """Drift grid (channels / integration), symmetric about and including 0."""
    step = cfg.drift_step if cfg.drift_step is not None else 2.0 / max(n_int - 1, 1)
    n_half = int(math.floor(cfg.max_drift / step + 1e-9))
    return np.arange(-n_half, n_half + 1) * step


@functools.lru_cache(maxsize=32)
def _track_plan(n_int: int, n_chan: int, cfg: ScoreConfig) -> _TrackPlan:
    t_mid = (n_int - 1) / 2.0
    patterns: dict[tuple, tuple[float, float]] = {}
    for d in drift_grid(n_int, cfg):
        for ph in cfg.phases:  # identical integer patterns are searched once
            key = tuple(np.rint(d * (np.arange(n_int) - t_mid) + ph).astype(np.int64))
            patterns.setdefault(key, (d, ph))
    shifts = np.array(list(patterns), np.int64).T  # (T, D)
    drifts = np.array([v[0] for v in patterns.values()])
    phases = np.array([v[1] for v in patterns.values()])
    pad = int(np.abs(shifts).max()) + max(cfg.widths)
    inside = np.zeros((n_int, n_chan + 2 * pad))
    inside[:, pad : pad + n_chan] = 1.0
    counts1 = np.zeros((len(drifts), n_chan + max(cfg.widths)))
    for ti in range(n_int):
        for di, s in enumerate(shifts[ti]):
            counts1[di] += inside[ti, pad + s : pad + s + n_chan + max(cfg.widths)]
    csum = np.concatenate([np.zeros((len(drifts), 1)), np.cumsum(counts1, axis=1)], axis=1)
    counts = np.stack([csum[:, w : w + n_chan] - csum[:, :n_chan] for w in cfg.widths])
    rows_inside = counts / np.asarray(cfg.widths, float)[:, None, None]
    valid = rows_inside >= max(cfg.min_track_frac * n_int, 1.0) - 1e-9
    return _TrackPlan(drifts, phases, shifts, pad, counts, valid)


def _dedoppler(z_NxTxF: jax.Array, plan: _TrackPlan, extra: int) -> jax.Array:
    """Width-1 track sums ``S[n, d, c]`` for ``c`` in ``[0, F + extra)`` (scan over rows)."""
    n, _, f = z_NxTxF.shape
    pad = plan.pad
    zp_TxNxL = jnp.pad(jnp.transpose(z_NxTxF, (1, 0, 2)), ((0, 0), (0, 0), (pad, pad)))
    idx_TxDxC = pad + plan.shifts_TxD[:, :, None] + np.arange(f + extra)[None, None, :]

    def add_row(acc, row_and_idx):
        row_NxL, idx_DxC = row_and_idx
        return acc + row_NxL[:, idx_DxC], None

    init = jnp.zeros((n, len(plan.drifts), f + extra), z_NxTxF.dtype)
    sums, _ = jax.lax.scan(add_row, init, (zp_TxNxL, jnp.asarray(idx_TxDxC, jnp.int32)))
    return sums


def _search(z_NxTxF: jax.Array, cfg: ScoreConfig, subbands: int):
    """Best track of a standardised residual per sub-band: (stat, drift, chan, width), each (N, S)."""
    n, t, f = z_NxTxF.shape
    plan = _track_plan(t, f, cfg)
    z = jnp.clip(z_NxTxF, -cfg.clip, cfg.clip)
    wmax = max(cfg.widths)
    sums = _dedoppler(z, plan, wmax)  # (N, D, F + wmax)
    best = jnp.full(sums.shape[:2] + (f,), -jnp.inf, jnp.float32)  # (N, D, F)
    best_w = jnp.zeros(best.shape, jnp.int32)
    box_sum = jnp.zeros_like(best)
    for w in range(1, wmax + 1):  # boxcar sums grow one channel at a time (no cumsum)
        box_sum = box_sum + sums[..., w - 1 : w - 1 + f]
        if w not in cfg.widths:
            continue
        wi = cfg.widths.index(w)
        valid = plan.valid_WxDxF[wi]
        norm = np.where(valid, 1.0 / np.sqrt(np.maximum(plan.counts_WxDxF[wi], 1.0)), 0.0)
        box = jnp.where(valid, box_sum * norm.astype(np.float32), -jnp.inf)
        best_w = jnp.where(box > best, w, best_w)
        best = jnp.maximum(box, best)
    # per sub-band: a max over channels, then argmaxes over drifts and channels
    d = best.shape[1]
    fs = f // subbands
    best_r = best.reshape(n, d, subbands, fs)
    per_drift = jnp.max(best_r, axis=3)  # (N, D, S)
    di = jnp.argmax(per_drift, axis=1)  # (N, S)
    stat = jnp.take_along_axis(per_drift, di[:, None, :], axis=1)[:, 0]  # (N, S)
    row = jnp.take_along_axis(best_r, di[:, None, :, None], axis=1)[:, 0]  # (N, S, fs)
    ci = jnp.argmax(row, axis=2)  # (N, S)
    w_row = jnp.take_along_axis(best_w.reshape(n, d, subbands, fs), di[:, None, :, None], axis=1)[:, 0]
    width = jnp.take_along_axis(w_row, ci[..., None], axis=2)[..., 0]
    drift = jnp.asarray(plan.drifts, jnp.float32)[di]
    phase = jnp.asarray(plan.phases, jnp.float32)[di]
    chan = (ci + jnp.arange(subbands) * fs).astype(jnp.float32) + phase + (width.astype(jnp.float32) - 1.0) / 2.0
    return stat, drift, chan, width


@functools.partial(jax.jit, static_argnames=("cfg", "fast_only"))
def line_score(x_NxTxF: jax.Array, recon_NxTxF: jax.Array, cfg: ScoreConfig = ScoreConfig(), fast_only: bool = False):
    """De-Doppler line statistic of the residual (see the module docstring).

    Two searches: at full resolution (drifts up to ``max_drift`` channels per integration),
    and on the residual summed over ``fast_bin`` adjacent channels (re-standardised), which
    reaches drifts up to ``max_drift * fast_bin`` at the same cost: a signal drifting that
    fast is smeared over several channels per integration anyway. The tile's statistic is
    the larger of the two.

    Parameters
    ----------
    x_NxTxF, recon_NxTxF : array (N, T, F)
        Input tiles and their reconstructions, in the same space.
    cfg : ScoreConfig
        Drift grid, widths, clip (static: one compilation per config and shape).
    fast_only : bool
        Only the coarse (fast-drift) search; used on pairs of neighbouring tiles, so that a
        fast track crossing a tile edge is summed whole.

    Returns
    -------
    tuple of jax.Array (N, S)
        Per sub-band of ``F / subbands`` channels (a track belongs to the sub-band holding
        its centre at the middle integration): ``(score, drift, chan, width)``, the max over
        tracks of ``sum / sqrt(n_pixels)``, the best drift (channels / integration), the
        best track's centre channel (in the tile) at the middle integration, its boxcar width.
    """
    n, t, f = x_NxTxF.shape
    z = _residual_z(x_NxTxF, recon_NxTxF, cfg.row_scale, cfg.blank_lift)
    sb = cfg.subbands
    if f % sb:
        raise ValueError(f"{f} channels do not split into {sb} sub-bands")
    b = cfg.fast_bin
    fast_ok = b > 1 and f % (b * sb) == 0 and f // b >= 2 * max(cfg.widths)
    if fast_only and not fast_ok:
        raise ValueError(f"no fast search possible for {f} channels, fast_bin {b}, {sb} sub-bands")
    if fast_only:
        stat = jnp.full((n, sb), -jnp.inf, jnp.float32)
        drift, chan, width = jnp.zeros_like(stat), jnp.zeros_like(stat), jnp.zeros(stat.shape, jnp.int32)
    else:
        stat, drift, chan, width = _search(z, cfg, sb)
    if fast_ok:
        zb = standardise_residual(jnp.clip(z, -cfg.clip, cfg.clip).reshape(n, t, f // b, b).sum(axis=-1))
        s2, d2, c2, w2 = _search(zb, cfg, sb)
        better = s2 > stat
        stat = jnp.where(better, s2, stat)
        drift = jnp.where(better, d2 * b, drift)
        chan = jnp.where(better, c2 * b + (b - 1) / 2.0, chan)
        width = jnp.where(better, w2 * b, width)
    return stat, drift, chan, width


# --------------------------------------------------------------------------- batch driver


def score_tiles(x_NxTxF, recon_NxTxF, cfg: ScoreConfig = ScoreConfig()) -> TileScores:
    """Score tiles in fixed-size batches (one compiled shape; the last batch is zero-padded).

    Parameters
    ----------
    x_NxTxF, recon_NxTxF : array (N, T, F)
        Input tiles and reconstructions (numpy or jax).
    cfg : ScoreConfig
        Which statistic (``cfg.score``) and its parameters.

    Returns
    -------
    TileScores
        numpy arrays of length ``N``.
    """
    x = np.asarray(x_NxTxF, np.float32)
    recon = np.asarray(recon_NxTxF, np.float32)
    if x.shape != recon.shape or x.ndim != 3:
        raise ValueError(f"tiles {x.shape} and reconstructions {recon.shape} must both be (N, T, F)")
    n = x.shape[0]
    squeeze = (lambda a: a[:, 0]) if cfg.subbands == 1 else (lambda a: a)  # noqa: E731
    if cfg.score == "mse":
        score = np.asarray(subband_mse(x, recon, cfg.subbands)) if n else np.zeros((0, cfg.subbands), np.float32)
        nan = np.full(score.shape, np.nan, np.float32)
        return TileScores(*(squeeze(a) for a in (score.astype(np.float32), nan, nan.copy(),
                                                  np.zeros(score.shape, np.int32))))
    bs = max(1, min(cfg.batch_size, n))
    parts = []
    for start in range(0, n, bs):
        xb, rb = x[start : start + bs], recon[start : start + bs]
        short = bs - xb.shape[0]
        if short:
            fill = np.zeros((short,) + x.shape[1:], np.float32)
            xb, rb = np.concatenate([xb, fill]), np.concatenate([rb, fill])
        out = line_score(xb, rb, cfg)
        parts.append([np.asarray(a)[: bs - short] for a in out])
    if not parts:
        empty = np.zeros((0, cfg.subbands), np.float32)
        return TileScores(*(squeeze(a) for a in (empty, empty.copy(), empty.copy(), empty.astype(np.int32))))
    score, drift, chan, width = (np.concatenate(p) for p in zip(*parts))
    return TileScores(squeeze(score), squeeze(drift), squeeze(chan), squeeze(width.astype(np.int32)))


# --------------------------------------------------------------------------- local search


def _track_sums(csum, cnt, centre_TxDxO, w, min_pixels):
    """Track statistics ``sum / sqrt(pixels)`` of boxcars of ``w`` channels centred on ``centre_TxDxO``."""
    t, n = csum.shape[0], csum.shape[1] - 1
    lo = np.rint(centre_TxDxO - (w - 1) / 2.0).astype(np.int64)
    hi = lo + w
    np.clip(lo, 0, n, out=lo)
    np.clip(hi, 0, n, out=hi)
    row = (np.arange(t) * (n + 1)).reshape((t,) + (1,) * (lo.ndim - 1))
    lo += row
    hi += row
    flat_s, flat_c = csum.ravel(), cnt.ravel()
    total = (flat_s.take(hi) - flat_s.take(lo)).sum(axis=0)
    pixels = (flat_c.take(hi) - flat_c.take(lo)).sum(axis=0)
    return np.where(pixels >= min_pixels, total / np.sqrt(np.maximum(pixels, 1.0)), -np.inf)


def normal_scores(z_TxL: np.ndarray) -> np.ndarray:
    """Each row's values replaced by their normal scores, ``Phi^-1(rank / (n + 1))`` (NaN stays NaN).

    The residual of chi-squared noise keeps its positive skew (about 0.24 per pixel in the
    benchmark's residuals, ``sqrt(8 / dof)`` for ``dof`` = 102): a sum of 16 such pixels has an
    upper tail 2-4 times the Gaussian's at 4-4.5 sigma, which is where a window search's best
    track lies. Normal scores make every row's marginal exactly Gaussian (and every row equally
    spread, which also evens out integrations lifted by a broadband impulse), so track sums are
    Gaussian to the tail. Ties (values clipped at the same level) share their average rank.

    One ``argsort`` per row (a float32 input is sorted as float32: its float64 values have the
    same order and ties), each group of ties given its average rank, and ``ndtri`` evaluated once
    per distinct count ``n`` on the table of ``k / (2 (n + 1))``, ``k`` twice the (half-integer)
    rank: the same correctly rounded quotient as ``rank / (n + 1)``, so the values are those of
    scipy's ``rankdata`` + ``ndtri`` bit for bit (tests/test_joint_search.py), in about half the time.
    """
    z = np.asarray(z_TxL)
    if z.dtype != np.float32:
        z = np.asarray(z, np.float64)
    t, n = z.shape
    ok = np.isfinite(z)
    key = np.where(ok, z, np.inf)  # non-finite values sort last; the table entries they get are discarded
    order = np.argsort(key, axis=1)
    srt = np.take_along_axis(key, order, axis=1)
    twice = np.broadcast_to(2 * np.arange(1, n + 1, dtype=np.int64), (t, n)).ravel().copy()  # 2 x rank, sorted order
    tie = np.flatnonzero((srt[:, 1:] == srt[:, :-1]).ravel())  # (row, i) with srt[row, i + 1] == srt[row, i]
    if tie.size:
        tie = tie + tie // (n - 1) + 1  # flat index of the second of each equal pair in (t, n)
        brk = np.flatnonzero(np.diff(tie) != 1) + 1
        first, stop = np.concatenate([[0], brk]), np.concatenate([brk, [tie.size]])
        lo, hi = tie[first] - 1, tie[stop - 1]  # each group of ties: its first and last flat index
        val = lo % n + hi % n + 2  # twice its average 1-based rank
        twice[tie] = np.repeat(val, stop - first)
        twice[lo] = val
    twice = twice.reshape(t, n)
    out = np.empty((t, n), np.float64)
    count = ok.sum(axis=1)
    for m in np.unique(count):
        rows = np.flatnonzero(count == m)
        table = ndtri(np.arange(2 * m + 1, dtype=np.float64) / (2.0 * (m + 1.0)))
        scores = table[np.minimum(twice[rows], 2 * m)]
        part = np.empty((rows.size, n), np.float64)
        np.put_along_axis(part, order[rows], scores, axis=1)
        out[rows] = part
    out[~ok] = np.nan
    return out


def window_stat(z_TxL: np.ndarray, chan0: float, drift0: float, half_chan: float, half_drift: float,
                drift_step: float, widths: tuple[int, ...], min_track_frac: float = 0.25) -> tuple:
    """Best track near a predicted line: a local de-Doppler search of one strip (numpy).

    The tracks are ``f(t) = chan0 + o + d * (t - t_mid)`` with ``t_mid = (T - 1) / 2``, offsets
    ``o`` in ``[-half_chan, half_chan]`` (half-channel steps for boxcars of 1-2 channels, whole
    channels above), drifts ``d`` in ``drift0 +- half_drift`` (steps of ``drift_step``, channels
    per integration) and boxcars of ``widths`` channels centred on ``f(t)``. The strip's values
    are first replaced by their normal scores row by row (:func:`normal_scores`): the residual
    of chi-squared noise is skewed, and raw track sums had an upper tail 2-4 times the
    Gaussian's at 4-4.5 sigma, where a window's best track lies. A track's raw statistic is
    the sum of those scores over its pixels inside the strip over the square root of their
    number (tracks with fewer than ``min_track_frac * T * w`` pixels inside are ignored; NaN
    pixels, a missing neighbour tile, are outside). Residuals are not white (neighbouring
    channels correlate, reconstruction errors persist in time), so each width's statistics are
    standardised by a local null: the median and robust spread of the same statistic at drift
    ``drift0`` at every channel of the strip. Under noise each standardised track is then close
    to N(0, 1), whatever the residual's correlations. (A null local in frequency, over +-96
    channels, was measured too: its noisier spread made the tail worse, not better; see
    docs/statistics.md.)

    Parameters
    ----------
    z_TxL : array (T, L)
        Standardised, clipped residual (:func:`residual_z`) of a strip of channels (any
        monotone transform of it gives the same result: only ranks within rows are used).
    chan0, drift0 : float
        Predicted channel at ``t_mid`` and drift (channels per integration).
    half_chan, half_drift, drift_step : float
        Half-widths of the search window and the drift step.
    widths : tuple of int
        Boxcar widths (channels).

    Returns
    -------
    (stat, chan, drift, width, n_tracks)
        The best track's standardised statistic (``-inf`` when no track fits), its centre at
        ``t_mid``, drift and width, and the number of tracks searched (for a Bonferroni
        p-value, :func:`window_pvalue`).
    """
    z = normal_scores(z_TxL)
    t, n = z.shape
    inside = np.isfinite(z)
    zero = np.zeros((t, 1))
    csum = np.concatenate([zero, np.cumsum(np.where(inside, z, 0.0), axis=1)], axis=1)  # (T, L + 1)
    cnt = np.concatenate([zero, np.cumsum(inside, axis=1)], axis=1)
    offsets = np.arange(-math.ceil(2 * half_chan), math.ceil(2 * half_chan) + 1) / 2.0
    nd = math.ceil(half_drift / drift_step - 1e-9) if half_drift > 0 else 0
    drifts = drift0 + np.arange(-nd, nd + 1) * drift_step
    dt_T = np.arange(t)[:, None, None] - (t - 1) / 2.0
    centre_TxDxO = chan0 + offsets[None, None, :] + drifts[None, :, None] * dt_T
    everywhere = np.arange(n, dtype=np.float64)[None, None, :] + drift0 * dt_T  # drift0 at every channel
    best = (-np.inf, float("nan"), float("nan"), 0)
    n_tracks = 0
    for w in widths:
        min_pixels = max(min_track_frac * t * w, 1.0)
        ref = _track_sums(csum, cnt, everywhere, w, min_pixels)
        ref = ref[np.isfinite(ref)]
        if ref.size < 32:
            continue
        loc = float(np.median(ref))
        scale = max(1.4826 * float(np.median(np.abs(ref - loc))), 1e-6)
        step = 1 if w <= 2 else 2  # whole-channel steps suffice for wide boxcars
        stat = (_track_sums(csum, cnt, centre_TxDxO[:, :, ::step], w, min_pixels) - loc) / scale
        n_tracks += int(np.isfinite(stat).sum())
        di, oi = np.unravel_index(int(np.argmax(stat)), stat.shape)
        if stat[di, oi] > best[0]:
            best = (float(stat[di, oi]), float(chan0 + offsets[oi * step]), float(drifts[di]), int(w))
    return (*best, max(n_tracks, 1))


def window_pvalue(stat: float, n_tracks: int) -> float:
    """Bonferroni p-value of a window search's best track: ``min(1, n_tracks * P(N(0, 1) > stat))``.

    Each track statistic is a normalised sum of at least ``min_track_frac * T * w`` clipped,
    standardised residual pixels, close to N(0, 1) under noise; the tracks of one window are
    strongly correlated, so the bound is conservative (tested against noise in the tests).
    """
    if not np.isfinite(stat):
        return 1.0
    return float(min(1.0, n_tracks * 0.5 * math.erfc(stat / math.sqrt(2.0))))


# --------------------------------------------------------------------------- unit conversions


def drift_to_hz_s(drift_chan_per_int, foff_mhz: float, tsamp_s: float):
    """Convert a drift in channels per integration to Hz/s (sign follows ``foff``)."""
    return np.asarray(drift_chan_per_int, np.float64) * foff_mhz * 1e6 / tsamp_s


def chan_to_freq_mhz(chan, first_chan_freq_mhz: float, foff_mhz: float):
    """Frequency (MHz) of a (fractional) channel offset inside a tile."""
    return first_chan_freq_mhz + np.asarray(chan, np.float64) * foff_mhz
