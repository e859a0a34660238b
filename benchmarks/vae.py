"""Throughput of the VAE: the framework (``vae.train.fit``) beside plain reference loops.

    python benchmarks/vae.py --preset article --tile 64x64 --json
    python benchmarks/vae.py --preset default --tile 16x256 --json

Prints one JSON line per run with, for the model as configured (``conv_impl`` of the preset,
``gemm`` unless ``--impl``):

* ``train_tiles_per_s`` - ``vae.train.fit`` on in-memory batches (batch ``--batch``, 128),
  second of two epochs of ``--steps`` steps, NaN checks and metrics included; ``compile_s``
  its compile time;
* ``bare_train_tiles_per_s`` - the same model and data in a bare ``jax.jit`` loop (no
  checks, no metrics): ``framework_overhead`` = 1 - fit / bare;
* ``score_tiles_per_s`` - ``vae.model.mse_score`` at batch ``--score-batch`` (1024);
* ``reference`` - the same architecture and weights with plain ``lax`` convolutions and
  ``lax.conv_transpose`` (what ``nnx.Conv``/``nnx.ConvTranspose`` compute) in a bare
  ``jax.jit`` loop: ``speedup_train`` / ``speedup_score`` are measured side by side in this
  process, and ``max_abs_diff_vs_reference`` checks that both compute the same function;
* ``peak_rss_mb`` (host high-water mark after each part) and ``peak_device_mb`` (accelerators).

The Keras/TensorFlow figures of STACK_NOTES (~100 / ~290 tiles/s for the article's model on
this kind of machine) are quoted, not re-measured: TensorFlow is not installed here.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import resource
import sys
import time

# this file is called vae.py: run as a script, its folder must not shadow the vae package
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from vae import model as M  # noqa: E402
from vae import train
from vae.batches import ArrayBatches
from vae.config import TrainConfig, preset

KERAS_NOTES = {"train_tiles_per_s": 100, "score_tiles_per_s": 290,
               "source": "STACK_NOTES.md (article model, 64x64, batch 128, 2 threads); not measured here"}


def synthetic_tiles(n: int, tile: tuple[int, int], seed: int = 0) -> np.ndarray:
    """Store-space tiles: Gaussian noise, persistent RFI lines in a third, a few bright bursts."""
    rng = np.random.default_rng(seed)
    t, f = tile
    x = rng.standard_normal((n, t, f)).astype(np.float32)
    rows = np.arange(0, n, 3)
    x[rows, :, rng.integers(0, f, rows.size)] += rng.uniform(5, 200, (rows.size, 1)).astype(np.float32)
    burst = np.arange(1, n, 17)
    x[burst, rng.integers(0, t, burst.size), :] += 30.0
    return x


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def peak_device_mb() -> float | None:
    dev = jax.local_devices()[0]
    if dev.platform == "cpu":
        return None
    stats = dev.memory_stats() or {}
    return stats.get("peak_bytes_in_use", 0) / 2**20


def bare_loop(cfg, tiles, batch: int, steps: int, seed: int = 0) -> dict:
    """The straightforward loop: build, jax.jit a value_and_grad + Adam step, iterate."""
    model = M.build(cfg, seed)
    graphdef, params = nnx.split(model, nnx.Param)
    tx = optax.adam(1e-3)
    opt_state = tx.init(params)

    @jax.jit
    def step(params, opt_state, tiles_NxTxF, key):
        x = M.transform_input(cfg, tiles_NxTxF)
        loss_fn = lambda p: M.loss_terms(nnx.merge(graphdef, p), x, key)[0]  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    key = jax.random.key(seed)
    t0 = time.perf_counter()
    params, opt_state, loss = step(params, opt_state, jnp.asarray(tiles[:batch]), key)
    loss.block_until_ready()
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        x = jnp.asarray(tiles[i * batch:(i + 1) * batch])
        params, opt_state, loss = step(params, opt_state, x, jax.random.fold_in(key, i))
    loss.block_until_ready()
    dt = time.perf_counter() - t0
    return {"train_tiles_per_s": steps * batch / dt, "first_step_s": first, "steps": steps,
            "final_loss": float(loss)}


def score_rate(model, tiles, batch: int, reps: int) -> dict:
    x = jnp.asarray(tiles[:batch])
    t0 = time.perf_counter()
    M.mse_score(model, x).block_until_ready()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(reps):
        s = M.mse_score(model, x)
    s.block_until_ready()
    return {"score_tiles_per_s": reps * batch / (time.perf_counter() - t0), "score_compile_s": compile_s}


def run(args) -> dict:
    tile = tuple(int(v) for v in args.tile.lower().split("x"))
    cfg = preset(args.preset, tile)
    if args.impl:
        cfg = dataclasses.replace(cfg, conv_impl=args.impl)
    if args.bf16:
        cfg = dataclasses.replace(cfg, compute_dtype="bfloat16")
    ref_cfg = dataclasses.replace(cfg, conv_impl="xla", compute_dtype="float32")
    b = args.batch
    tiles = synthetic_tiles(max(b * (args.steps + 1), args.score_batch), tile)
    out = {
        "preset": args.preset, "tile": list(tile), "conv_impl": cfg.conv_impl, "compute_dtype": cfg.compute_dtype,
        "batch_train": b, "batch_score": args.score_batch, "steps": args.steps,
        "backend": jax.default_backend(), "devices": jax.local_device_count(),
        "device_kind": jax.local_devices()[0].device_kind, "host": platform.node(),
        "flops_per_tile_forward": M.flops_per_tile(cfg)["total"],
    }

    # 1. the framework: vae.train.fit, one epoch of `steps` batches
    src = ArrayBatches(tiles[:b * args.steps], b, shuffle_seed=0)
    tcfg = TrainConfig(batch_size=b, epochs=2, learning_rate=1e-3, warmup_steps=0, seed=0)
    res = train.fit(src, cfg, tcfg)
    out["train_tiles_per_s"] = res.history[-1]["tiles_per_s"]  # second epoch: warm
    out["train_tiles_per_s_epochs"] = [h["tiles_per_s"] for h in res.history]
    out["compile_s"] = res.compile_s
    # 2. the same model in a bare loop
    bare = bare_loop(cfg, tiles, b, args.steps)
    out["bare_train_tiles_per_s"] = bare["train_tiles_per_s"]
    out["framework_overhead"] = 1.0 - out["train_tiles_per_s"] / bare["train_tiles_per_s"]
    # 3. scoring
    out.update(score_rate(res.model, tiles, args.score_batch, args.score_reps))
    out["peak_rss_mb"] = peak_rss_mb()
    out["peak_device_mb"] = peak_device_mb()

    # 4. the plain reference: same architecture and weights, lax convolutions, bare loop
    if args.reference:
        ref = bare_loop(ref_cfg, tiles, b, args.ref_steps)
        ref_model = M.build(ref_cfg, 0)
        ref.update(score_rate(ref_model, tiles, args.score_batch, max(1, args.score_reps // 2)))
        ours = M.build(cfg, 0)
        diff = float(jnp.max(jnp.abs(M.reconstruct(ours, tiles[:64]) - M.reconstruct(ref_model, tiles[:64]))))
        ref["peak_rss_mb"] = peak_rss_mb()
        ref["peak_device_mb"] = peak_device_mb()
        ref["compile_plus_first_step_s"] = ref.pop("first_step_s")
        out["reference"] = ref
        out["max_abs_diff_vs_reference"] = diff
        out["speedup_train"] = out["train_tiles_per_s"] / ref["train_tiles_per_s"]
        out["speedup_bare_train"] = out["bare_train_tiles_per_s"] / ref["train_tiles_per_s"]
        out["speedup_score"] = out["score_tiles_per_s"] / ref["score_tiles_per_s"]
    out["keras_tensorflow_notes"] = KERAS_NOTES
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", choices=["article", "default"], default="default")
    p.add_argument("--tile", default=None, help="TxF, e.g. 64x64 (default: 64x64 article, 16x256 default)")
    p.add_argument("--json", action="store_true", help="print one JSON line (otherwise indented)")
    p.add_argument("--steps", type=int, default=None, help="timed training steps per epoch (8 article, 40 default)")
    p.add_argument("--batch", type=int, default=128, help="training batch")
    p.add_argument("--score-batch", type=int, default=1024, help="scoring batch")
    p.add_argument("--score-reps", type=int, default=4, help="timed scoring batches")
    p.add_argument("--ref-steps", type=int, default=None,
                   help="timed steps of the plain reference (2 article: ~30 s each; --steps default)")
    p.add_argument("--no-reference", dest="reference", action="store_false", help="skip the plain reference")
    p.add_argument("--impl", choices=["gemm", "phase", "tapmm", "xla"], default=None, help="override conv_impl")
    p.add_argument("--bf16", action="store_true", help="compute in bfloat16 (accelerators)")
    args = p.parse_args(argv)
    if args.tile is None:
        args.tile = "64x64" if args.preset == "article" else "16x256"
    if args.steps is None:
        args.steps = 8 if args.preset == "article" else 40
    if args.ref_steps is None:
        args.ref_steps = 2 if args.preset == "article" else args.steps
    out = run(args)
    print(json.dumps(out) if args.json else json.dumps(out, indent=1))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
