"""The auditor's per-tile verdict: reconstruct with the VAE, then score the residual (pure).

One jitted function per (model, score configuration, batch shape) does the whole chain:
store tiles -> model input space -> reconstruction from the latent mean -> the article's
mean squared residual (in model space) and the configured anomaly score: the line search
runs on the residual in store units, tile minus the reconstruction mapped back. Batches are padded to one fixed size so the function compiles once.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax.numpy as jnp
import numpy as np
from flax import nnx

from seti_auditor.scoring import ScoreConfig, line_score, subband_mse
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
        return mse, per_band, nan, nan
    # the line search works in store units (robust z), where the noise is linear
    z = jnp.asarray(tiles_NxTxF, jnp.float32)
    if model.cfg.premask:
        z = jnp.where(jnp.abs(z) > model.cfg.premask_sigma, 0.0, z)
    stat, drift, chan, _ = line_score(z, inverse_transform(model.cfg, recon), score_cfg)
    return mse, stat, drift, chan


def audit_tiles(model: VAE, tiles_NxTxF: np.ndarray, score_cfg: ScoreConfig = ScoreConfig()) -> Verdict:
    """Score store-space tiles in batches of ``score_cfg.batch_size`` (the last one zero-padded)."""
    n = tiles_NxTxF.shape[0]
    if n == 0:
        empty = np.zeros((0, score_cfg.subbands), np.float32)
        return Verdict(np.zeros(0, np.float32), empty, empty, empty)
    bs = max(1, min(score_cfg.batch_size, n))
    parts = []
    for start in range(0, n, bs):
        batch = np.asarray(tiles_NxTxF[start : start + bs], np.float32)
        short = bs - batch.shape[0]
        if short:
            batch = np.concatenate([batch, np.zeros((short, *batch.shape[1:]), np.float32)])
        parts.append([np.asarray(a)[: bs - short] for a in _audit(model, batch, score_cfg)])
    return Verdict(*(np.concatenate(p).astype(np.float32) for p in zip(*parts)))
