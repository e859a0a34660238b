"""Tests of calibration and thresholds (seeded, statistical tolerances)."""

import numpy as np
import pytest
from scipy import stats as sps

from seti_auditor.stats import (
    ThresholdConfig,
    article_threshold,
    band_ids,
    bh_qvalues,
    bh_reject,
    decide,
    empirical_pvalues,
    robust_threshold,
    zscores,
)


def test_empirical_pvalue_formula():
    null = np.array([1.0, 2.0, 3.0, 4.0])
    p = empirical_pvalues(np.array([0.0, 2.0, 2.5, 5.0, np.nan]), null)
    np.testing.assert_allclose(p, [5 / 5, 4 / 5, 3 / 5, 1 / 5, 1.0])


@pytest.mark.parametrize("tail", ["none", "exponential"])
def test_pvalues_of_noise_are_uniform(tail):
    rng = np.random.default_rng(0)
    null = rng.gumbel(4.0, 0.3, 5000)  # max-of-normals-like scores
    test = rng.gumbel(4.0, 0.3, 2000)
    p = empirical_pvalues(test, null, tail=tail)
    assert sps.kstest(p, "uniform").pvalue > 0.01
    assert np.mean(p <= 0.05) == pytest.approx(0.05, abs=0.015)


def test_exponential_tail_extrapolates_below_resolution():
    rng = np.random.default_rng(1)
    null = rng.exponential(1.0, 2000)
    p = empirical_pvalues(np.array([12.0]), null, tail="exponential")
    assert p[0] < 1 / 2001  # below the empirical floor, near exp(-12)
    assert np.log10(p[0]) == pytest.approx(-12 / np.log(10), abs=1.0)


def test_bh_qvalues_known_example():
    p = np.array([0.01, 0.04, 0.03, 0.5])
    # sorted p * n / rank = 0.04, 0.06, 0.0533, 0.5; running minimum from the top
    np.testing.assert_allclose(bh_qvalues(p), [0.04, 0.16 / 3, 0.16 / 3, 0.5])
    assert bh_reject(p, 0.06).tolist() == [True, True, True, False]
    assert bh_reject(p, 0.05).tolist() == [True, False, False, False]


def test_bh_controls_fdr_on_noise_plus_signal():
    rng = np.random.default_rng(2)
    q, fdps, powers = 0.1, [], []
    for _ in range(40):
        null = rng.standard_normal(4000)
        is_sig = np.zeros(1000, bool)
        is_sig[:100] = True
        scores = rng.standard_normal(1000) + np.where(is_sig, 3.5, 0.0)
        rej = bh_reject(empirical_pvalues(scores, null), q)
        fdps.append(np.sum(rej & ~is_sig) / max(rej.sum(), 1))
        powers.append(np.mean(rej[is_sig]))
    assert np.mean(fdps) <= q + 0.02
    assert np.mean(powers) > 0.3


def test_article_and_robust_thresholds():
    rng = np.random.default_rng(3)
    null = rng.normal(2.0, 0.5, 20000)
    assert article_threshold(null, 5) == pytest.approx(4.5, abs=0.05)
    assert robust_threshold(null, 5) == pytest.approx(4.5, abs=0.1)
    null_rfi = np.r_[null, np.full(200, 1e3)]  # 1% huge outliers
    assert robust_threshold(null_rfi, 5) == pytest.approx(4.5, abs=0.15)
    assert article_threshold(null_rfi, 5) > 100  # the article's rule is not
    np.testing.assert_allclose(zscores(np.array([2.0, 3.0]), null), [0.0, 2.0], atol=0.05)


def test_band_ids():
    ids = band_ids(np.array([0.5, 1.0, 1.5, 3.0, 9.0]), np.array([1.0, 2.0, 3.0]))
    assert ids.tolist() == [-1, 0, 0, 1, -1]


def test_decide_per_band_with_global_fallback():
    rng = np.random.default_rng(4)
    null = np.r_[rng.normal(5.0, 1.0, 1000), rng.normal(0.0, 1.0, 3000)]
    null_bands = np.r_[np.zeros(1000, int), np.ones(3000, int)]
    null_bands[-2990:] = 2  # band 1 keeps only 10 null scores
    scores = np.r_[rng.normal(5.0, 1.0, 500), rng.normal(0.0, 1.0, 500)]
    bands = np.r_[np.zeros(500, int), np.ones(500, int)]
    dec = decide(scores, null, bands, null_bands, ThresholdConfig(min_null_per_band=100))
    assert dec.thresholds["0"]["calibration"] == "band"
    assert dec.thresholds["1"]["calibration"] == "global"
    assert set(dec.calibration[bands == 1]) == {"global"}
    assert sps.kstest(dec.p[bands == 0], "uniform").pvalue > 0.01  # own null: calibrated
    assert not dec.flagged.any()
    assert dec.summary()["n_flagged"] == 0


@pytest.mark.parametrize("method", ["bh", "empirical", "article", "robust"])
def test_decide_flags_strong_outliers(method):
    rng = np.random.default_rng(5)
    null = rng.normal(0.0, 1.0, 5000)
    scores = np.r_[rng.normal(0.0, 1.0, 995), np.full(5, 12.0)]
    dec = decide(scores, null, cfg=ThresholdConfig(method=method, alpha=1e-4))
    assert dec.flagged[-5:].all()
    assert dec.flagged[:-5].sum() <= 2
    assert np.all((dec.q >= dec.p) & (dec.q <= 1))


def test_gumbel_null_of_the_line_score_is_calibrated():
    """p-values of noise tiles' line scores, from a Gumbel fitted to other noise tiles, are uniform
    in the bulk and never too small in the tail (conservative), even with RFI in the null sample."""
    from scipy import stats as sps

    from seti_auditor.scoring import ScoreConfig, line_score
    from seti_auditor.stats import gumbel_pvalues

    rng = np.random.default_rng(11)
    tiles = rng.standard_normal((3072, 16, 256)).astype(np.float32)
    zero = np.zeros_like(tiles[:1024])
    scores = np.concatenate([np.asarray(line_score(tiles[i:i + 1024], zero, ScoreConfig())[0]) for i in (0, 1024, 2048)])
    null, test = scores[:1536].copy(), scores[1536:]
    null[:30] += 20.0  # 2% of the null sample are RFI tiles: the bulk fit ignores them
    p = gumbel_pvalues(test, null)
    assert sps.kstest(p[p > 0.05], sps.uniform(0.05, 0.95).cdf).pvalue > 0.001
    for level in (0.01, 0.002):
        assert (p < level).mean() <= 2.5 * level + 0.002


def test_sparse_bh_equals_full_bh_where_it_reports():
    """The archive-wide BH from only the small p-values (stats.bh_qvalues with m) gives the same
    q-values as BH over every p-value, wherever those are at most the reporting level."""
    from seti_auditor.stats import bh_qvalues

    rng = np.random.default_rng(4)
    p = np.concatenate([rng.uniform(size=20_000), rng.uniform(0, 1e-4, size=200)])
    full = bh_qvalues(p)
    small = p <= 0.2
    sparse = bh_qvalues(p[small], p.size)
    exact = sparse <= 0.2
    np.testing.assert_allclose(sparse[exact], full[small][exact], rtol=1e-12)
    assert exact.sum() >= 200
