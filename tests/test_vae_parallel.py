"""Data parallelism: two fake CPU devices give the loss and weights of one (to tolerance)."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

SCRIPT = textwrap.dedent(
    """
    import json
    import jax, numpy as np
    from flax import nnx
    from vae import train
    from vae.config import TrainConfig, preset

    assert jax.local_device_count() == 2, jax.devices()
    rng = np.random.default_rng(0)
    x = rng.standard_normal((32, 16, 64)).astype(np.float32)
    x[::2, :, 20] += 20.0
    cfg = preset("default", (16, 64), channels=(4, 8, 8), latent=4)
    tcfg = TrainConfig(batch_size=8, epochs=3, learning_rate=1e-2, warmup_steps=2, seed=1)
    one = train.fit(x, cfg, TrainConfig(**{**tcfg.to_dict(), "data_parallel": False}))
    two = train.fit(x, cfg, tcfg)
    leaves = lambda r: [np.asarray(a) for a in jax.tree.leaves(nnx.state(r.model, nnx.Param))]
    print(json.dumps({
        "one": [h["loss"] for h in one.history],
        "two": [h["loss"] for h in two.history],
        "max_weight_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(leaves(one), leaves(two))),
        "devices_two": len(jax.tree.leaves(two.state.params)[0].sharding.device_set),
        "devices_one": len(jax.tree.leaves(one.state.params)[0].sharding.device_set),
    }))
    """
)


def test_two_cpu_devices_match_one():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, cwd=root, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    r = json.loads(out.stdout.strip().splitlines()[-1])
    assert r["devices_two"] == 2 and r["devices_one"] == 1
    for a, b in zip(r["one"], r["two"]):
        assert abs(a - b) <= 1e-4 * abs(a), r
    assert r["max_weight_diff"] < 1e-3, r
