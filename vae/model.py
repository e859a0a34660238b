"""The convolutional VAE (Flax NNX), its input transform, loss and model version.

Spaces: the tile store holds robustly standardised power ``z`` (noise median 0, robust
sigma 1; RFI up to |z| ~ 1e3). :func:`transform_input` maps store tiles into the model's
input space (optional robust pre-mask, then ``input_transform``); the network reconstructs
in that same space. A residual for scoring is therefore
``transform_input(cfg, tiles) - reconstruct(model, tiles)``.

Layout: tiles are ``N x T x F`` (time, frequency); the network works channels-last
(``N x T x F x C``).
"""

from __future__ import annotations

import functools
import hashlib
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from vae import ops
from vae.config import VAEConfig

_ACT = {"relu": jax.nn.relu, "gelu": jax.nn.gelu, "silu": jax.nn.silu}
_DTYPE = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# VAEConfig.conv_impl -> (vae.ops.conv2d impl, vae.ops.conv_transpose2d impl)
_CONV_IMPL = {"gemm": "xla", "phase": "xla", "tapmm": "tapmm", "xla": "xla"}
_TRANSPOSE_IMPL = {"gemm": "gemm", "phase": "xla", "tapmm": "tapmm", "xla": "lax"}


def transform_input(cfg: VAEConfig, tiles_NxTxF):
    """Store tiles (robust z) -> model input space, as float32.

    * ``premask``: pixels with |z| > ``premask_sigma`` are set to 0 (the article's 3 sigma
      pre-mask; NaN stays NaN so that bad input is caught);
    * ``none``: z; ``clip``: clip(z, -s, s); ``asinh``: asinh(z / s) (~z/s in the noise,
      log-compressed for bright RFI); ``affine01``: (clip(z, -s, s) + s) / 2s in [0, 1] (article
      preset, s = 5: noise at 0.5 +- 0.1); ``sigmoid01``: sigmoid(z / s) in (0, 1).
    """
    z = jnp.asarray(tiles_NxTxF, jnp.float32)
    if cfg.premask:
        z = jnp.where(jnp.abs(z) > cfg.premask_sigma, jnp.zeros_like(z), z)
    s = cfg.input_scale
    if cfg.input_transform == "none":
        return z
    if cfg.input_transform == "clip":
        return jnp.clip(z, -s, s)
    if cfg.input_transform == "asinh":
        return jnp.arcsinh(z / s)
    if cfg.input_transform == "affine01":
        return (jnp.clip(z, -s, s) + s) / (2 * s)
    return jax.nn.sigmoid(z / s)  # sigmoid01


def _lecun(shape: tuple[int, ...], rng: np.random.Generator):
    """LeCun-normal weights (std 1/sqrt(fan_in), fan_in = all but the last axis) from a seeded
    numpy generator: initialising with ``jax.random`` compiled one XLA program per weight
    shape (~1-2 s each on a busy 2-core CPU); this costs nothing and is as reproducible."""
    w = rng.standard_normal(shape, dtype=np.float32) / np.float32(math.sqrt(math.prod(shape[:-1])))
    return jnp.asarray(w)


class Dense(nnx.Module):
    """Fully connected layer ``x @ W + b``; float32 parameters, ``dtype`` compute."""

    def __init__(self, din: int, dout: int, *, dtype=jnp.float32, rng: np.random.Generator):
        self.kernel = nnx.Param(_lecun((din, dout), rng))
        self.bias = nnx.Param(jnp.asarray(np.zeros((dout,), np.float32)))
        self.dtype = dtype

    def __call__(self, x_NxD):
        return x_NxD.astype(self.dtype) @ self.kernel[...].astype(self.dtype) + self.bias[...].astype(self.dtype)


def inverse_transform(cfg: VAEConfig, y_NxTxF):
    """Model space -> store space (robust z), the inverse of :func:`transform_input` where it has one.

    Lets a reconstruction be compared with the tile in the units the noise is standardised in
    (the line search of the score needs linear units: asinh would compress a 3 sigma line pixel
    by 40%). ``clip`` and ``affine01`` are inverted inside their clip range.
    """
    y = jnp.asarray(y_NxTxF, jnp.float32)
    s = cfg.input_scale
    if cfg.input_transform in ("none", "clip"):
        return y
    if cfg.input_transform == "asinh":
        return s * jnp.sinh(y)
    if cfg.input_transform == "affine01":
        return y * (2 * s) - s
    eps = 1e-6  # sigmoid01
    y = jnp.clip(y, eps, 1 - eps)
    return s * jnp.log(y / (1 - y))


class Conv(nnx.Module):
    """SAME-padded strided convolution (or transposed convolution) with bias, via ``vae.ops``."""

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int], *,
                 transpose: bool = False, impl: str = "gemm", dtype=jnp.float32, rng: np.random.Generator):
        self.kernel = nnx.Param(_lecun((*kernel, cin, cout), rng))
        self.bias = nnx.Param(jnp.asarray(np.zeros((cout,), np.float32)))
        self.stride, self.transpose, self.impl, self.dtype = tuple(stride), transpose, impl, dtype

    def __call__(self, x_NxHxWxC):
        w = self.kernel[...].astype(self.dtype)
        x = x_NxHxWxC.astype(self.dtype)
        if self.transpose:
            y = ops.conv_transpose2d(x, w, self.stride, impl=_TRANSPOSE_IMPL[self.impl])
        else:
            y = ops.conv2d(x, w, self.stride, impl=_CONV_IMPL[self.impl])
        return y + self.bias[...].astype(self.dtype)


class VAE(nnx.Module):
    """Convolutional VAE whose layer sizes follow ``cfg.tile`` and ``cfg.strides``.

    Encoder: strided convolutions -> flatten -> (dense ``hidden``) -> dense mean and
    log-variance. Decoder (``subpixel``): dense -> low-resolution grid -> per layer a 3x3
    convolution to ``C_out * s_t * s_f`` channels + depth-to-space, the last one straight to
    one channel. Decoder (``transpose``, the article): dense -> grid -> transposed
    convolutions mirroring the encoder widths -> a 3x3 transposed convolution to one
    channel. Output head: linear or sigmoid.
    """

    def __init__(self, cfg: VAEConfig, *, seed: int = 0):
        self.cfg = cfg
        rng = np.random.default_rng([int(seed), 0x5E71])  # weights: a function of the seed only
        dt = _DTYPE[cfg.compute_dtype]
        grid = cfg.grid()
        chans = (1,) + tuple(cfg.channels)
        self.enc = nnx.List([
            Conv(chans[i], chans[i + 1], cfg.kernels[i], cfg.strides[i], impl=cfg.conv_impl, dtype=dt, rng=rng)
            for i in range(len(cfg.channels))
        ])
        self.grid_shape = (*grid[-1], cfg.channels[-1])
        flat = math.prod(self.grid_shape)
        lin = dict(dtype=dt, rng=rng)
        self.hidden = Dense(flat, cfg.hidden, **lin) if cfg.hidden else None
        head_in = cfg.hidden or flat
        self.mean = Dense(head_in, cfg.latent, **lin)
        self.logvar = Dense(head_in, cfg.latent, **lin)
        self.dense = Dense(cfg.latent, flat, **lin)
        dec = []
        n = len(cfg.channels)
        if cfg.decoder == "subpixel":
            for i in reversed(range(n)):
                cout = chans[i]  # ..., c1, then 1 output channel
                st, sf = cfg.strides[i]
                dec.append(Conv(chans[i + 1], cout * st * sf, (3, 3), (1, 1), impl=cfg.conv_impl, dtype=dt, rng=rng))
        else:
            widths = [cfg.channels[-1]] + [cfg.channels[i] for i in reversed(range(n))]
            for j, i in enumerate(reversed(range(n))):
                dec.append(Conv(widths[j], widths[j + 1], (3, 3), cfg.strides[i], transpose=True,
                                impl=cfg.conv_impl, dtype=dt, rng=rng))
            dec.append(Conv(widths[-1], 1, (3, 3), (1, 1), transpose=True, impl=cfg.conv_impl, dtype=dt, rng=rng))
        self.dec = nnx.List(dec)
        self.log_sigma = nnx.Param(jnp.asarray(np.float32(0.0))) if cfg.loss == "gaussian" else None

    def encode(self, x_NxTxF):
        """Model-space tiles -> (mean_NxL, logvar_NxL), float32."""
        act = _ACT[self.cfg.activation]
        h = x_NxTxF[..., None]
        for layer in self.enc:
            h = act(layer(h))
        h = h.reshape(h.shape[0], -1)
        if self.hidden is not None:
            h = act(self.hidden(h))
        return self.mean(h).astype(jnp.float32), self.logvar(h).astype(jnp.float32)

    def decode(self, z_NxL):
        """Latent -> reconstruction ``N x T x F`` in the model's input space, float32."""
        cfg, act = self.cfg, _ACT[self.cfg.activation]
        h = act(self.dense(z_NxL)).reshape(z_NxL.shape[0], *self.grid_shape)
        n = len(cfg.channels)
        if cfg.decoder == "subpixel":
            for j, layer in enumerate(self.dec):
                st, sf = cfg.strides[n - 1 - j]
                h = ops.depth_to_space(layer(h), st, sf)
                if j < len(self.dec) - 1:
                    h = act(h)
        else:
            for layer in self.dec[:-1]:
                h = act(layer(h))
            h = self.dec[-1](h)
        out = h[..., 0].astype(jnp.float32)
        return jax.nn.sigmoid(out) if cfg.output == "sigmoid" else out

    def __call__(self, x_NxTxF, key):
        """Model-space tiles + PRNG key -> (recon_NxTxF, mean_NxL, logvar_NxL); z sampled."""
        mean, logvar = self.encode(x_NxTxF)
        z = mean + jnp.exp(0.5 * logvar) * jax.random.normal(key, mean.shape, mean.dtype)
        return self.decode(z), mean, logvar


def build(cfg: VAEConfig, seed: int = 0) -> VAE:
    """A freshly initialised model; the weights are a function of (cfg, seed) only."""
    return VAE(cfg, seed=seed)


def loss_terms(model: VAE, x_NxTxF, key):
    """(loss, metrics) for model-space tiles: the batch means of recon + beta * KL.

    ``mse_sum`` (article): recon = sum over pixels of squared error (= MSE x pixels).
    ``gaussian``: recon = Gaussian negative log-likelihood with a learned global sigma.
    KL = KL(q(z|x) || N(0, I)), summed over latent dimensions.
    """
    cfg = model.cfg
    recon_NxTxF, mean, logvar = model(x_NxTxF, key)
    sq_N = jnp.sum(jnp.square(x_NxTxF - recon_NxTxF), axis=(1, 2))
    if cfg.loss == "mse_sum":
        rec_N = sq_N
    else:
        ls = model.log_sigma[...]
        npix = x_NxTxF.shape[1] * x_NxTxF.shape[2]
        rec_N = 0.5 * sq_N * jnp.exp(-2 * ls) + npix * (ls + 0.5 * math.log(2 * math.pi))
    kl_N = -0.5 * jnp.sum(1 + logvar - jnp.square(mean) - jnp.exp(logvar), axis=-1)
    rec, kl = jnp.mean(rec_N), jnp.mean(kl_N)
    loss = rec + cfg.beta * kl
    return loss, {"loss": loss, "recon": rec, "kl": kl, "mse": jnp.mean(sq_N) / (x_NxTxF.shape[1] * x_NxTxF.shape[2])}


def _default_microbatch() -> int:
    """Tiles per inner step when scoring: 128 on CPUs (cache-sized: ~2x faster than one big
    batch of 1024 here), the whole batch on accelerators."""
    return 128 if jax.default_backend() == "cpu" else 0


def _microbatched(fn, tiles_NxTxF, mb: int):
    """``fn`` over slices of ``mb`` tiles with ``lax.map`` (padding the last), concatenated."""
    n = tiles_NxTxF.shape[0]
    if not mb or n <= mb:
        return fn(tiles_NxTxF)
    k = -(-n // mb)
    t = jnp.pad(tiles_NxTxF, ((0, k * mb - n),) + ((0, 0),) * (tiles_NxTxF.ndim - 1))
    out = jax.lax.map(fn, t.reshape(k, mb, *tiles_NxTxF.shape[1:]))
    return out.reshape(k * mb, *out.shape[2:])[:n]


@functools.partial(nnx.jit, static_argnames="microbatch")
def _reconstruct(model: VAE, tiles_NxTxF, microbatch: int):
    def fn(t):
        mean, _ = model.encode(transform_input(model.cfg, t))
        return model.decode(mean)

    return _microbatched(fn, tiles_NxTxF, microbatch)


@functools.partial(nnx.jit, static_argnames="microbatch")
def _mse_score(model: VAE, tiles_NxTxF, microbatch: int):
    def fn(t):
        x = transform_input(model.cfg, t)
        mean, _ = model.encode(x)
        return jnp.mean(jnp.square(x - model.decode(mean)), axis=(1, 2))

    return _microbatched(fn, tiles_NxTxF, microbatch)


def reconstruct(model: VAE, tiles_NxTxF, *, microbatch: int | None = None):
    """Store tiles -> reconstruction from the latent mean, in the transformed input space.

    Jitted (once per batch shape); ``microbatch`` tiles are processed per inner step
    (default: 128 on CPUs, all at once on accelerators).
    """
    mb = _default_microbatch() if microbatch is None else int(microbatch)
    return _reconstruct(model, jnp.asarray(tiles_NxTxF, jnp.float32), mb)


def mse_score(model: VAE, tiles_NxTxF, *, microbatch: int | None = None):
    """Per-tile mean squared residual ``transform_input - reconstruct`` (the default score)."""
    mb = _default_microbatch() if microbatch is None else int(microbatch)
    return _mse_score(model, jnp.asarray(tiles_NxTxF, jnp.float32), mb)


def model_version(cfg: VAEConfig, model: VAE) -> str:
    """Short hex sha256 over the config JSON and the weights' bytes (in path order)."""
    h = hashlib.sha256(cfg.to_json().encode())
    params = nnx.state(model, nnx.Param)
    for path, leaf in sorted(jax.tree_util.tree_flatten_with_path(params)[0], key=lambda kv: jax.tree_util.keystr(kv[0])):
        a = np.asarray(jax.device_get(leaf))
        h.update(f"{jax.tree_util.keystr(path)}:{a.dtype}:{a.shape};".encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def flops_per_tile(cfg: VAEConfig) -> dict:
    """Multiply-add FLOPs (x2) per tile of the forward pass, by part (convolutions and dense)."""
    grid = cfg.grid()
    sizes = [tuple(cfg.tile)] + grid
    chans = (1,) + tuple(cfg.channels)
    enc = sum(2 * math.prod(sizes[i + 1]) * math.prod(cfg.kernels[i]) * chans[i] * chans[i + 1] for i in range(len(grid)))
    flat = math.prod(grid[-1]) * cfg.channels[-1]
    dense = 2 * (flat * (cfg.hidden or 0) + (cfg.hidden or flat) * 2 * cfg.latent + cfg.latent * flat)
    n = len(grid)
    dec = 0
    if cfg.decoder == "subpixel":
        for i in reversed(range(n)):
            dec += 2 * math.prod(sizes[i + 1]) * 9 * chans[i + 1] * chans[i] * math.prod(cfg.strides[i])
    else:  # transposed convs as computed by vae.ops (input resolution, all 9 taps)
        widths = [cfg.channels[-1]] + [cfg.channels[i] for i in reversed(range(n))]
        for j, i in enumerate(reversed(range(n))):
            dec += 2 * math.prod(sizes[i + 1]) * 9 * widths[j] * widths[j + 1]
        dec += 2 * math.prod(cfg.tile) * 9 * widths[-1]
    return {"encoder": enc, "dense": dense, "decoder": dec, "total": enc + dense + dec}
