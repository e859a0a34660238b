"""Convolutions that train fast on CPUs, with exactly the maths of ``lax``.

XLA's CPU backend computes the gradients of a transposed (input-dilated) convolution very
slowly: a 3x3, stride-2, 64->32 ``nnx.ConvTranspose`` at batch 128 took 0.48 s forward and
36 s forward + backward here, which made the article's model train at ~4 tiles/s. Measured
on this 2-core machine (batch 128, forward + backward, ms; see benchmarks/vae.py):

====================================  =========  =======  =======  ========
layer (article model)                 lax        phase    gemm     tapmm
====================================  =========  =======  =======  ========
ConvT 64->64, 16x16 -> 32x32          6,190      400      210      420
ConvT 64->32, 32x32 -> 64x64          36,400     820      450      720
ConvT 32->1, 64x64 (stride 1)         540        970      90       1,600
Conv 32->64 stride 2 (encoder)        140        -        -        160
====================================  =========  =======  =======  ========

Functions (channels-last: ``x_NxHxWxC``, kernels ``w_KHxKWxCxO``, HWIO):

* :func:`conv_transpose2d` - ``lax.conv_transpose(..., padding="SAME")`` (what
  ``flax.nnx.ConvTranspose`` computes), by ``impl``: ``"gemm"`` (default) one matrix product
  ``x @ w`` giving every input pixel's contribution to its ``kh*kw`` output taps, then a
  shift-add per output phase ("col2im"): minimal multiply-adds, and all three passes are
  large matrix products; ``"xla"`` / ``"tapmm"`` decompose it into ``s_h*s_w`` stride-1
  convolutions of the low-resolution input, one per output phase, interleaved by
  :func:`depth_to_space`; ``"lax"`` is ``lax.conv_transpose`` itself (the reference).
* :func:`conv2d` - SAME-padded strided convolution: ``"xla"`` is ``lax.conv_general_dilated``;
  ``"tapmm"`` keeps XLA's forward pass and input gradient but computes the weight gradient
  as one matrix product per kernel tap in a ``jax.custom_vjp`` (STACK_NOTES reported XLA's
  weight gradients ~20x slow; with jax 0.10.2 here, XLA's own was as fast or faster for
  ordinary convolutions, so the default keeps XLA for them).
* :func:`depth_to_space` - the sub-pixel shuffle used by the lean decoder.

All variants are tested equal to ``lax`` in values and gradients (tests/test_vae_model.py).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

_DN = ("NHWC", "HWIO", "NHWC")


def same_padding(n: int, k: int, s: int) -> tuple[int, int]:
    """TensorFlow/Flax 'SAME' padding of one axis: output length ``ceil(n / s)``."""
    out = -(-n // s)
    total = max((out - 1) * s + k - n, 0)
    return total // 2, total - total // 2


def _conv_xla(x, w, stride, padding):
    return lax.conv_general_dilated(x, w, stride, padding, dimension_numbers=_DN)


def _taps(xp, kh, kw, ho, wo, stride):
    """The input window seen by each kernel tap: ``kh * kw`` arrays ``N x ho x wo x C``."""
    sh, sw = stride
    n, _, _, c = xp.shape
    return [
        lax.slice(xp, (0, i, j, 0), (n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c), (1, sh, sw, 1))
        for i in range(kh)
        for j in range(kw)
    ]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _conv_tapmm(x, w, stride, padding):
    return _conv_xla(x, w, stride, padding)


def _conv_tapmm_fwd(x, w, stride, padding):
    return _conv_xla(x, w, stride, padding), (x, w)


def _conv_tapmm_bwd(stride, padding, res, g_NxHoxWoxO):
    x, w = res
    kh, kw, c, o = w.shape
    _, vjp_x = jax.vjp(lambda xx: _conv_xla(xx, w, stride, padding), x)
    (dx,) = vjp_x(g_NxHoxWoxO)
    xp = jnp.pad(x, ((0, 0), padding[0], padding[1], (0, 0)))
    ho, wo = g_NxHoxWoxO.shape[1:3]
    g_MxO = g_NxHoxWoxO.reshape(-1, o)
    dw = jnp.stack(
        [jnp.dot(t.reshape(-1, c).T, g_MxO, preferred_element_type=jnp.float32) for t in _taps(xp, kh, kw, ho, wo, stride)]
    )
    return dx, dw.reshape(kh, kw, c, o).astype(w.dtype)


_conv_tapmm.defvjp(_conv_tapmm_fwd, _conv_tapmm_bwd)


def conv2d(x_NxHxWxC, w_KHxKWxCxO, stride: tuple[int, int] = (1, 1), *, impl: str = "tapmm",
           padding: tuple[tuple[int, int], tuple[int, int]] | None = None):
    """SAME-padded 2-D convolution (no bias). ``impl``: ``"xla"`` or ``"tapmm"`` (same values)."""
    _, h, w_, _ = x_NxHxWxC.shape
    kh, kw = w_KHxKWxCxO.shape[:2]
    stride = tuple(int(s) for s in stride)
    if padding is None:
        padding = (same_padding(h, kh, stride[0]), same_padding(w_, kw, stride[1]))
    if impl == "xla":
        return _conv_xla(x_NxHxWxC, w_KHxKWxCxO, stride, padding)
    if impl == "tapmm":
        return _conv_tapmm(x_NxHxWxC, w_KHxKWxCxO, stride, padding)
    raise ValueError(f"unknown conv impl {impl!r}; expected 'xla' or 'tapmm'")


def depth_to_space(x_NxHxWxRRC, rh: int, rw: int):
    """Sub-pixel shuffle: ``N x H x W x (rh*rw*C)`` -> ``N x (H*rh) x (W*rw) x C``.

    Channel ``(a * rw + b) * C + c`` becomes pixel ``(h*rh + a, w*rw + b)``, channel ``c``.
    """
    n, h, w, rrc = x_NxHxWxRRC.shape
    c = rrc // (rh * rw)
    if c * rh * rw != rrc:
        raise ValueError(f"{rrc} channels are not divisible by the factor {rh}x{rw}")
    x = x_NxHxWxRRC.reshape(n, h, w, rh, rw, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * rh, w * rw, c)


def _transpose_pad_a(k: int, s: int) -> int:
    """Leading pad of ``lax.conv_transpose(padding='SAME')`` on the dilated input."""
    pad_len = k + s - 2
    return k - 1 if s > k - 1 else -(-pad_len // 2)


def _phases(k: int, s: int):
    """Per output phase p: (first kernel tap, number of taps, first input offset)."""
    pad_a = _transpose_pad_a(k, s)
    out = []
    for p in range(s):
        taps = [t for t in range(k) if (p + t - pad_a) % s == 0]
        if taps:
            out.append((taps[0], len(taps), (p + taps[0] - pad_a) // s))
        else:
            out.append((0, 0, 0))
    return out


def conv_transpose2d(x_NxHxWxC, w_KHxKWxCxO, stride: tuple[int, int], *, impl: str = "tapmm"):
    """``lax.conv_transpose(x, w, stride, 'SAME')`` (= ``nnx.ConvTranspose``, no bias).

    ``impl="lax"`` calls ``lax.conv_transpose`` itself (the plain reference). Otherwise the
    output ``N x (H*sh) x (W*sw) x O`` is computed phase by phase at the input resolution
    (each phase a :func:`conv2d` with that ``impl``):
    output pixel ``(m*sh + p, n*sw + q)`` only sees the kernel taps ``k = k0 + j*s`` whose
    dilated positions land on real input pixels, so each phase is a small VALID stride-1
    convolution of the padded input.
    """
    sh, sw = (int(s) for s in stride)
    if impl == "lax":
        return lax.conv_transpose(x_NxHxWxC, w_KHxKWxCxO, (sh, sw), "SAME", dimension_numbers=_DN)
    if impl == "gemm":
        return _conv_transpose_gemm(x_NxHxWxC, w_KHxKWxCxO, (sh, sw))
    n, h, w_, _ = x_NxHxWxC.shape
    kh, kw, _, o = w_KHxKWxCxO.shape
    ph, pw = _phases(kh, sh), _phases(kw, sw)
    offs_h = [d + nt - 1 for _, nt, d in ph if nt] + [d for _, nt, d in ph if nt]
    offs_w = [d + nt - 1 for _, nt, d in pw if nt] + [d for _, nt, d in pw if nt]
    lo_h, hi_h = max(0, -min(offs_h)), max(0, max(offs_h))
    lo_w, hi_w = max(0, -min(offs_w)), max(0, max(offs_w))
    xp = jnp.pad(x_NxHxWxC, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0)))
    rows = []
    for k0h, nth, dh in ph:
        cols = []
        for k0w, ntw, dw in pw:
            if nth == 0 or ntw == 0:
                cols.append(jnp.zeros((n, h, w_, o), x_NxHxWxC.dtype))
                continue
            wk = w_KHxKWxCxO[k0h::sh][:nth, k0w::sw][:, :ntw]
            xs = lax.slice_in_dim(xp, lo_h + dh, lo_h + dh + h + nth - 1, axis=1)
            xs = lax.slice_in_dim(xs, lo_w + dw, lo_w + dw + w_ + ntw - 1, axis=2)
            cols.append(conv2d(xs, wk, (1, 1), impl=impl, padding=((0, 0), (0, 0))))
        rows.append(jnp.stack(cols, axis=3))  # N x H x W x sw x O
    y = jnp.stack(rows, axis=3)  # N x H x W x sh x sw x O
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * sh, w_ * sw, o)


def _conv_transpose_gemm(x_NxHxWxC, w_KHxKWxCxO, stride):
    """Transposed convolution as one matrix product and a shift-add ("col2im").

    ``P = x @ w`` gives every input pixel's contribution to each of its ``kh*kw`` output
    taps (``N x H x W x kh x kw x O``); each output phase then sums the shifted taps that
    land on it. Minimal multiply-adds, and forward, input and weight gradients are all
    large matrix products (plus slices and adds), which XLA runs well on CPUs.
    """
    n, h, w_, c = x_NxHxWxC.shape
    kh, kw, _, o = w_KHxKWxCxO.shape
    sh, sw = stride
    p = jnp.dot(x_NxHxWxC.reshape(n * h * w_, c), w_KHxKWxCxO.transpose(2, 0, 1, 3).reshape(c, kh * kw * o),
                preferred_element_type=x_NxHxWxC.dtype).reshape(n, h, w_, kh, kw, o)
    ph, pw = _phases(kh, sh), _phases(kw, sw)
    offs_h = [d + nt - 1 for _, nt, d in ph if nt] + [d for _, nt, d in ph if nt]
    offs_w = [d + nt - 1 for _, nt, d in pw if nt] + [d for _, nt, d in pw if nt]
    lo_h, hi_h = max(0, -min(offs_h)), max(0, max(offs_h))
    lo_w, hi_w = max(0, -min(offs_w)), max(0, max(offs_w))
    pp = jnp.pad(p, ((0, 0), (lo_h, hi_h), (lo_w, hi_w), (0, 0), (0, 0), (0, 0)))
    rows = []
    for k0h, nth, dh in ph:
        cols = []
        for k0w, ntw, dw in pw:
            acc = jnp.zeros((n, h, w_, o), p.dtype)
            for jh in range(nth):
                for jw in range(ntw):
                    a, b = lo_h + dh + jh, lo_w + dw + jw
                    acc = acc + pp[:, a:a + h, b:b + w_, k0h + jh * sh, k0w + jw * sw, :]
            cols.append(acc)
        rows.append(jnp.stack(cols, axis=3))  # N x H x W x sw x O
    y = jnp.stack(rows, axis=3)  # N x H x W x sh x sw x O
    return y.transpose(0, 1, 3, 2, 4, 5).reshape(n, h * sh, w_ * sw, o)
