"""Train the auditor on a workdir's tile store and publish it with its calibration (I/O).

The training set is noise and RFI only (:func:`vae.data.select_training_tiles`: OFF-source
tiles and tiles the robust pre-screen calls ordinary, minus known signals). The held-out
part calibrates the scores: of it, the tiles that are both OFF-source (or outside any
cadence) and ordinary are the null sample whose scores give the p-values.

Resuming: the training state is checkpointed (orbax, written aside and renamed when
complete) after every epoch in ``W/train_state/<key>``, where ``key`` hashes everything
that determines the weights: the VAE configuration, the training configuration (seed,
epochs, batch, learning rate, ...) and the exact training selection (its digest). A run
killed during training and started again with the same job on the same tiles continues
from its last finished epoch and ends with the weights of an uninterrupted run; any other
job or selection gets a key of its own and starts afresh. The directory is removed once
the model is published.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Callable

import numpy as np
import zarr

from seti_auditor import modeldir, tilestore
from seti_auditor.audit import audit_tiles, right_neighbours
from seti_auditor.scoring import ScoreConfig
from vae.calibrate import calibrate_scores
from vae.config import TrainConfig, preset
from vae.data import TileSelection, ZarrBatches, select_training_tiles
from vae.train import fit

log = logging.getLogger(__name__)

CHECKPOINTS = "train_state"


@dataclasses.dataclass(frozen=True)
class TrainJob:
    """What the train flow does."""

    preset: str = "default"  # VAE preset ("default" or "article"), fitted to the store's tile shape
    epochs: int = 20  # passes over the training selection
    batch_size: int = 64  # tiles per step (lowered to the selection size on tiny stores)
    learning_rate: float = 2e-3  # peak Adam learning rate
    seed: int = 0  # weights, data order and the holdout split
    holdout_fraction: float = 0.25  # share of the noise tiles held out for calibration
    known_signals: tuple[tuple[float, float], ...] = ()  # MHz ranges excluded from training
    ordinary_max_abs_z: float = 6.0  # pre-screen: largest |z| of an ordinary tile
    resume: bool = True  # continue from the checkpoint of this job and selection in W/train_state/<key>
    score: ScoreConfig = ScoreConfig()  # the score the calibration is made for


@dataclasses.dataclass(frozen=True)
class TrainReport:
    """What a training run produced."""

    model_dir: str  # the published model (W/models/<version>)
    model_version: str  # hash of config + weights
    history: list[dict]  # per epoch: loss, recon, kl, tiles_per_s, ...
    n_train: int  # training tiles
    n_null: int  # held-out noise tiles scored for calibration
    calibration: dict  # per score: mean, std, median, MAD sigma, quantiles, article threshold
    compile_s: float  # compilation time of the train step
    resumed_from: int | None  # step restored from a checkpoint


def null_tiles(store: str | os.PathLike, holdout: TileSelection, max_abs_z: float) -> np.ndarray:
    """Held-out tiles fit to be a null sample: ordinary, and OFF-source when in a cadence."""
    g = zarr.open_group(str(store), mode="r")
    idx = holdout.indices
    ordinary = np.asarray(g["max_abs_z"][:])[idx] <= max_abs_z
    scan = np.asarray(g["scan_index"][:])[idx]
    on = np.asarray(g["on_source"][:])[idx].astype(bool)
    eligible = ordinary & ~(on & (scan >= 0))
    return idx[eligible] if eligible.sum() >= 20 else idx


def score_selection(model, store: str | os.PathLike, indices: np.ndarray, score_cfg: ScoreConfig) -> dict:
    """Scores (and tile frequencies) of the given tiles, scored exactly as the score flow does.

    Each tile is scored together with its right-hand neighbour (read from the store even when
    not selected), so that the fast search over tile pairs is part of the null as well.
    """
    g = zarr.open_group(str(store), mode="r")
    file_id, time_start, chan_start = (np.asarray(g[k][:]) for k in ("file_id", "time_start", "chan_start"))
    valid = np.asarray(g["valid"][:], bool)
    fmid_all = 0.5 * (np.asarray(g["freq_min_mhz"][:]) + np.asarray(g["freq_max_mhz"][:]))
    tile_freq = int(g["tiles"].shape[2])
    live = np.flatnonzero(valid)
    right_all = np.full(valid.size, -1, np.int64)
    right_all[live] = np.where((r := right_neighbours(file_id[live], time_start[live], chan_start[live],
                                                      tile_freq)) >= 0, live[np.maximum(r, 0)], -1)
    indices = np.asarray(indices, np.int64)
    scores, recon = [], []
    for a in range(0, indices.size, score_cfg.batch_size):
        sel = indices[a : a + score_cfg.batch_size]
        nb = right_all[sel]
        rows = np.unique(np.concatenate([sel, nb[nb >= 0]]))
        pos = {int(t): i for i, t in enumerate(rows)}
        tiles = np.nan_to_num(np.asarray(g["tiles"].get_orthogonal_selection((rows, slice(None), slice(None)))))
        right = np.array([pos.get(int(right_all[t]), -1) if right_all[t] >= 0 else -1 for t in rows], np.int64)
        verdict = audit_tiles(model, tiles, score_cfg, right)
        keep = np.array([pos[int(t)] for t in sel], np.int64)
        scores.append(verdict.score[keep])
        recon.append(verdict.recon_error[keep])
    sb = score_cfg.subbands
    return {"tile": indices, "freq_mhz": fmid_all[indices],
            "score": np.concatenate(scores) if scores else np.zeros((0, sb), np.float32),
            "recon_error": np.concatenate(recon) if recon else np.zeros(0, np.float32)}


def checkpoint_dir(workdir: str | os.PathLike, vae_cfg, train_cfg: TrainConfig, selection: TileSelection) -> Path:
    """``W/train_state/<key>``: the key hashes the model and training configurations and the selection."""
    what = {"vae_config": vae_cfg.to_dict(), "train_config": train_cfg.to_dict(), "selection": selection.digest}
    key = hashlib.sha256(json.dumps(what, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return Path(workdir) / CHECKPOINTS / key


def train_model(workdir: str | os.PathLike, job: TrainJob = TrainJob(),
                on_epoch: Callable[[int, dict], None] | None = None) -> TrainReport:
    """Select, train, calibrate and publish; resumable from ``W/train_state``."""
    store = tilestore.store_path(workdir)
    tiling = tilestore.read_tiling_config(store)
    vae_cfg = preset(job.preset, tile=(tiling.tile_time, tiling.tile_freq))
    train_sel, holdout = select_training_tiles(
        str(store), known_signals=job.known_signals, holdout_fraction=job.holdout_fraction, seed=job.seed,
        ordinary_max_abs_z=job.ordinary_max_abs_z)
    if len(train_sel) < 2:
        raise ValueError(f"{store}: only {len(train_sel)} noise tiles to train on; ingest more OFF-source data")
    batch = min(job.batch_size, len(train_sel))
    batch -= batch % 2 if batch > 1 else 0  # splits over two devices
    source = ZarrBatches(str(store), train_sel, batch, shuffle_seed=job.seed)
    train_cfg = TrainConfig(batch_size=batch, epochs=job.epochs, learning_rate=job.learning_rate, seed=job.seed,
                            warmup_steps=min(100, max(1, job.epochs * (len(train_sel) // batch) // 10)),
                            checkpoint_every=max(1, source.steps_per_epoch))  # every epoch
    ckpt_dir = checkpoint_dir(workdir, vae_cfg, train_cfg, train_sel)
    result = fit(source, vae_cfg, train_cfg, checkpoint_dir=str(ckpt_dir), on_epoch=on_epoch, resume=job.resume)
    null_idx = null_tiles(store, holdout, job.ordinary_max_abs_z)
    null = score_selection(result.model, store, null_idx, job.score)
    main = calibrate_scores(null["score"], score=job.score.score)
    calibration = {job.score.score: main.to_dict(), "mse": calibrate_scores(null["recon_error"], score="mse").to_dict()}
    extra = {"train_config": train_cfg.to_dict(), "score_config": dataclasses.asdict(job.score),
             "holdout": holdout.to_dict(), "null_tiles": int(null_idx.size), "history": result.history,
             "calibrations": calibration, "tiles_store": str(store), "resumed_from": result.resumed_from,
             "train_state_key": ckpt_dir.name}
    version = modeldir.publish(workdir, result.model, vae_cfg, selection=train_sel, calibration=main,
                               extra=extra, null_scores=null)
    shutil.rmtree(ckpt_dir, ignore_errors=True)  # published: nothing left to resume
    log.info("model %s: %d training tiles, %d null tiles", version, len(train_sel), null_idx.size)
    return TrainReport(str(Path(workdir) / modeldir.MODELS / version), version, result.history, len(train_sel),
                       int(null_idx.size), calibration, result.compile_s, result.resumed_from)
