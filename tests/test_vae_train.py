"""vae.train: learning, NaN handling, reproducibility, kill/resume; vae.checkpoint round trip."""

import dataclasses

import jax
import numpy as np
import pytest
from flax import nnx

from vae import checkpoint, model as M, train
from vae.batches import ArrayBatches
from vae.calibrate import calibrate
from vae.config import TrainConfig, preset

TILE = (16, 64)
CFG = preset("default", TILE, channels=(4, 8, 8), latent=4)
TCFG = TrainConfig(batch_size=8, epochs=6, learning_rate=1e-2, warmup_steps=2, checkpoint_every=3, seed=1)


def noise_and_rfi(n=48, seed=0):
    """Noise plus a man-made RFI line (fixed channel, random strength) in half of the tiles."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, *TILE)).astype(np.float32)
    x[::2, :, 20] += rng.uniform(5, 50, size=(n // 2, 1)).astype(np.float32)
    return x


def weights(model):
    return [np.asarray(a) for a in jax.tree.leaves(nnx.state(model, nnx.Param))]


def test_loss_decreases():
    res = train.fit(noise_and_rfi(), CFG, TCFG)
    losses = [h["loss"] for h in res.history]
    assert len(losses) == TCFG.epochs and res.steps == TCFG.epochs * 6
    # the noise itself cannot be reconstructed: compare the excess over its energy
    floor = float(np.sum(np.arcsinh(np.random.default_rng(0).standard_normal((48, *TILE))) ** 2) / 48)
    assert all(b < a for a, b in zip(losses, losses[1:])), losses
    assert losses[-1] - floor < 0.7 * (losses[0] - floor), (losses, floor)
    assert {"epoch", "loss", "recon", "kl", "tiles_per_s"} <= set(res.history[0])


def test_nan_input_raises_naming_step_and_batch():
    x = noise_and_rfi()
    order = list(ArrayBatches(x, 8, shuffle_seed=TCFG.seed).batches(0))
    x[order[2].index_N[3], 5, 7] = np.nan  # in the third batch of epoch 0
    with pytest.raises(FloatingPointError, match=r"step 2 \(epoch 0, batch 2"):
        train.fit(x, CFG, TCFG)


def test_same_seed_same_weights():
    x = noise_and_rfi()
    cfg = TCFG  # same compiled program as the other tests
    a, b = train.fit(x, CFG, cfg), train.fit(x, CFG, cfg)
    assert all(np.array_equal(u, v) for u, v in zip(weights(a.model), weights(b.model)))
    assert M.model_version(CFG, a.model) == M.model_version(CFG, b.model)
    c = train.fit(x, CFG, dataclasses.replace(cfg, seed=2))
    assert not all(np.array_equal(u, v) for u, v in zip(weights(a.model), weights(c.model)))


class KilledAfter:
    """A source that dies (like a killed process) after yielding ``n`` batches in total."""

    def __init__(self, source, n):
        self.source, self.left = source, n
        self.batch_size, self.steps_per_epoch = source.batch_size, source.steps_per_epoch

    def batches(self, epoch, start=0):
        for b in self.source.batches(epoch, start):
            if self.left == 0:
                raise KeyboardInterrupt("killed")
            self.left -= 1
            yield b


def test_save_kill_resume_gives_uninterrupted_weights(tmp_path):
    x = noise_and_rfi()
    full = train.fit(x, CFG, TCFG)
    src = ArrayBatches(x, TCFG.batch_size, shuffle_seed=TCFG.seed)
    with pytest.raises(KeyboardInterrupt):
        train.fit(KilledAfter(src, 20), CFG, TCFG, checkpoint_dir=str(tmp_path / "ck"))  # dies in epoch 3
    resumed = train.fit(src, CFG, TCFG, checkpoint_dir=str(tmp_path / "ck"))
    assert resumed.resumed_from == 18  # last checkpoint before the kill (every 3 steps), mid-epoch
    assert resumed.steps == full.steps
    assert all(np.array_equal(u, v) for u, v in zip(weights(full.model), weights(resumed.model)))
    assert [h["epoch"] for h in resumed.history] == list(range(TCFG.epochs))
    with pytest.raises(ValueError, match="different vae_config"):
        train.fit(src, dataclasses.replace(CFG, latent=3), TCFG, checkpoint_dir=str(tmp_path / "ck"))

    cal = calibrate(resumed.model, CFG, [x[:20], x[20:]])
    version = checkpoint.save_model(tmp_path / "model", resumed.model, CFG, calibration=cal, extra={"note": "t"})
    model, cfg, meta = checkpoint.load_model(tmp_path / "model")
    assert cfg == CFG and meta["model_version"] == version == M.model_version(CFG, resumed.model)
    assert meta["calibration"] == cal and meta["extra"] == {"note": "t"}
    np.testing.assert_array_equal(M.reconstruct(model, x[:4]), M.reconstruct(resumed.model, x[:4]))
