"""Configurations of the VAE auditor: frozen dataclasses and named presets.

``VAEConfig`` describes the model (and how store tiles are mapped into its input space),
``TrainConfig`` how it is trained. Both serialise to JSON (``to_dict`` / ``from_dict``)
and are saved beside every checkpoint.

Presets (``preset(name, tile)``):

* ``"article"`` - the design article's Keras blueprint: two stride-2 3x3 convolutions
  (32, 64 filters, ReLU), flatten, dense to a 32-d latent (mean, log-variance), a mirrored
  decoder (dense, 3x3 stride-2 transposed convolutions 64 and 32, a 3x3 transposed
  convolution to 1 channel) with a sigmoid output; loss = MSE x pixels + 0.001 KL. Tiles are
  mapped into [0, 1] by ``input_transform="affine01"``: ``(clip(z, -5, 5) + 5) / 10``.
* ``"default"`` - lean and fast, for 16 x 256 tiles and any other shape: three strided
  convolutions (8, 16, 32 channels) whose strides reduce each axis towards a 2 x 8 grid
  (frequency by more than time on 16 x 256 tiles: strides (2,4), (2,4), (2,2)), a 16-d latent,
  and a sub-pixel decoder (3x3 convolution at low resolution + depth-to-space, no
  transposed convolutions); input ``asinh(z)`` (linear near the noise, logarithmic for
  RFI), linear output. About 3 MFLOP per tile forward, vs ~230 MFLOP for the article's
  decoder alone.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any

INPUT_TRANSFORMS = ("none", "clip", "asinh", "affine01", "sigmoid01")
LOSSES = ("mse_sum", "gaussian")
DECODERS = ("subpixel", "transpose")
OUTPUTS = ("linear", "sigmoid")
ACTIVATIONS = ("relu", "gelu", "silu")
CONV_IMPLS = ("gemm", "phase", "tapmm", "xla")
DTYPES = ("float32", "bfloat16")
SCHEDULES = ("constant", "cosine")


def _tuplify(v: Any) -> Any:
    return tuple(_tuplify(x) for x in v) if isinstance(v, (list, tuple)) else v


@dataclasses.dataclass(frozen=True)
class VAEConfig:
    """Model hyper-parameters; every size is derived from these, none is hard-coded."""

    name: str = "default"  # preset name, recorded with the model
    tile: tuple[int, int] = (16, 256)  # (time, freq) pixels of one tile
    channels: tuple[int, ...] = (8, 16, 32)  # encoder convolution widths; the decoder mirrors them
    strides: tuple[tuple[int, int], ...] = ((2, 4), (2, 4), (2, 2))  # (time, freq) stride per encoder layer
    kernels: tuple[tuple[int, int], ...] = ((3, 5), (3, 5), (3, 3))  # (time, freq) kernel per encoder layer
    hidden: int = 0  # width of a dense layer between the convolutions and the latent (0: none)
    latent: int = 16  # latent dimensions
    decoder: str = "subpixel"  # "subpixel" (conv + depth-to-space) or "transpose" (article: transposed convs)
    output: str = "linear"  # output head: "linear" or "sigmoid" (needs inputs in [0, 1])
    activation: str = "relu"  # hidden non-linearity: relu, gelu, silu
    input_transform: str = "asinh"  # store z -> model input: none, clip, asinh, affine01, sigmoid01
    input_scale: float = 1.0  # asinh(z/s); clip to +-s; affine01 (clip(z,-s,s)+s)/2s; sigmoid01 sigmoid(z/s)
    premask: bool = False  # apply the article's robust pre-mask (|z| > premask_sigma -> 0) before the transform
    premask_sigma: float = 3.0  # pre-mask threshold in robust sigmas
    loss: str = "mse_sum"  # "mse_sum": sum of squared errors per tile + beta KL; "gaussian": NLL, learned sigma
    beta: float = 1e-3  # weight of the KL term
    conv_impl: str = "gemm"  # see vae.ops: gemm (transposed convs as matmul + col2im), phase, tapmm, xla (plain lax)
    compute_dtype: str = "float32"  # "bfloat16" for accelerators (parameters and loss stay float32)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tile", tuple(int(v) for v in self.tile))
        for f in ("channels", "strides", "kernels"):
            object.__setattr__(self, f, _tuplify(getattr(self, f)))
        for field, allowed in (
            ("input_transform", INPUT_TRANSFORMS), ("loss", LOSSES), ("decoder", DECODERS),
            ("output", OUTPUTS), ("activation", ACTIVATIONS), ("conv_impl", CONV_IMPLS),
            ("compute_dtype", DTYPES),
        ):
            if getattr(self, field) not in allowed:
                raise ValueError(f"{field}={getattr(self, field)!r}; expected one of {allowed}")
        if not len(self.channels) == len(self.strides) == len(self.kernels) >= 1:
            raise ValueError("channels, strides and kernels need one entry per encoder layer")
        if self.output == "sigmoid" and self.input_transform not in ("affine01", "sigmoid01"):
            raise ValueError("a sigmoid output needs inputs in [0, 1]: input_transform affine01 or sigmoid01")
        self.grid()  # validates divisibility

    def grid(self) -> list[tuple[int, int]]:
        """(time, freq) size after each encoder layer; raises if the tile does not divide."""
        t, f = self.tile
        out = []
        for st, sf in self.strides:
            if t % st or f % sf:
                raise ValueError(f"tile {self.tile} does not divide by the strides {self.strides}")
            t, f = t // st, f // sf
            out.append((t, f))
        return out

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        return cls(**{k: _tuplify(v) for k, v in d.items()})

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and bookkeeping; the data order is a function of (seed, epoch)."""

    batch_size: int = 128  # tiles per step (global, split over devices)
    epochs: int = 10  # passes over the training selection
    learning_rate: float = 1e-3  # peak Adam learning rate
    schedule: str = "cosine"  # "constant" or "cosine" (linear warm-up, cosine decay to lr/10)
    warmup_steps: int = 100  # warm-up steps of the cosine schedule
    clip_norm: float = 1.0  # global gradient-norm clipping (0: off)
    seed: int = 0  # initial weights, reparameterisation noise and data order
    checkpoint_every: int = 500  # steps between checkpoints (also saved at the end)
    keep_checkpoints: int = 2  # training checkpoints kept on disk
    max_steps: int = 0  # stop after this many steps in total (0: run all epochs)
    data_parallel: bool = True  # shard batches over all local devices when there are several

    def __post_init__(self) -> None:
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule={self.schedule!r}; expected one of {SCHEDULES}")
        if self.batch_size < 1 or self.epochs < 0:
            raise ValueError("batch_size must be >= 1 and epochs >= 0")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        return cls(**d)


def _split_factor(size: int, target: int, layers: int, max_exp: int = 2) -> list[int]:
    """Per-layer power-of-two strides reducing ``size`` towards ``target`` (larger ones first)."""
    e = 0
    while size % 2 ** (e + 1) == 0 and size // 2 ** (e + 1) >= target and e < layers * max_exp:
        e += 1
    base, extra = divmod(e, layers)
    return [2 ** (base + (i < extra)) for i in range(layers)]


def _kernel(stride: int) -> int:
    """A kernel wider than the stride, so every input pixel is seen: 3 at strides 1-2, 5 at 4."""
    return max(3, stride + 1)


def preset(name: str, tile: tuple[int, int] = (16, 256), **overrides: Any) -> VAEConfig:
    """A named configuration adapted to ``tile`` = (time, freq); ``overrides`` replace fields."""
    tile = tuple(int(v) for v in tile)
    if name == "article":
        cfg = VAEConfig(
            name="article", tile=tile, channels=(32, 64), strides=((2, 2), (2, 2)),
            kernels=((3, 3), (3, 3)), hidden=0, latent=32, decoder="transpose", output="sigmoid",
            activation="relu", input_transform="affine01", input_scale=5.0, loss="mse_sum", beta=1e-3,
        )
    elif name == "default":
        layers = 3
        st = _split_factor(tile[0], 2, layers)
        sf = _split_factor(tile[1], 8, layers)
        strides = tuple(zip(st, sf))
        kernels = tuple((_kernel(a), _kernel(b)) for a, b in strides)
        cfg = VAEConfig(name="default", tile=tile, channels=(8, 16, 32), strides=strides, kernels=kernels,
                        latent=16, decoder="subpixel", output="linear", input_transform="asinh")
    else:
        raise ValueError(f"unknown preset {name!r}; expected 'article' or 'default'")
    return dataclasses.replace(cfg, **overrides) if overrides else cfg
