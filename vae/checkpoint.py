"""Checkpoints (I/O layer, orbax): training checkpoints to resume, and saved models.

Training checkpoints (``checkpoint_dir``, written by :func:`vae.train.fit`)::

    checkpoint_dir/run.json        VAE config, train config, selection summary (checked on resume)
    checkpoint_dir/history.json    one entry per finished epoch
    checkpoint_dir/steps/<step>/   orbax: step, parameters, optimiser state, PRNG key

Every file here becomes visible only when complete: orbax writes a step into a temporary
directory and renames it when finalised (``latest_step`` never lists an unfinished one), and
the JSON files are written aside and renamed. A process killed while saving leaves the
previous step restorable.

A saved model (:func:`save_model`; what scoring loads)::

    model_dir/model.json                 model_version, config, selection, calibration, extra
    model_dir/selection_indices.npy      the training tiles (store rows), when given
    model_dir/weights/                   orbax StandardCheckpointer of the parameters
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from vae.calibrate import Calibration
from vae.config import VAEConfig
from vae.model import VAE, build, model_version

FORMAT = "seti-auditor-vae/1"
# TrainConfig fields a resume may change (they do not change the weights of a given step)
_BOOKKEEPING = frozenset({"checkpoint_every", "keep_checkpoints", "max_steps"})


def _write_json(path: Path, obj: Any) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def _json_default(o):
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON-serialisable: {type(o)}")


class TrainCheckpointer:
    """Save / restore the training state every N steps with an orbax ``CheckpointManager``."""

    def __init__(self, directory: str | os.PathLike, *, keep: int = 2):
        self.dir = Path(directory).absolute()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.manager = ocp.CheckpointManager(
            self.dir / "steps", options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def check_run(self, run: dict, *, resume: bool) -> None:
        """Record the run description; on resume, refuse a checkpoint of a different model, data or training.

        The training configuration must match except for bookkeeping (checkpoint spacing and
        count, ``max_steps``), which does not change the weights of a given step.
        """
        path = self.dir / "run.json"
        if resume and path.exists() and self.latest_step() is not None:
            old = json.loads(path.read_text())
            for key in ("vae_config", "selection_digest", "train_config"):
                was, now = old.get(key), json.loads(json.dumps(run.get(key), default=_json_default))
                if key == "train_config" and isinstance(was, dict) and isinstance(now, dict):
                    was, now = ({k: v for k, v in d.items() if k not in _BOOKKEEPING} for d in (was, now))
                if was != now:
                    raise ValueError(f"{self.dir}: checkpoint was written for a different {key}; "
                                     f"use another checkpoint_dir or resume=False")
        _write_json(path, run)

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def save(self, step: int, state: Any) -> None:
        self.manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def restore(self, step: int, target: Any) -> Any:
        return self.manager.restore(step, args=ocp.args.StandardRestore(target))

    def history(self) -> list[dict]:
        path = self.dir / "history.json"
        return json.loads(path.read_text()) if path.exists() else []

    def write_history(self, history: list[dict]) -> None:
        _write_json(self.dir / "history.json", history)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def save_model(directory: str | os.PathLike, model: VAE, cfg: VAEConfig, *, selection=None,
               calibration: Calibration | None = None, extra: dict | None = None) -> str:
    """Save weights + config + training selection + calibration; returns the model version.

    ``selection`` is a :class:`vae.data.TileSelection` (its summary goes to model.json, its
    indices to selection_indices.npy). Overwrites an existing model in ``directory``.
    """
    d = Path(directory).absolute()
    d.mkdir(parents=True, exist_ok=True)
    version = model_version(cfg, model)
    params = jax.device_get(nnx.state(model, nnx.Param))
    with ocp.StandardCheckpointer() as ckpt:
        ckpt.save(d / "weights", params, force=True)
    if selection is not None:
        np.save(d / "selection_indices.npy", np.asarray(selection.indices, dtype=np.int64))
    _write_json(d / "model.json", {
        "format": FORMAT,
        "model_version": version,
        "config": cfg.to_dict(),
        "selection": selection.to_dict() if selection is not None else None,
        "calibration": calibration.to_dict() if calibration is not None else None,
        "extra": extra or {},
    })
    return version


def load_model(directory: str | os.PathLike, *, verify: bool = True) -> tuple[VAE, VAEConfig, dict]:
    """(model, config, meta) from :func:`save_model`.

    ``meta``: model_version, selection (summary dict, plus ``indices`` when saved),
    calibration (a :class:`Calibration` or None), extra. With ``verify`` the version is
    recomputed from the loaded weights and must match.
    """
    d = Path(directory).absolute()
    info = json.loads((d / "model.json").read_text())
    cfg = VAEConfig.from_dict(info["config"])
    abstract = nnx.eval_shape(lambda: build(cfg, 0))
    graphdef, abstract_params = nnx.split(abstract, nnx.Param)
    with ocp.StandardCheckpointer() as ckpt:
        params = ckpt.restore(d / "weights", abstract_params)
    model = nnx.merge(graphdef, params)
    if verify and model_version(cfg, model) != info["model_version"]:
        raise ValueError(f"{d}: weights do not match model_version {info['model_version']}")
    selection = info.get("selection")
    if selection is not None and (d / "selection_indices.npy").exists():
        selection = {**selection, "indices": np.load(d / "selection_indices.npy", allow_pickle=False)}
    cal = info.get("calibration")
    meta = {"model_version": info["model_version"], "selection": selection,
            "calibration": Calibration.from_dict(cal) if cal else None, "extra": info.get("extra", {})}
    return model, cfg, meta
