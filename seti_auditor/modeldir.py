"""Models of a workdir (I/O): ``W/models/<version>/`` and the current one at ``W/model``.

A model directory holds what :func:`vae.checkpoint.save_model` writes (weights, config,
training selection, calibration) plus the null scores of the held-out noise tiles
(``null_scores.npz``: plain arrays, no pickles) that the score flow turns into p-values.
A new model is written aside, renamed to its version, and only then becomes current by an
atomic swap of the ``W/model`` link: a reader never sees a half-written model, and earlier
models stay readable under ``W/models/``. A writer killed half-way leaves ``W/models/.tmp-<pid>``
(never read; removed by the next publish) and the previous model current.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np

from vae.checkpoint import load_model, save_model

CURRENT = "model"
MODELS = "models"
NULL_FILE = "null_scores.npz"


def current_dir(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / CURRENT


def has_model(workdir: str | os.PathLike) -> bool:
    return (current_dir(workdir) / "model.json").exists()


def publish(workdir: str | os.PathLike, model, cfg, *, selection, calibration, extra: dict,
            null_scores: dict[str, np.ndarray]) -> str:
    """Save a model aside, then make it current; returns its version."""
    root = Path(workdir)
    models = root / MODELS
    models.mkdir(parents=True, exist_ok=True)
    for stale in models.glob(".tmp-*"):  # half-written models of killed runs (one writer: the workdir lock)
        shutil.rmtree(stale, ignore_errors=True)
    for stale in root.glob(f".{CURRENT}.tmp-*"):
        stale.unlink(missing_ok=True)
    tmp = models / f".tmp-{os.getpid()}"
    version = save_model(tmp, model, cfg, selection=selection, calibration=calibration, extra=extra)
    np.savez(tmp / NULL_FILE, **{k: np.asarray(v) for k, v in null_scores.items()})
    final = models / version
    if final.exists():  # the same weights and config again: keep the first copy
        shutil.rmtree(tmp)
    else:
        os.replace(tmp, final)
    link = root / f".{CURRENT}.tmp-{os.getpid()}"
    if link.is_symlink() or link.exists():
        link.unlink()
    os.symlink(Path(MODELS) / version, link)
    os.replace(link, root / CURRENT)
    return version


def load_current(workdir: str | os.PathLike):
    """(model, cfg, meta, null_scores) of the current model; FileNotFoundError when none."""
    d = current_dir(workdir)
    if not (d / "model.json").exists():
        raise FileNotFoundError(f"{workdir}: no trained model (run `seti-auditor train --workdir {workdir}`)")
    model, cfg, meta = load_model(d)
    with np.load(d / NULL_FILE, allow_pickle=False) as npz:
        null = {k: npz[k] for k in npz.files}
    return model, cfg, meta, null


def read_meta(workdir: str | os.PathLike) -> dict:
    """model.json of the current model (no weights loaded)."""
    return json.loads((current_dir(workdir) / "model.json").read_text())
