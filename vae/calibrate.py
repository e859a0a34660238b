"""Calibration of anomaly scores on held-out noise tiles (pure).

The article's threshold is ``T = mu + 5 sigma`` of the scores of noise tiles. Scores are
heavy-tailed (RFI), so the robust (median + 5 x MAD-sigma) and empirical-quantile versions
are stored beside it; the scoring step chooses which to apply.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Iterable

import numpy as np

from vae.batches import Batch

QUANTILES = (0.5, 0.9, 0.99, 0.999, 0.9999)
MAD_TO_SIGMA = 1.4826  # sigma of a Gaussian per unit of median absolute deviation


@dataclasses.dataclass(frozen=True)
class Calibration:
    """Summary of noise scores; thresholds for scoring."""

    score: str  # name of the score function the statistics describe
    n: int  # number of held-out tiles scored
    mean: float  # mu
    std: float  # sigma
    median: float  # robust centre
    mad_sigma: float  # 1.4826 x median absolute deviation (robust sigma)
    quantiles: tuple[tuple[float, float], ...]  # (q, empirical q-quantile of the scores)
    threshold_article: float  # mu + 5 sigma (the article's T)
    threshold_robust: float  # median + 5 mad_sigma

    def threshold(self, kind: str | float = "article") -> float:
        """``"article"``, ``"robust"``, or a quantile level q (one of :attr:`quantiles`)."""
        if kind == "article":
            return self.threshold_article
        if kind == "robust":
            return self.threshold_robust
        for q, v in self.quantiles:
            if np.isclose(q, float(kind)):
                return v
        raise KeyError(f"no calibrated quantile {kind}; have {[q for q, _ in self.quantiles]}")

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["quantiles"] = [list(p) for p in self.quantiles]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "Calibration":
        return cls(**{**d, "quantiles": tuple(tuple(p) for p in d["quantiles"])})


def calibrate_scores(scores_N, *, score: str = "mse", quantiles: tuple[float, ...] = QUANTILES,
                     k_sigma: float = 5.0) -> Calibration:
    """Statistics of arbitrary per-tile scores (finite values required)."""
    s = np.asarray(scores_N, dtype=np.float64).ravel()
    if s.size < 2:
        raise ValueError(f"calibration needs at least 2 scores, got {s.size}")
    if not np.all(np.isfinite(s)):
        raise FloatingPointError(f"{int((~np.isfinite(s)).sum())} of {s.size} calibration scores are not finite")
    mu, sd, med = float(s.mean()), float(s.std(ddof=1)), float(np.median(s))
    mad = float(MAD_TO_SIGMA * np.median(np.abs(s - med)))
    qs = tuple((float(q), float(np.quantile(s, q))) for q in quantiles)
    return Calibration(score=score, n=int(s.size), mean=mu, std=sd, median=med, mad_sigma=mad, quantiles=qs,
                       threshold_article=mu + k_sigma * sd, threshold_robust=med + k_sigma * mad)


def calibrate(model, cfg, tiles_iter: Iterable, *, score_fn: Callable | None = None,
              score_name: str | None = None, **kwargs) -> Calibration:
    """Score held-out noise tiles with ``score_fn(model, tiles_NxTxF) -> scores_N`` and summarise.

    ``tiles_iter`` yields arrays ``N x T x F`` (store space) or :class:`~vae.batches.Batch` es
    (e.g. ``vae.data.ZarrBatches(..., shuffle_seed=None, drop_remainder=False)``). The default
    score is the per-tile MSE of the reconstruction (:func:`vae.model.mse_score`).
    ``cfg`` must be the model's config.
    """
    from vae.model import mse_score  # local: keeps calibrate_scores free of JAX imports

    if getattr(model, "cfg", cfg) != cfg:
        raise ValueError("cfg is not the configuration of this model")
    fn = score_fn or mse_score
    name = score_name or getattr(fn, "__name__", "score")
    if score_fn is None:
        name = "mse"
    scores = []
    for item in tiles_iter:
        tiles = item.tiles_NxTxF if isinstance(item, Batch) else item
        scores.append(np.asarray(fn(model, np.asarray(tiles, np.float32))))
    return calibrate_scores(np.concatenate(scores) if scores else np.zeros(0), score=name, **kwargs)
