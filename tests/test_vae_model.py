"""vae.config / vae.model / vae.ops: shapes, transforms, exact equivalence of the fast convolutions."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax import lax

from vae import model as M
from vae import ops
from vae.config import TrainConfig, VAEConfig, preset

_DN = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize("name", ["default", "article"])
@pytest.mark.parametrize("tile", [(16, 256), (64, 64)])
def test_shapes_both_presets(name, tile):
    cfg = preset(name, tile)
    assert cfg.tile == tile and cfg.name == name
    model = M.build(cfg, seed=0)
    x = jax.ShapeDtypeStruct((3, *tile), jnp.float32)
    out = jax.eval_shape(lambda m, x: M.reconstruct(m, x), model, x)
    assert out.shape == (3, *tile)
    mean, logvar = jax.eval_shape(lambda m, x: m.encode(x), model, x)
    assert mean.shape == logvar.shape == (3, cfg.latent)


def test_forward_runs_and_is_deterministic():
    cfg = preset("default", (16, 256))
    a, b = M.build(cfg, seed=3), M.build(cfg, seed=3)
    assert M.model_version(cfg, a) == M.model_version(cfg, b) != M.model_version(cfg, M.build(cfg, seed=4))
    tiles = np.random.default_rng(0).standard_normal((2, 16, 256)).astype(np.float32)
    r = np.asarray(M.reconstruct(a, tiles))
    assert r.shape == (2, 16, 256) and np.all(np.isfinite(r))


def test_article_preset_is_the_blueprint():
    cfg = preset("article", (64, 64))
    assert cfg.channels == (32, 64) and cfg.strides == ((2, 2), (2, 2)) and cfg.latent == 32
    assert cfg.decoder == "transpose" and cfg.output == "sigmoid" and cfg.beta == 1e-3 and cfg.loss == "mse_sum"
    assert M.flops_per_tile(cfg)["total"] > 20 * M.flops_per_tile(preset("default", (16, 256)))["total"]


def test_default_strides_adapt_to_tile_and_bad_tiles_raise():
    assert preset("default", (16, 256)).grid()[-1] == (2, 8)
    assert preset("default", (64, 64)).grid()[-1] == (2, 8)
    with pytest.raises(ValueError, match="does not divide"):
        preset("article", (30, 64))
    with pytest.raises(ValueError, match="preset"):
        preset("nope", (16, 256))
    with pytest.raises(ValueError, match="sigmoid"):
        VAEConfig(output="sigmoid", input_transform="asinh")
    assert VAEConfig.from_dict(preset("article", (64, 64)).to_dict()) == preset("article", (64, 64))
    assert TrainConfig.from_dict(TrainConfig(seed=5).to_dict()) == TrainConfig(seed=5)


def test_input_transforms():
    z = np.array([[[-1e3, -4.0, -1.0, 0.0, 1.0, 4.0, 1e3, np.nan]]], np.float32)
    art = np.asarray(M.transform_input(preset("article", (64, 64)), z))
    assert np.allclose(art[0, 0, :7], [0, 0.1, 0.4, 0.5, 0.6, 0.9, 1.0]) and np.isnan(art[0, 0, 7])
    asinh = np.asarray(M.transform_input(preset("default", (16, 256)), z))
    assert np.allclose(asinh[0, 0, 2:5], np.arcsinh([-1, 0, 1])) and abs(asinh[0, 0, 6]) < 8
    pm = np.asarray(M.transform_input(preset("default", (16, 256), premask=True, input_transform="none"), z))
    assert np.allclose(pm[0, 0, :7], [0, 0, -1, 0, 1, 0, 0]) and np.isnan(pm[0, 0, 7])


@pytest.mark.parametrize("kernel,stride", [((3, 3), (2, 2)), ((5, 3), (4, 2))])
def test_fast_convolutions_equal_lax(kernel, stride):
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, (2, 8, 8, 3))
    w = jax.random.normal(kw, (*kernel, 3, 5))

    @jax.jit
    def all_outputs(x, w):
        fns = [
            lambda x, w: lax.conv_general_dilated(x, w, stride, "SAME", dimension_numbers=_DN),
            lambda x, w: ops.conv2d(x, w, stride, impl="tapmm"),
            lambda x, w: lax.conv_transpose(x, w, stride, "SAME", dimension_numbers=_DN),
            lambda x, w: ops.conv_transpose2d(x, w, stride, impl="tapmm"),
            lambda x, w: ops.conv_transpose2d(x, w, stride, impl="xla"),
            lambda x, w: ops.conv_transpose2d(x, w, stride, impl="gemm"),
        ]
        return [(f(x, w), jax.grad(lambda x, w: jnp.sum(jnp.sin(f(x, w))), argnums=(0, 1))(x, w)) for f in fns]

    (c_ref, gc_ref), (c, gc), (t_ref, gt_ref), (t, gt), (t2, gt2), (t3, gt3) = all_outputs(x, w)
    pairs = [(c, c_ref), (t, t_ref), (t2, t_ref), (t3, t_ref)]
    for got, ref in pairs + list(zip(gc + gt + gt2 + gt3, gc_ref + gt_ref + gt_ref + gt_ref)):
        np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_depth_to_space():
    x = np.arange(2 * 3 * 8).reshape(1, 2, 3, 8)
    y = np.asarray(ops.depth_to_space(jnp.asarray(x), 2, 4))
    assert y.shape == (1, 4, 12, 1)
    assert y[0, 1, 6, 0] == x[0, 0, 1, 1 * 4 + 2]


def test_gaussian_loss_has_learned_sigma():
    cfg = preset("default", (16, 64), channels=(4, 8, 8), latent=4, loss="gaussian", beta=1.0)
    m = M.build(cfg, 0)
    x = M.transform_input(cfg, np.zeros((2, 16, 64), np.float32))
    loss, _ = nnx.jit(M.loss_terms)(m, x, jax.random.key(0))
    assert np.isfinite(float(loss)) and m.log_sigma is not None


def test_fast_model_equals_plain_lax_model():
    """The article preset computed with vae.ops (gemm) and with plain lax: same loss and gradients."""
    fast = preset("article", (16, 16))
    plain = dataclasses.replace(fast, conv_impl="xla")
    tiles = np.random.default_rng(0).standard_normal((4, 16, 16)).astype(np.float32) * 3

    @nnx.jit
    def loss_and_grads(model):
        x = M.transform_input(model.cfg, tiles)
        return nnx.value_and_grad(lambda m: M.loss_terms(m, x, jax.random.key(0))[0])(model)

    (la, ga), (lb, gb) = loss_and_grads(M.build(fast, 0)), loss_and_grads(M.build(plain, 0))
    np.testing.assert_allclose(la, lb, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(ga), jax.tree.leaves(gb)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("transform,scale", [("none", 1.0), ("clip", 5.0), ("asinh", 1.0), ("asinh", 2.0),
                                             ("affine01", 5.0), ("sigmoid01", 2.0)])
def test_inverse_transform_undoes_the_input_transform(transform, scale):
    from vae.config import preset
    from vae.model import inverse_transform, transform_input

    cfg = preset("default", tile=(16, 256), input_transform=transform, input_scale=scale,
                 output="sigmoid" if transform in ("affine01", "sigmoid01") else "linear")
    z = np.linspace(-4.5, 4.5, 16 * 256, dtype=np.float32).reshape(1, 16, 256)
    back = np.asarray(inverse_transform(cfg, transform_input(cfg, z)))
    np.testing.assert_allclose(back, z, atol=2e-3 * max(scale, 1.0))
