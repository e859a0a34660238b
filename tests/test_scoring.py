"""Tests of the per-tile scores (seeded Gaussian tiles, statistical tolerances)."""

import dataclasses

import numpy as np
import pytest

from seti_auditor.scoring import (
    ScoreConfig,
    drift_to_hz_s,
    mse_score,
    score_tiles,
    standardise_residual,
)

T, F = 16, 256
LINE = ScoreConfig(subbands=1)  # one best track per tile: the statistic itself
MSE = ScoreConfig(score="mse", subbands=1)


def _noise(rng, n, t=T, f=F):
    return rng.standard_normal((n, t, f)).astype(np.float32)


def _inject(x, rng, amp, drift, smear=1):
    """Add a straight line f0 + drift * t (channel = floor), ``smear`` channels wide per integration."""
    n, t_len, f_len = x.shape
    t = np.arange(t_len)
    span = abs(drift) * t_len + smear
    for i in range(n):
        f0 = rng.uniform(8 + max(-drift, 0) * t_len, f_len - 8 - span + max(-drift, 0) * t_len)
        chans = np.floor(f0 + drift * t).astype(int)
        for j in range(smear):
            x[i, t, chans + j] += amp
    return x


def test_mse_matches_numpy():
    rng = np.random.default_rng(0)
    x, r = _noise(rng, 5), _noise(rng, 5)
    np.testing.assert_allclose(np.asarray(mse_score(x, r)), ((x - r) ** 2).mean(axis=(1, 2)), rtol=1e-5)
    assert np.all(np.isnan(score_tiles(x, r, MSE).drift))


def test_standardise_is_robust_to_offset_scale_and_spikes():
    rng = np.random.default_rng(1)
    x = 3.0 + 2.5 * _noise(rng, 4)
    x[:, 2, 7] = 1e4
    z = np.asarray(standardise_residual(x))
    clean = np.delete(z.reshape(4, -1), 2 * F + 7, axis=1)
    np.testing.assert_allclose(np.median(clean, axis=1), 0.0, atol=0.05)
    np.testing.assert_allclose(clean.std(axis=1), 1.0, atol=0.05)


@pytest.mark.parametrize("drift", [0.0, 0.4, -1.3])
def test_line_score_locates_drift_and_channel(drift):
    rng = np.random.default_rng(2)
    x = _noise(rng, 1)
    t = np.arange(T)
    f0 = 100.0
    x[0, t, np.floor(f0 + drift * t).astype(int)] += 4.0
    s = score_tiles(x, np.zeros_like(x), LINE)
    assert s.score[0] > 10
    assert abs(s.drift[0] - drift) <= 2.0 / (T - 1) + 1e-6
    assert abs(s.chan[0] - (f0 + drift * (T - 1) / 2)) <= 1.5


def test_square_tiles_and_batching():
    rng = np.random.default_rng(3)
    x = _noise(rng, 5, 64, 64)
    t = np.arange(64)
    x[1, t, np.floor(20.0 + 0.25 * t).astype(int)] += 2.0
    cfg = ScoreConfig(batch_size=2, subbands=1)  # 3 batches, the last zero-padded
    s = score_tiles(x, np.zeros_like(x), cfg)
    assert s.score.shape == (5,) and np.argmax(s.score) == 1
    assert abs(s.drift[1] - 0.25) < 0.05
    np.testing.assert_allclose(s.score, score_tiles(x, np.zeros_like(x), LINE).score, rtol=1e-5)


def test_clip_bounds_rfi_pixels():
    rng = np.random.default_rng(4)
    null = score_tiles(_noise(rng, 200), np.zeros((200, T, F), np.float32), LINE).score
    x = _noise(rng, 20)
    x[:, 3, [10, 90, 200]] = 1e5
    s = score_tiles(x, np.zeros_like(x), LINE).score
    m = score_tiles(x, np.zeros_like(x), MSE).score
    assert s.max() < null.max() + LINE.clip / np.sqrt(T)  # at most clip / sqrt(n) per pixel
    assert m.min() > 1e5  # the MSE is dominated by them


def test_line_beats_mse_at_fixed_false_alarm_rate():
    """Recall at the null's 1% false alarm rate; slow and fast (smeared) drifting lines."""
    rng = np.random.default_rng(5)
    null = _noise(rng, 500)
    zeros = np.zeros_like(null)
    thr_line = np.quantile(score_tiles(null, zeros, LINE).score, 0.99)
    thr_mse = np.quantile(score_tiles(null, zeros, MSE).score, 0.99)
    cases = {"slow": dict(amp=2.0, drift=0.3), "fast": dict(amp=1.0, drift=3.0, smear=3),
             "fast_neg": dict(amp=1.0, drift=-2.5, smear=3)}  # fmt: skip
    for name, kw in cases.items():
        x = _inject(_noise(rng, 200), rng, **kw)
        s = score_tiles(x, np.zeros_like(x), LINE)
        recall_line = np.mean(s.score > thr_line)
        recall_mse = np.mean(score_tiles(x, np.zeros_like(x), MSE).score > thr_mse)
        assert recall_line >= 0.8, (name, recall_line)
        assert recall_mse <= 0.15, (name, recall_mse)
        assert abs(np.median(s.drift) - kw["drift"]) < 0.2, name


def test_drift_conversion_sign():
    assert drift_to_hz_s(1.0, foff_mhz=-2.7939677238464355e-06, tsamp_s=18.253611008) < 0
    np.testing.assert_allclose(drift_to_hz_s(2.0, 1e-6, 10.0), 0.2)


def test_config_validation():
    with pytest.raises(ValueError):
        ScoreConfig(score="nope")
    with pytest.raises(ValueError):
        ScoreConfig(widths=())


def test_subbands_report_a_weak_line_beside_a_strong_one():
    """A strong line cannot hide a weaker one in another sub-band of the same tile."""
    rng = np.random.default_rng(8)
    x = _noise(rng, 1)
    x[0, :, 40] += 20.0  # strong zero-drift RFI in sub-band 0
    for t in range(T):  # a weaker drifting line in sub-band 2
        x[0, t, 140 + t] += 3.0
    s = score_tiles(x, np.zeros_like(x), ScoreConfig(subbands=4))
    assert s.score.shape == (1, 4)
    assert s.score[0, 0] > s.score[0, 2] > 8.0 > s.score[0, 1]
    assert abs(s.drift[0, 2] - 1.0) < 0.2 and abs(s.chan[0, 2] - 147.5) < 2


def test_pair_pass_sums_a_fast_track_across_a_tile_edge():
    """A fast (13 channels per integration) line crossing from one tile into its neighbour is
    found far more strongly when the neighbours are searched as a pair."""
    from seti_auditor.audit import audit_tiles, right_neighbours
    from vae.config import preset
    from vae.model import build

    model = build(preset("default", tile=(T, F)), 0)
    rng = np.random.default_rng(5)
    x = _noise(rng, 4)
    strip = np.concatenate(list(x[:2]), axis=1)
    for t in range(T):
        strip[t, 150 + 13 * t : 163 + 13 * t] += 0.8
    x[0], x[1] = strip[:, :F], strip[:, F:]
    right = right_neighbours(np.array([0, 0, 1, 1]), np.zeros(4), np.array([0, F, 0, F]), F)
    np.testing.assert_array_equal(right, [1, -1, 3, -1])
    alone = audit_tiles(model, x, ScoreConfig())
    paired = audit_tiles(model, x, ScoreConfig(), right)
    assert paired.score[:2].max() > alone.score[:2].max() + 2.0
    assert abs(abs(paired.drift_chan[0, 3]) - 13) < 2
    np.testing.assert_array_equal(paired.score[2:], alone.score[2:])  # no signal: pairs change nothing there


def test_row_scale_undoes_an_impulse_rows_extra_noise():
    """Two integrations lifted and twice as noisy (a broadband impulse: more power, more noise).

    With ``row_scale`` every row is brought to the same robust spread, so the tiles score exactly
    as without the impulse; without it the tracks crossing the noisy rows fatten the scores' upper
    tail (the tile-level false flags inside impulse bands of the detection benchmark).
    """
    rng = np.random.default_rng(5)
    clean = rng.standard_normal((512, 16, 256)).astype(np.float32)
    hit = clean.copy()
    hit[:, 4:6, :] = 2.0 * hit[:, 4:6, :] + 5.0
    zero = np.zeros_like(clean)
    on = ScoreConfig(batch_size=256, row_scale=True, blank_lift=0.0)  # row scaling alone (blanking drops lifted rows)
    off = dataclasses.replace(on, row_scale=False)
    s_clean = score_tiles(clean, zero, on).score
    np.testing.assert_allclose(score_tiles(hit, zero, on).score, s_clean, atol=2e-3)
    s_off = score_tiles(hit, zero, off).score
    assert np.median(s_off) > np.median(s_clean) + 0.03
    assert np.quantile(s_off, 0.99) > np.quantile(s_clean, 0.99) + 0.03


def test_impulse_rows_are_blanked_not_searched():
    """Two integrations lifted by a broadband impulse whose power carries a bandpass error.

    After the level is removed, what is left in those rows (here a smooth ripple times the
    impulse's level, as where the ingest's bandpass estimate is off) is a zero-drift feature of
    two integrations. Blanked (``blank_lift``), the tiles score as the clean tiles with those
    two rows set to zero; without blanking they score far higher. A line crossing the tile is
    still found with the rows blanked.
    """
    rng = np.random.default_rng(11)
    clean = rng.standard_normal((256, 16, 256)).astype(np.float32)
    ripple = np.where(np.arange(256) % 64 < 8, 1.0, 0.0).astype(np.float32)  # the bandpass error, 8 of 64 channels
    hit = clean.copy()
    hit[:, 4:6, :] += 4.0 * (1.0 + ripple)
    zero = np.zeros_like(clean)
    cfg = ScoreConfig(batch_size=256)
    blanked = clean.copy()
    blanked[:, 4:6, :] = 0.0
    s_hit = score_tiles(hit, zero, cfg).score
    np.testing.assert_allclose(s_hit, score_tiles(blanked, zero, cfg).score, atol=0.05)  # (standardised after)
    s_off = score_tiles(hit, zero, dataclasses.replace(cfg, blank_lift=0.0)).score
    assert np.median(s_off.max(axis=1)) > np.median(s_hit.max(axis=1)) + 1.0
    line = _inject(hit[:64].copy(), rng, amp=1.5, drift=0.5)
    assert np.median(score_tiles(line, zero[:64], cfg).score.max(axis=1)) > np.quantile(s_hit.max(axis=1), 0.99)
