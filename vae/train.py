"""Training: a pure train step compiled once, and :func:`fit` (epochs, devices, checkpoints).

``train_step(state, tiles_NxTxF, *, graphdef, tx) -> (state, metrics)`` is pure: the
reparameterisation noise of step ``s`` is ``fold_in(key, s)``, the data order of an epoch
is a function of (seed, epoch), so the same seed and data give the same weights, and a
training resumed from a checkpoint ends with the weights of an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import math
import time
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vae import parallel
from vae.batches import ArrayBatches
from vae.config import TrainConfig, VAEConfig
from vae.model import VAE, build, loss_terms, transform_input

log = logging.getLogger(__name__)


class TrainState(NamedTuple):
    """Everything a step changes, plus the base PRNG key (raw uint32 key data)."""

    step: jax.Array  # int32 scalar: steps done
    params: Any  # nnx.State of the model's nnx.Param variables
    opt_state: Any  # optax state
    key: jax.Array  # uint32 key data; step s uses fold_in(key, s)


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns."""

    model: VAE  # trained model
    history: list[dict]  # per finished epoch: epoch, loss, recon, kl, mse, tiles_per_s, steps
    steps: int  # steps done in total (including those before a resume)
    state: TrainState  # final training state
    selection: Any = None  # the source's TileSelection, if any
    compile_s: float = 0.0  # compilation time of the train step
    resumed_from: int | None = None  # step restored from a checkpoint, if any


def make_optimizer(train_cfg: TrainConfig, total_steps: int) -> optax.GradientTransformation:
    """Adam with optional global-norm clipping and a warm-up + cosine schedule."""
    lr = train_cfg.learning_rate
    if train_cfg.schedule == "cosine" and total_steps > 1:
        warmup = min(train_cfg.warmup_steps, total_steps // 2)
        sched = optax.warmup_cosine_decay_schedule(0.0 if warmup else lr, lr, warmup, total_steps, end_value=lr / 10)
    else:
        sched = lr
    parts = [optax.clip_by_global_norm(train_cfg.clip_norm)] if train_cfg.clip_norm > 0 else []
    return optax.chain(*parts, optax.adam(sched))


def init_state(vae_cfg: VAEConfig, train_cfg: TrainConfig, tx: optax.GradientTransformation):
    """(graphdef, TrainState) of a freshly built model."""
    model = build(vae_cfg, train_cfg.seed)
    graphdef, params = nnx.split(model, nnx.Param)
    key = jax.random.key_data(jax.random.fold_in(jax.random.key(train_cfg.seed), 1))
    return graphdef, TrainState(jnp.zeros((), jnp.int32), params, tx.init(params), key)


def train_step(state: TrainState, tiles_NxTxF, *, graphdef, tx) -> tuple[TrainState, dict]:
    """One optimisation step on store-space tiles; pure."""
    model = nnx.merge(graphdef, state.params)
    x = transform_input(model.cfg, tiles_NxTxF)
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), state.step)

    def loss_fn(params):
        return loss_terms(nnx.merge(graphdef, params), x, key)

    (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    updates, opt_state = tx.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    metrics["grad_norm"] = optax.tree.norm(grads)
    return TrainState(state.step + 1, params, opt_state, state.key), metrics


class _Program:
    """The compiled train step of one (model, optimiser, batch, device) layout."""

    def __init__(self, vae_cfg: VAEConfig, opt_cfg: TrainConfig, planned: int, n_dev: int):
        self.tx = make_optimizer(opt_cfg, planned)
        graphdef = nnx.split(nnx.eval_shape(lambda: build(vae_cfg, 0)), nnx.Param)[0]
        step_fn = functools.partial(train_step, graphdef=graphdef, tx=self.tx)
        x_spec = jax.ShapeDtypeStruct((opt_cfg.batch_size, *vae_cfg.tile), jnp.float32)
        if n_dev > 1:
            mesh = parallel.make_mesh(jax.local_devices()[:n_dev])
            rep, dat = parallel.replicated(mesh), parallel.batch_sharded(mesh)
            self.jitted = jax.jit(step_fn, in_shardings=(rep, dat), out_shardings=(rep, rep))
            self.x_spec = jax.ShapeDtypeStruct(x_spec.shape, x_spec.dtype, sharding=dat)
            self.state_sharding = rep
            self.put = functools.partial(jax.device_put, device=dat)
            log.info("data-parallel over %d devices", n_dev)
        else:
            self.jitted, self.x_spec, self.state_sharding, self.put = jax.jit(step_fn), x_spec, None, jnp.asarray
        self._compiled = None
        self._abstract_state = jax.eval_shape(lambda: init_state(vae_cfg, opt_cfg, self.tx)[1])
        if self.state_sharding is not None:
            self._abstract_state = jax.tree.map(
                lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=self.state_sharding), self._abstract_state)

    def compiled(self):
        if self._compiled is None:
            self._compiled = self.jitted.lower(self._abstract_state, self.x_spec).compile()
        return self._compiled


def _optimizer_key(train_cfg: TrainConfig) -> TrainConfig:
    """The fields of a TrainConfig the compiled step depends on (seed, epochs... zeroed)."""
    return dataclasses.replace(train_cfg, epochs=0, seed=0, checkpoint_every=1, keep_checkpoints=1, max_steps=0,
                               data_parallel=False)


@functools.lru_cache(maxsize=8)
def _program(vae_cfg: VAEConfig, opt_cfg: TrainConfig, planned: int, n_dev: int) -> _Program:
    """Compiled once per process and layout: repeated fits (tests, resumes, sweeps of seeds) reuse it."""
    return _Program(vae_cfg, opt_cfg, planned, n_dev)


def fit(source, vae_cfg: VAEConfig, train_cfg: TrainConfig, *, checkpoint_dir: str | None = None,
        on_epoch: Callable[[int, dict], None] | None = None, resume: bool = True) -> FitResult:
    """Train ``vae_cfg`` on ``source`` for ``train_cfg.epochs`` epochs.

    ``source``: a batch source (:class:`vae.data.ZarrBatches`, :class:`vae.batches.ArrayBatches`)
    or an array ``N x T x F`` of store-space tiles. With ``checkpoint_dir`` the state is saved
    every ``checkpoint_every`` steps and at the end, and (``resume=True``) training continues
    from the latest checkpoint there. With several local devices and ``data_parallel`` the
    batch is sharded over a ``data`` mesh axis and the parameters replicated.
    ``on_epoch(epoch, metrics)`` is called after each finished epoch.
    A non-finite loss raises ``FloatingPointError`` naming the step, epoch, batch and tiles.
    """
    if isinstance(source, np.ndarray):
        source = ArrayBatches(source, train_cfg.batch_size, shuffle_seed=train_cfg.seed)
    if source.batch_size != train_cfg.batch_size:
        raise ValueError(f"source batch_size {source.batch_size} != train_cfg.batch_size {train_cfg.batch_size}")
    shape = getattr(source, "tile_shape", None)
    if shape is not None and tuple(shape) != tuple(vae_cfg.tile):
        raise ValueError(f"source tiles are {tuple(shape)}, the model expects {vae_cfg.tile}")
    spe = source.steps_per_epoch
    planned = spe * train_cfg.epochs
    stop_at = min(planned, train_cfg.max_steps) if train_cfg.max_steps else planned
    n_dev = len(jax.local_devices()) if train_cfg.data_parallel else 1
    if train_cfg.batch_size % n_dev:
        raise ValueError(f"batch_size {train_cfg.batch_size} does not split over {n_dev} devices")
    prog = _program(vae_cfg, _optimizer_key(train_cfg), planned, n_dev)
    graphdef, state = init_state(vae_cfg, train_cfg, prog.tx)
    state = jax.device_put(state, prog.state_sharding) if prog.state_sharding is not None else state

    ckpt = None
    resumed_from = None
    history: list[dict] = []
    selection = getattr(source, "selection", None)
    if checkpoint_dir is not None:
        from vae.checkpoint import TrainCheckpointer  # I/O only when asked for

        ckpt = TrainCheckpointer(checkpoint_dir, keep=train_cfg.keep_checkpoints)
        ckpt.check_run({"vae_config": vae_cfg.to_dict(), "train_config": train_cfg.to_dict(),
                        "selection": selection.to_dict() if selection is not None else None,
                        "selection_digest": selection.digest if selection is not None else None,
                        "steps_per_epoch": spe}, resume=resume)
        last = ckpt.latest_step() if resume else None
        if last is not None:
            state = ckpt.restore(last, state)
            resumed_from = int(state.step)
            history = [h for h in ckpt.history() if h["epoch"] < resumed_from // spe]
            log.info("resumed from step %d in %s", resumed_from, checkpoint_dir)

    t0 = time.perf_counter()
    compiled = prog.compiled()
    compile_s = time.perf_counter() - t0
    put = prog.put

    step = int(state.step)
    saved = resumed_from
    try:
        for epoch in range(step // spe if spe else 0, train_cfg.epochs):
            if step >= stop_at:
                break
            start = step - epoch * spe
            sums: dict[str, float] = {}
            n_steps, n_tiles, t_epoch = 0, 0, time.perf_counter()
            pending = None  # the last dispatched step, checked while the next one runs

            def finish(p) -> None:
                nonlocal n_steps, n_tiles, saved
                p_state, p_metrics, p_batch, p_b, p_step = p
                metrics = jax.device_get(p_metrics)
                loss = float(metrics["loss"])
                if not math.isfinite(loss):
                    ix = np.asarray(p_batch.index_N)
                    raise FloatingPointError(
                        f"non-finite loss {loss} at step {p_step} (epoch {epoch}, batch {start + p_b}, "
                        f"tiles {ix.min() if ix.size else '-'}..{ix.max() if ix.size else '-'} of the source)")
                n_steps += 1
                n_tiles += len(p_batch.tiles_NxTxF)
                for k, v in metrics.items():
                    sums[k] = sums.get(k, 0.0) + float(v)
                if ckpt is not None and (p_step + 1) % train_cfg.checkpoint_every == 0:
                    ckpt.save(p_step + 1, p_state)
                    saved = p_step + 1

            for b, batch in enumerate(source.batches(epoch, start=start)):
                state, metrics = compiled(state, put(batch.tiles_NxTxF))  # dispatched asynchronously
                if pending is not None:
                    finish(pending)
                pending = (state, metrics, batch, b, step)
                step += 1
                if step >= stop_at:
                    break
            if pending is not None:
                finish(pending)
            if start + n_steps < spe:  # stopped inside the epoch (max_steps)
                break
            dt = time.perf_counter() - t_epoch
            entry = {"epoch": epoch, **{k: v / max(n_steps, 1) for k, v in sums.items()},
                     "tiles_per_s": n_tiles / dt if dt > 0 else float("nan"), "steps": step,
                     "resumed_at_batch": start or None}
            history.append(entry)
            if ckpt is not None:
                ckpt.write_history(history)
            log.info("epoch %d: loss %.4g recon %.4g kl %.4g (%.0f tiles/s)", epoch, entry["loss"],
                     entry["recon"], entry["kl"], entry["tiles_per_s"])
            if on_epoch is not None:
                on_epoch(epoch, entry)
        if ckpt is not None and saved != step:
            ckpt.save(step, state)
    finally:
        if ckpt is not None:
            ckpt.close()

    model = nnx.merge(graphdef, jax.tree.map(jnp.asarray, jax.device_get(state.params)))
    return FitResult(model=model, history=history, steps=step, state=state, selection=selection,
                     compile_s=compile_s, resumed_from=resumed_from)
