"""Normalisation, pre-mask and tiling on small seeded spectrograms."""

import numpy as np
import pytest

from seti_auditor import tiling
from seti_auditor.tiling import TilingConfig


def _block(rng, t=16, coarse=512, n_coarse=2):
    """Chi-squared noise under a rolled-off bandpass with a DC spike per coarse channel."""
    x = np.arange(coarse)
    shape = 1e9 * (0.2 + 0.8 * np.clip(np.minimum(x, coarse - 1 - x) / 40.0, 0, 1))
    bp = np.tile(shape, n_coarse)
    data = rng.chisquare(102, size=(t, coarse * n_coarse)) / 102 * bp
    data[:, coarse // 2 :: coarse] *= 20.0  # DC spikes
    return data.astype(np.float32)


def test_normalise_removes_bandpass_and_standardises():
    rng = np.random.default_rng(0)
    cfg = TilingConfig()
    z = tiling.normalise(_block(rng), 512, cfg)
    assert z.dtype == np.float32
    for c0 in (0, 512):
        part = z[:, c0 : c0 + 512]
        assert abs(np.median(part)) < 0.05
        mad_sigma = tiling.MAD_TO_SIGMA * np.median(np.abs(part - np.median(part)))
        assert mad_sigma == pytest.approx(1.0, abs=0.05)
        # bandpass gone: edge channels (rolled off by 5x) look like the centre ones
        assert np.median(part[:, 5:20]) == pytest.approx(np.median(part[:, 200:300]), abs=0.2)
    assert np.all(z[:, 256] == 0.0) and np.all(z[:, 768] == 0.0), "DC spikes blanked"


def test_robust_standardise_ignores_outliers_that_inflate_std():
    rng = np.random.default_rng(1)
    x = rng.normal(size=10_000)
    x[:100] = 1e4  # strong RFI on 1% of the pixels
    z, med, sigma = tiling.robust_standardise(x)
    assert sigma == pytest.approx(1.0, abs=0.05)
    assert np.std(x) > 50 * sigma  # the classic mean/std rule would be blinded


def test_premask_sets_outliers_to_the_median():
    z = np.array([[0.5, -4.0, 3.5, 2.9]], dtype=np.float32)
    masked = tiling.apply_premask(z, 3.0)
    np.testing.assert_array_equal(masked, np.array([[0.5, 0.0, 0.0, 2.9]], dtype=np.float32))
    np.testing.assert_array_equal(z, np.array([[0.5, -4.0, 3.5, 2.9]], dtype=np.float32))  # input untouched


def test_constant_and_non_finite_data_are_unusable():
    cfg = TilingConfig()
    with pytest.raises(tiling.UnusableDataError, match="zero variance"):
        tiling.normalise(np.ones((16, 512), np.float32), 512, cfg)
    with pytest.raises(tiling.UnusableDataError, match="no finite"):
        tiling.normalise(np.full((16, 512), np.nan, np.float32), 512, cfg)
    rng = np.random.default_rng(2)
    data = _block(rng, coarse=512, n_coarse=1)
    data[3, 10] = np.inf
    data[4, 11] = np.nan
    z = tiling.normalise(data, 512, cfg)
    assert np.isfinite(z).all() and z[3, 10] == 0.0 and z[4, 11] == 0.0


@pytest.mark.parametrize("shape,overlap", [((16, 256), 0), ((16, 256), 64), ((64, 64), 0), ((8, 32), 16)])
def test_cut_tiles_order_and_content(shape, overlap):
    cfg = TilingConfig(tile_time=shape[0], tile_freq=shape[1], overlap_freq=overlap)
    z = np.arange(128 * 1024, dtype=np.float32).reshape(128, 1024)
    tiles = tiling.cut_tiles(z, cfg)
    nt = tiling.grid(128, cfg.tile_time, cfg.step_time)
    nf = tiling.grid(1024, cfg.tile_freq, cfg.step_freq)
    assert tiles.shape == (nf * nt, *shape)
    for k in (0, 1, len(tiles) - 1):
        f, t = divmod(k, nt)
        expect = z[t * cfg.step_time : t * cfg.step_time + shape[0], f * cfg.step_freq : f * cfg.step_freq + shape[1]]
        np.testing.assert_array_equal(tiles[k], expect)


def test_coarse_width_precedence():
    cfg = TilingConfig()
    bl = {"nchans": 4 * 1048576, "foff": -2.7939677238464355e-06}
    assert tiling.coarse_width(cfg, bl) == 1048576
    assert tiling.coarse_width(cfg, {**bl, "nfpc": 4096}) == 4096
    assert tiling.coarse_width(TilingConfig(coarse_channel_width=2048), {**bl, "nfpc": 4096}) == 2048
    assert tiling.coarse_width(cfg, {"nchans": 832, "foff": -4.0}) == 832  # Parkes: whole band


def test_regions_are_chunk_aligned_and_cover_the_file():
    cfg = TilingConfig(tile_time=16, tile_freq=256, chunk_tiles=8, channels_per_task=4096)
    plan = tiling.plan_tiles(cfg, {"nchans": 40960, "nsamples": 16, "foff": -2.79e-6, "nfpc": 4096})
    regions = plan.regions()
    assert regions[0][0] == 0 and regions[-1][1] == plan.n_freq_tiles
    assert all(a[1] == b[0] for a, b in zip(regions, regions[1:]))
    assert all((f0 * plan.n_time_tiles) % cfg.chunk_tiles == 0 for f0, _ in regions)
    for f0, f1 in regions:
        c0, c1 = plan.channel_span(f0, f1)
        assert c0 % 4096 == 0 and (c1 % 4096 == 0 or c1 == plan.nchans)
        assert c0 <= f0 * 256 and (f1 - 1) * 256 + 256 <= c1


def test_region_tiles_match_whole_file_tiling():
    """Tiles do not depend on how the file is split among tasks."""
    rng = np.random.default_rng(3)
    data = _block(rng, coarse=512, n_coarse=4)
    cfg = TilingConfig(tile_freq=128, chunk_tiles=2, channels_per_task=1024)
    plan = tiling.plan_tiles(cfg, {"nchans": 2048, "nsamples": 16, "foff": -2.79e-6, "nfpc": 512})
    whole = tiling.cut_tiles(tiling.normalise(data, 512, cfg), cfg)
    parts = []
    for f0, f1 in plan.regions():
        c0, c1 = plan.channel_span(f0, f1)
        parts.append(tiling.tiles_for_region(data[:, c0:c1], c0, plan, f0, f1))
    assert len(plan.regions()) == 2
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-6)
