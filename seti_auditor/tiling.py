"""Normalisation, RFI pre-mask and tiling of a spectrogram block (pure compute).

A block is a ``(time, freq)`` float array covering whole coarse channels of one
observation. The steps follow the design article, made robust:

1. bandpass removal per coarse channel: the time-median spectrum, reduced to block
   medians of ``bandpass_block`` channels (which ignores narrow lines and the DC spike)
   and interpolated back, divides the data;
2. robust standardisation per coarse channel: ``z = (x - median) / (1.4826 * MAD)``
   (the standard deviation is the fallback for quantised data whose MAD is zero);
3. DC-spike blanking: the channel(s) at each coarse-channel centre are set to 0;
4. the article's RFI pre-mask, ``|z| > 3 -> mean``, is :func:`apply_premask`; the robust
   version uses the median (0) and robust sigma (1) instead of statistics inflated by the
   outliers themselves. The tile store keeps unmasked values and counts masked pixels.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from scipy.ndimage import median_filter

MAD_TO_SIGMA = 1.482602218505602  # 1 / Phi^-1(3/4): MAD of a normal variable -> sigma


@dataclasses.dataclass(frozen=True)
class TilingConfig:
    """How observations are cut into tiles."""

    tile_time: int = 16  # integrations per tile (16 = one BL high-resolution scan)
    tile_freq: int = 256  # fine channels per tile
    overlap_time: int = 0  # integrations shared by consecutive tiles in time
    overlap_freq: int = 0  # channels shared by neighbouring tiles in frequency
    coarse_channel_width: int = 0  # fine channels per coarse channel; 0 = from the header (nfpc) or the BL rule
    bandpass_block: int = 33  # channels in the running median of the bandpass estimate
    dc_blank_channels: int = 1  # channels blanked at each coarse-channel centre (0 disables)
    premask_sigma: float = 3.0  # the article's RFI pre-mask threshold, in robust sigma
    chunk_tiles: int = 256  # tiles per Zarr chunk of the tile store (4 MiB of 16 x 256 tiles)
    channels_per_task: int = 0  # channels one ingest task handles; 0 = a multiple of the coarse width near 2**20

    def __post_init__(self) -> None:
        if self.tile_time < 1 or self.tile_freq < 1:
            raise ValueError(f"tile shape must be positive, got {self.tile_time} x {self.tile_freq}")
        if not 0 <= self.overlap_time < self.tile_time:
            raise ValueError(f"overlap_time must be in [0, tile_time), got {self.overlap_time}")
        if not 0 <= self.overlap_freq < self.tile_freq:
            raise ValueError(f"overlap_freq must be in [0, tile_freq), got {self.overlap_freq}")
        if self.chunk_tiles < 1:
            raise ValueError("chunk_tiles must be >= 1")

    @property
    def step_time(self) -> int:
        return self.tile_time - self.overlap_time

    @property
    def step_freq(self) -> int:
        return self.tile_freq - self.overlap_freq


BL_COARSE_MHZ = 187.5 / 64  # width of a GBT Breakthrough Listen coarse channel (MHz)


def coarse_width(cfg: TilingConfig, header: dict) -> int:
    """Fine channels per coarse channel for an observation.

    Order of precedence: the configured width, the header's ``nfpc`` (rawspec), the
    Breakthrough Listen rule (coarse channels of 2.9296875 MHz), else the whole band.
    A width that does not divide ``nchans`` falls back to the whole band.
    """
    nchans = int(header["nchans"])
    candidates = [cfg.coarse_channel_width, int(header.get("nfpc", 0) or 0)]
    foff = abs(float(header["foff"]))
    bl_width = int(round(BL_COARSE_MHZ / foff)) if foff > 0 else 0
    if bl_width >= 64:  # only fine-resolution products are split into BL coarse channels
        candidates.append(bl_width)
    for width in candidates:
        if 0 < width <= nchans and nchans % width == 0:
            return width
    return nchans


def grid(n: int, size: int, step: int) -> int:
    """Number of windows of ``size`` with stride ``step`` that fit in ``n`` samples."""
    return 0 if n < size else (n - size) // step + 1


def task_channels(cfg: TilingConfig, nchans: int, coarse: int) -> int:
    """Channels handled by one ingest task: whole coarse channels, whole chunks of tiles.

    The partition depends only on the configuration and the header, never on the number of
    workers, so the tile store is the same however the work is spread.
    """
    target = cfg.channels_per_task or (1 << 20)
    n_coarse = max(1, target // coarse)
    per_task = n_coarse * coarse
    return min(per_task, nchans)


def bandpass(block_TxF: np.ndarray, block: int) -> np.ndarray:
    """Smooth bandpass estimate (per channel) of one coarse channel.

    A running median of ``block`` channels over the time-median spectrum: it follows the
    roll-off at the coarse-channel edges while narrow lines and the DC spike do not move it.
    """
    ordered = np.sort(block_TxF, axis=0)  # faster than np.median along a short axis
    n = ordered.shape[0]
    spectrum_F = ordered[n // 2] if n % 2 else 0.5 * (ordered[n // 2 - 1] + ordered[n // 2])
    size = max(1, min(block, spectrum_F.size) | 1)  # odd window
    return median_filter(spectrum_F, size=size, mode="nearest")


ROBUST_SAMPLE = 1 << 20  # values the median/MAD are estimated from (a regular subsample)


def robust_standardise(x: np.ndarray) -> tuple[np.ndarray, float, float]:
    """``(x - median) / sigma`` with sigma from the MAD, or the std when the MAD is zero.

    Median and MAD come from a regular subsample of at most ``ROBUST_SAMPLE`` values (their
    relative error is then ~0.1%). Returns the standardised array, the median and the sigma
    used. Sigma is 0 only for constant data, which the caller must treat as unusable.
    """
    flat = x.ravel()
    flat = flat[:: max(1, flat.size // ROBUST_SAMPLE)]
    finite = flat[np.isfinite(flat)]
    if finite.size == 0:
        return np.zeros_like(x), 0.0, 0.0
    med = float(np.median(finite))
    sigma = MAD_TO_SIGMA * float(np.median(np.abs(finite - med)))
    if sigma == 0.0:
        sigma = float(np.std(finite))
    if sigma == 0.0:
        return np.zeros_like(x), med, 0.0
    return (x - med) / sigma, med, sigma


class UnusableDataError(ValueError):
    """Data that cannot be normalised (all non-finite, or constant)."""


def normalise(block_TxF: np.ndarray, coarse: int, cfg: TilingConfig) -> np.ndarray:
    """Bandpass-remove, robustly standardise and DC-blank whole coarse channels.

    Parameters
    ----------
    block_TxF:
        Power of whole coarse channels, ``freq`` a multiple of ``coarse``.
    coarse:
        Fine channels per coarse channel.

    Returns
    -------
    float32 array of the same shape: median 0, robust sigma 1 per coarse channel,
    non-finite input pixels set to 0.

    Raises
    ------
    UnusableDataError
        When a coarse channel is entirely non-finite or has zero variance.
    """
    t, f = block_TxF.shape
    if f % coarse:
        raise ValueError(f"block of {f} channels is not a whole number of {coarse}-channel coarse channels")
    out_TxF = np.empty((t, f), dtype=np.float32)
    for c0 in range(0, f, coarse):
        raw = np.array(block_TxF[:, c0 : c0 + coarse], dtype=np.float32)  # a copy: the input stays untouched
        finite = np.isfinite(raw)
        if not finite.any():
            raise UnusableDataError(f"coarse channel at channel {c0} holds no finite value")
        if not finite.all():
            raw = np.where(finite, raw, np.median(raw[finite]))
        bp = bandpass(raw, cfg.bandpass_block)
        scale = np.where(np.abs(bp) > 0, bp, 1.0).astype(np.float32)
        raw /= scale  # in place: float32 temporaries only, a few times the region's size
        raw -= 1.0
        z, _, sigma = robust_standardise(raw)
        if sigma == 0.0:
            raise UnusableDataError(f"coarse channel at channel {c0} has zero variance (constant data)")
        z[~finite] = 0.0
        if cfg.dc_blank_channels > 0 and coarse > 2 * cfg.dc_blank_channels:
            centre = coarse // 2
            half = cfg.dc_blank_channels // 2
            z[:, centre - half : centre - half + cfg.dc_blank_channels] = 0.0
        out_TxF[:, c0 : c0 + coarse] = z
    return out_TxF


def apply_premask(tiles: np.ndarray, sigma: float = 3.0) -> np.ndarray:
    """The article's RFI pre-mask, robust form: pixels with ``|z| > sigma`` set to the median (0).

    Works on any array of standardised values (one tile or a batch); returns a new array.
    """
    return np.where(np.abs(tiles) > sigma, 0.0, tiles).astype(tiles.dtype, copy=False)


def cut_tiles(z_TxF: np.ndarray, cfg: TilingConfig) -> np.ndarray:
    """Cut a normalised block into tiles ordered by frequency tile, then time tile.

    Returns ``tiles_NxTxF`` with ``N = n_freq_tiles * n_time_tiles``. Channels past the
    last whole tile are dropped (the caller's channel plan accounts for them).
    """
    t, f = z_TxF.shape
    nt = grid(t, cfg.tile_time, cfg.step_time)
    nf = grid(f, cfg.tile_freq, cfg.step_freq)
    if nt == 0 or nf == 0:
        return np.empty((0, cfg.tile_time, cfg.tile_freq), dtype=np.float32)
    windows = np.lib.stride_tricks.sliding_window_view(z_TxF, (cfg.tile_time, cfg.tile_freq))
    sel = windows[:: cfg.step_time, :: cfg.step_freq][:nt, :nf]  # (nt, nf, T, F)
    return np.ascontiguousarray(sel.transpose(1, 0, 2, 3).reshape(nf * nt, cfg.tile_time, cfg.tile_freq))


def tile_stats(tiles_NxTxF: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Pre-screen statistics per tile: pixels beyond the pre-mask and the largest ``|z|``."""
    absz = np.abs(tiles_NxTxF)
    n_masked = (absz > sigma).sum(axis=(1, 2)).astype(np.int32)
    max_abs = absz.max(axis=(1, 2)) if tiles_NxTxF.size else np.zeros(0)
    return n_masked, max_abs.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class FilePlan:
    """Tiles of one observation and the channel regions that ingest tasks handle."""

    cfg: TilingConfig  # the tiling configuration
    nchans: int  # channels in the file
    nints: int  # integrations in the file
    coarse: int  # fine channels per coarse channel
    n_freq_tiles: int  # tiles across the band
    n_time_tiles: int  # tiles along time

    @property
    def n_tiles(self) -> int:
        return self.n_freq_tiles * self.n_time_tiles

    def regions(self) -> list[tuple[int, int]]:
        """Ranges ``[f0, f1)`` of frequency-tile indices, one per ingest task.

        A region's tiles start at channel ``f0 * step_freq``; the task reads whole coarse
        channels around them for normalisation. Regions hold a whole number of Zarr chunks
        of tiles (except the file's last one), so their writes are chunk-aligned.
        """
        per_task_ch = task_channels(self.cfg, self.nchans, self.coarse)
        tiles_per_task = max(1, per_task_ch // self.cfg.step_freq)
        # whole chunks: tiles per task * n_time_tiles must be a multiple of chunk_tiles
        chunk = self.cfg.chunk_tiles
        unit = chunk // math.gcd(chunk, max(1, self.n_time_tiles))
        tiles_per_task = max(unit, (tiles_per_task // unit) * unit)
        return [(f0, min(f0 + tiles_per_task, self.n_freq_tiles)) for f0 in range(0, self.n_freq_tiles, tiles_per_task)]

    def channel_span(self, f0: int, f1: int) -> tuple[int, int]:
        """Channels ``[c0, c1)`` to read for frequency tiles ``[f0, f1)``: whole coarse channels."""
        first = f0 * self.cfg.step_freq
        last = (f1 - 1) * self.cfg.step_freq + self.cfg.tile_freq
        c0 = (first // self.coarse) * self.coarse
        c1 = min(self.nchans, -(-last // self.coarse) * self.coarse)
        return c0, c1


def plan_tiles(cfg: TilingConfig, header: dict) -> FilePlan:
    """Plan the tiles and ingest regions of one observation from its header."""
    nchans = int(header["nchans"])
    nints = int(header["nsamples"])
    coarse = coarse_width(cfg, header)
    nt = grid(nints, cfg.tile_time, cfg.step_time)
    nf = grid(nchans, cfg.tile_freq, cfg.step_freq)
    return FilePlan(cfg=cfg, nchans=nchans, nints=nints, coarse=coarse, n_freq_tiles=nf, n_time_tiles=nt)


def tiles_for_region(data_TxF: np.ndarray, c0: int, plan: FilePlan, f0: int, f1: int) -> np.ndarray:
    """Normalise the channels read for a region and cut its tiles.

    ``data_TxF`` holds channels ``[c0, c0 + width)`` of the file (whole coarse channels);
    the result holds the tiles of frequency-tile indices ``[f0, f1)`` for every time tile,
    ordered by frequency tile then time tile.
    """
    cfg = plan.cfg
    z_TxF = normalise(data_TxF, plan.coarse, cfg)
    start = f0 * cfg.step_freq - c0
    stop = (f1 - 1) * cfg.step_freq + cfg.tile_freq - c0
    return cut_tiles(z_TxF[:, start:stop], cfg)
