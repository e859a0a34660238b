"""The auditor's per-tile verdict: reconstruct with the VAE, then score the residual (pure).

One jitted function per (model, score configuration, batch shape) does the whole chain:
store tiles -> model input space -> reconstruction from the latent mean -> the article's
mean squared residual (in model space) and the configured anomaly score: the line search
runs on the residual in store units, tile minus the reconstruction mapped back. Batches are padded to one fixed size so the function compiles once.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from seti_auditor.scoring import ScoreConfig, line_score, residual_z, subband_mse
from vae.model import VAE, inverse_transform, transform_input


class Verdict(NamedTuple):
    """Scores of ``N`` tiles with ``S`` sub-bands each (numpy arrays)."""

    recon_error: np.ndarray  # (N,) float32, the article's score: mean squared residual (model input units^2)
    score: np.ndarray  # (N, S) float32, the configured anomaly score per sub-band (higher = more anomalous)
    drift_chan: np.ndarray  # (N, S) float32, best line track drift (channels per integration); NaN for "mse"
    peak_chan: np.ndarray  # (N, S) float32, best track centre channel in the tile at its middle integration


@functools.partial(nnx.jit, static_argnames="score_cfg")
def _audit(model: VAE, tiles_NxTxF, score_cfg: ScoreConfig):
    x = transform_input(model.cfg, tiles_NxTxF)
    mean, _ = model.encode(x)
    recon = model.decode(mean).astype(jnp.float32)
    mse = jnp.mean(jnp.square(x - recon), axis=(1, 2))
    if score_cfg.score == "mse":
        per_band = subband_mse(x, recon, score_cfg.subbands)
        nan = jnp.full_like(per_band, jnp.nan)
        return mse, per_band, nan, nan, tiles_NxTxF, tiles_NxTxF
    # the line search works in store units (robust z), where the noise is linear
    z = jnp.asarray(tiles_NxTxF, jnp.float32)
    if model.cfg.premask:
        z = jnp.where(jnp.abs(z) > model.cfg.premask_sigma, 0.0, z)
    recon_z = inverse_transform(model.cfg, recon)
    stat, drift, chan, _ = line_score(z, recon_z, score_cfg)
    return mse, stat, drift, chan, z, recon_z


@functools.partial(nnx.jit, static_argnames=("clip", "row_scale", "blank_lift"))
def _residual(model: VAE, tiles_NxTxF, clip: float, row_scale: bool, blank_lift: float):
    mean, _ = model.encode(transform_input(model.cfg, tiles_NxTxF))
    recon_z = inverse_transform(model.cfg, model.decode(mean).astype(jnp.float32))
    z = jnp.asarray(tiles_NxTxF, jnp.float32)
    if model.cfg.premask:
        z = jnp.where(jnp.abs(z) > model.cfg.premask_sigma, 0.0, z)
    return residual_z(z, recon_z, clip, row_scale, blank_lift)


def residuals(model: VAE, tiles_NxTxF: np.ndarray, score_cfg: ScoreConfig = ScoreConfig()) -> np.ndarray:
    """The standardised, clipped residual that the line search sums, ``(N, T, F)`` float32."""
    n = tiles_NxTxF.shape[0]
    bs = max(1, min(score_cfg.batch_size, n))
    out = [np.asarray(_residual(model, _padded(np.asarray(tiles_NxTxF[a:b], np.float32), bs), score_cfg.clip,
                                    score_cfg.row_scale, score_cfg.blank_lift))[: b - a]
           for a, b in _batches(n, bs)]
    return np.concatenate(out) if out else np.zeros((0, *tiles_NxTxF.shape[1:]), np.float32)


def _batches(n: int, bs: int):
    for start in range(0, n, bs):
        yield start, min(start + bs, n)


def _padded(a: np.ndarray, bs: int) -> np.ndarray:
    short = bs - a.shape[0]
    return a if not short else np.concatenate([a, np.zeros((short, *a.shape[1:]), a.dtype)])


def audit_tiles(model: VAE, tiles_NxTxF: np.ndarray, score_cfg: ScoreConfig = ScoreConfig(),
                right_N: np.ndarray | None = None) -> Verdict:
    """Score store-space tiles in batches of ``score_cfg.batch_size`` (the last one zero-padded).

    ``right_N``: for each tile, the index (in this array) of its right-hand neighbour in
    frequency (same file and integrations), or -1. With it, the coarse fast-drift search also
    runs on each pair of neighbours, so a fast track crossing a tile edge is summed whole;
    each tile keeps, per sub-band, the best of its own and its pairs' tracks.
    """
    n = tiles_NxTxF.shape[0]
    sb = score_cfg.subbands
    if n == 0:
        empty = np.zeros((0, sb), np.float32)
        return Verdict(np.zeros(0, np.float32), empty, empty, empty)
    bs = max(1, min(score_cfg.batch_size, n))
    parts, zs, recs = [], [], []
    for a, b in _batches(n, bs):
        out = _audit(model, _padded(np.asarray(tiles_NxTxF[a:b], np.float32), bs), score_cfg)
        parts.append([np.asarray(x)[: b - a] for x in out[:4]])
        zs.append(np.asarray(out[4])[: b - a])
        recs.append(np.asarray(out[5])[: b - a])
    mse, stat, drift, chan = (np.concatenate(p).astype(np.float32) for p in zip(*parts))
    if right_N is not None and score_cfg.score == "line" and score_cfg.fast_bin > 1:
        _pair_pass(np.concatenate(zs), np.concatenate(recs), np.asarray(right_N), score_cfg, stat, drift, chan)
    return Verdict(mse, stat, drift, chan)


def _pair_pass(z: np.ndarray, recon: np.ndarray, right_N: np.ndarray, cfg: ScoreConfig,
               stat: np.ndarray, drift: np.ndarray, chan: np.ndarray) -> None:
    """Fast search on neighbour pairs; updates ``stat``, ``drift``, ``chan`` in place where better."""
    left = np.flatnonzero(right_N >= 0)
    if left.size == 0:
        return
    right = right_N[left]
    f, sb = z.shape[2], cfg.subbands
    pair_cfg = dataclasses.replace(cfg, subbands=2 * sb)
    bs = max(1, min(cfg.batch_size, left.size))
    for a, b in _batches(left.size, bs):
        lk, rk = left[a:b], right[a:b]
        pz = _padded(np.concatenate([z[lk], z[rk]], axis=2), bs)
        pr = _padded(np.concatenate([recon[lk], recon[rk]], axis=2), bs)
        s2, d2, c2, _ = (np.asarray(x)[: b - a] for x in line_score(pz, pr, pair_cfg, fast_only=True))
        for tiles, half, offset in ((lk, slice(0, sb), 0.0), (rk, slice(sb, 2 * sb), float(f))):
            better = s2[:, half] > stat[tiles]
            stat[tiles] = np.where(better, s2[:, half], stat[tiles])
            drift[tiles] = np.where(better, d2[:, half], drift[tiles])
            chan[tiles] = np.where(better, c2[:, half] - offset, chan[tiles])


def right_neighbours(file_id_N: np.ndarray, time_start_N: np.ndarray, chan_start_N: np.ndarray,
                     tile_freq: int) -> np.ndarray:
    """Index of each tile's right-hand neighbour (same file and integrations, next ``tile_freq`` channels), or -1."""
    index = {(int(f), int(t), int(c)): i for i, (f, t, c) in enumerate(zip(file_id_N, time_start_N, chan_start_N))}
    return np.array([index.get((int(f), int(t), int(c) + tile_freq), -1)
                     for f, t, c in zip(file_id_N, time_start_N, chan_start_N)], dtype=np.int64)
