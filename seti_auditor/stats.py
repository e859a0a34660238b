"""From scores to decisions: p-values, q-values, z-scores and thresholds.

Scores of the tiles under test are calibrated against *null scores*: scores of
held-out tiles believed to hold no signal (noise and known RFI that the model
was trained to reconstruct), computed with the same model and statistic.

* :func:`empirical_pvalues`: ``p = (1 + #{null >= s}) / (n_null + 1)``, valid
  (super-uniform) whenever the null scores are exchangeable with the score of a
  signal-free tile. Optionally the far tail, where fewer than
  ``tail_min_count`` null scores reach ``s``, is extrapolated with an
  exponential fitted to the null's top ``tail_frac`` (peaks over threshold with
  a Gumbel-domain tail, which suits a maximum of Gaussian track sums); without
  it, no p-value can be below ``1 / (n_null + 1)`` and Benjamini-Hochberg over
  many tiles could never reject.
* :func:`bh_qvalues` / :func:`bh_reject`: Benjamini-Hochberg step-up.
* :func:`article_threshold` (mean + k sd, the article's rule with k = 5) and
  :func:`robust_threshold` (median + k * 1.4826 * MAD).
* :func:`decide`: all of it, per frequency band: a band with at least
  ``min_null_per_band`` null scores is calibrated with its own null scores,
  other bands with the pooled null; which one was used is recorded.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

_MAD_TO_SIGMA = 1.4826
_METHODS = ("bh", "empirical", "article", "robust")


@dataclasses.dataclass(frozen=True)
class ThresholdConfig:
    """How scores become flags."""

    method: str = "bh"  # "bh" (q-values), "empirical" (p <= alpha), "article" (mean + k sd), "robust"
    q: float = 0.01  # target false discovery rate for "bh"
    alpha: float = 1e-3  # per-tile false alarm probability for "empirical"
    k: float = 5.0  # sigmas above the null centre for "article" / "robust"
    min_null_per_band: int = 200  # below this many band null scores, use the pooled null
    tail: str = "gumbel"  # "gumbel": parametric null fitted to the null's bulk; "exponential": empirical + tail fit; "none"
    tail_frac: float = 0.05  # fraction of null scores above the tail-fit threshold
    tail_min_count: int = 10  # use the tail fit where fewer null scores reach s

    def __post_init__(self) -> None:
        if self.method not in _METHODS:
            raise ValueError(f"unknown method {self.method!r}; expected one of {_METHODS}")
        if self.tail not in ("exponential", "none", "gumbel"):
            raise ValueError(f"unknown tail {self.tail!r}")
        if not (0 < self.q < 1 and 0 < self.alpha < 1 and 0 < self.tail_frac < 1):
            raise ValueError(f"invalid ThresholdConfig {self}")


@dataclasses.dataclass(frozen=True)
class Decision:
    """Per-tile outcome of :func:`decide` (arrays of length ``N``) and its provenance."""

    p: np.ndarray  # p-value against the tile's calibration null
    q: np.ndarray  # Benjamini-Hochberg q-value over all tiles
    z: np.ndarray  # z-score: robust (median/MAD) unless method == "article" (mean/sd)
    flagged: np.ndarray  # bool, the decision of cfg.method
    band: np.ndarray  # band id of each tile
    calibration: np.ndarray  # "band" or "global": which null calibrated the tile
    thresholds: dict  # per band: null size, source, centre, scale, score threshold
    config: dict  # the ThresholdConfig as a dict

    def summary(self) -> dict[str, Any]:
        """JSON-friendly provenance (for store attributes)."""
        return {"config": self.config, "thresholds": self.thresholds, "n_flagged": int(self.flagged.sum())}


# --------------------------------------------------------------------------- p, q, z


def _exponential_tail(null: np.ndarray, tail_frac: float) -> tuple[float, float, float] | None:
    """Fit ``P(S > s) = frac * exp(-(s - u) / beta)`` for ``s > u``; None when too few points."""
    n_tail = int(np.floor(tail_frac * null.size))
    if n_tail < 20:
        return None
    srt = np.sort(null)
    u = float(srt[-n_tail - 1])
    excess = srt[-n_tail:] - u
    beta = float(excess.mean())
    if not np.isfinite(beta) or beta <= 0:
        return None
    return u, beta, n_tail / (null.size + 1)


GUMBEL_LEVELS = np.linspace(0.05, 0.75, 15)  # null quantiles the Gumbel fit uses (the bulk only)


def gumbel_fit(null: np.ndarray, levels: np.ndarray = GUMBEL_LEVELS) -> tuple[float, float]:
    """Location and scale of a Gumbel fitted to the bulk of the null scores.

    A least-squares line through the quantile function ``s_q = mu - beta * ln(-ln q)`` at
    ``levels``. Only the bulk is used, so a few signals or RFI tiles hiding in the null
    sample (the upper tail) do not move the fit: an empirical null in the sense of Efron.
    """
    x = -np.log(-np.log(levels))
    y = np.quantile(np.asarray(null, np.float64), levels)
    beta, mu = np.polyfit(x, y, 1)
    if not np.isfinite(beta) or beta <= 0:
        raise ValueError("null scores have no spread: cannot fit a Gumbel null")
    return float(mu), float(beta)


def gumbel_pvalues(scores: np.ndarray, null_scores: np.ndarray) -> np.ndarray:
    """Upper-tail p-values from a Gumbel fitted to the bulk of the null (see :func:`gumbel_fit`).

    The line statistic is a maximum over many (correlated) unit-normal track sums, whose
    distribution is Gumbel-like; the true tail of such a maximum falls faster than the
    Gumbel's exponential, so the extrapolated p-values err on the large (conservative) side.
    NaN gives p = 1.
    """
    null = np.asarray(null_scores, np.float64)
    null = null[np.isfinite(null)]
    if null.size < 10:
        raise ValueError(f"{null.size} finite null scores: too few to fit a Gumbel null")
    mu, beta = gumbel_fit(null)
    s = np.asarray(scores, np.float64)
    p = -np.expm1(-np.exp(-(s - mu) / beta))
    return np.where(np.isfinite(s), np.clip(p, 1e-300, 1.0), 1.0)


def empirical_pvalues(
    scores: np.ndarray,
    null_scores: np.ndarray,
    *,
    tail: str = "none",
    tail_frac: float = 0.05,
    tail_min_count: int = 10,
) -> np.ndarray:
    """Upper-tail p-values of ``scores`` against ``null_scores``.

    Parameters
    ----------
    scores : array (N,)
        Scores to test (larger = more anomalous). NaN gives p = 1.
    null_scores : array (M,)
        Held-out null scores (non-finite values are dropped).
    tail : {"none", "exponential"}
        ``"exponential"`` replaces the p-value where fewer than
        ``tail_min_count`` null scores reach ``s`` by an exponential tail fit
        to the top ``tail_frac`` of the null (see the module docstring).

    Returns
    -------
    np.ndarray (N,)
        ``(1 + #{null >= s}) / (M + 1)`` (or its tail extrapolation), in (0, 1].
    """
    s = np.asarray(scores, np.float64)
    null = np.sort(np.asarray(null_scores, np.float64))
    null = null[np.isfinite(null)]
    if null.size == 0:
        raise ValueError("no finite null scores to calibrate against")
    n_ge = null.size - np.searchsorted(null, s, side="left")
    p = (1.0 + n_ge) / (null.size + 1.0)
    if tail == "exponential":
        fit = _exponential_tail(null, tail_frac)
        if fit is not None:
            u, beta, frac = fit
            far = (n_ge < tail_min_count) & (s > u)
            p = np.where(far, np.minimum(p, frac * np.exp(-(s - u) / beta)), p)
    return np.where(np.isfinite(s), p, 1.0)


def bh_qvalues(p: np.ndarray, m: int | None = None) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (q-values), monotone and capped at 1.

    ``m``: the number of tests when ``p`` holds only some of them (the others have larger
    p-values, e.g. tests never run because a screen ruled them out); default ``p.size``.
    """
    p = np.asarray(p, np.float64)
    n = p.size
    if n == 0:
        return p.copy()
    m = n if m is None else max(int(m), n)
    order = np.argsort(p, kind="mergesort")
    ranked = p[order] * m / np.arange(1, n + 1)
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    q = np.empty(n)
    q[order] = np.minimum(ranked, 1.0)
    return q


def bh_reject(p: np.ndarray, q: float) -> np.ndarray:
    """Benjamini-Hochberg rejections at false discovery rate ``q`` (boolean mask)."""
    return bh_qvalues(p) <= q


def _centre_scale(null: np.ndarray, robust: bool) -> tuple[float, float]:
    """Mean and sd, or median and 1.4826 * MAD, of the null scores."""
    null = null[np.isfinite(null)]
    if robust:
        med = float(np.median(null))
        return med, float(_MAD_TO_SIGMA * np.median(np.abs(null - med)))
    return float(null.mean()), float(null.std(ddof=1)) if null.size > 1 else 0.0


def zscores(scores: np.ndarray, null_scores: np.ndarray, *, robust: bool = True) -> np.ndarray:
    """``(s - centre) / scale`` of the null (median / 1.4826 MAD, or mean / sd)."""
    centre, scale = _centre_scale(np.asarray(null_scores, np.float64), robust)
    return (np.asarray(scores, np.float64) - centre) / max(scale, 1e-300)


def article_threshold(null_scores: np.ndarray, k: float = 5.0) -> float:
    """The article's rule: mean + k * sd of the null scores."""
    centre, scale = _centre_scale(np.asarray(null_scores, np.float64), robust=False)
    return centre + k * scale


def robust_threshold(null_scores: np.ndarray, k: float = 5.0) -> float:
    """Robust variant: median + k * 1.4826 * MAD of the null scores."""
    centre, scale = _centre_scale(np.asarray(null_scores, np.float64), robust=True)
    return centre + k * scale


# --------------------------------------------------------------------------- bands


def band_ids(freq_mhz: np.ndarray, edges_mhz: np.ndarray) -> np.ndarray:
    """Band index of each frequency for band edges (ascending); -1 outside the edges."""
    f = np.asarray(freq_mhz, np.float64)
    edges = np.asarray(edges_mhz, np.float64)
    idx = np.searchsorted(edges, f, side="right") - 1
    outside = (f < edges[0]) | (f > edges[-1]) | ~np.isfinite(f)
    idx = np.where(f == edges[-1], len(edges) - 2, idx)
    return np.where(outside, -1, idx).astype(np.int64)


def _as_bands(bands, n: int) -> np.ndarray:
    return np.zeros(n, np.int64) if bands is None else np.asarray(bands)


# --------------------------------------------------------------------------- decide


def _calibrate_band(s, null, cfg, robust_z):
    """p and z of one band's scores against one null, and the band's score threshold."""
    if cfg.tail == "gumbel":
        p = gumbel_pvalues(s, null)
    else:
        p = empirical_pvalues(s, null, tail=cfg.tail, tail_frac=cfg.tail_frac, tail_min_count=cfg.tail_min_count)
    z = zscores(s, null, robust=robust_z)
    centre, scale = _centre_scale(null, robust=robust_z)
    info = {"n_null": int(null.size), "centre": centre, "scale": scale}
    if cfg.method == "article":
        info["score_threshold"] = article_threshold(null, cfg.k)
    elif cfg.method == "robust":
        info["score_threshold"] = robust_threshold(null, cfg.k)
    elif cfg.method == "empirical":
        info["p_threshold"] = cfg.alpha
    return p, z, info


def decide(
    scores: np.ndarray,
    null_scores: np.ndarray,
    bands: np.ndarray | None = None,
    null_bands: np.ndarray | None = None,
    cfg: ThresholdConfig = ThresholdConfig(),
) -> Decision:
    """Calibrate scores against null scores, per band, and flag tiles.

    Parameters
    ----------
    scores : array (N,)
        Scores of the tiles under test.
    null_scores : array (M,)
        Held-out null scores.
    bands, null_bands : array (N,), array (M,), optional
        Band id of each tile / null tile (e.g. from :func:`band_ids`); None puts
        everything in band 0. A band with fewer than ``cfg.min_null_per_band``
        null scores is calibrated with the pooled null.
    cfg : ThresholdConfig
        The decision rule.

    Returns
    -------
    Decision
        p, q, z, flagged, band, calibration source per tile, thresholds per band.
    """
    s = np.asarray(scores, np.float64)
    null = np.asarray(null_scores, np.float64)
    b = _as_bands(bands, s.size)
    nb = _as_bands(null_bands, null.size)
    robust_z = cfg.method != "article"
    p = np.ones(s.size)
    z = np.full(s.size, np.nan)
    source = np.full(s.size, "global", dtype=object)
    thresholds: dict[str, dict] = {}
    for band in np.unique(b):
        sel = b == band
        band_null = null[(nb == band) & np.isfinite(null)]
        use_band = band_null.size >= cfg.min_null_per_band
        p[sel], z[sel], info = _calibrate_band(s[sel], band_null if use_band else null, cfg, robust_z)
        source[sel] = "band" if use_band else "global"
        thresholds[str(band)] = {"calibration": str(source[sel][0]), "n_tiles": int(sel.sum()), **info}
        if not use_band:
            logger.info("band %s: %d null scores < %d, using the pooled null", band, band_null.size,
                        cfg.min_null_per_band)
    q = bh_qvalues(p)
    flagged = _flags(s, p, q, b, thresholds, cfg)
    return Decision(p, q, z, flagged, b, source, thresholds, dataclasses.asdict(cfg))


def _flags(s, p, q, b, thresholds, cfg) -> np.ndarray:
    """Apply the configured rule; for BH also record the p cut-off reached."""
    finite = np.isfinite(s)
    if cfg.method == "bh":
        flagged = (q <= cfg.q) & finite
        p_cut = float(p[flagged].max()) if flagged.any() else 0.0
        for info in thresholds.values():
            info["p_threshold"] = p_cut
        return flagged
    if cfg.method == "empirical":
        return (p <= cfg.alpha) & finite
    cut = np.array([thresholds[str(band)]["score_threshold"] for band in b], np.float64)
    return (s > cut) & finite
