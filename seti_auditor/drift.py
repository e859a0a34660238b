"""Has the noise drifted away from what the model was calibrated on? (pure compute)

A scheduled run that brings new observations asks whether the current model still
describes their noise. The statistic is the model's own reconstruction error (the mean
squared residual of a tile, ``recon_error``) on OFF-source, ordinary tiles, compared
with the same statistic on the held-out null tiles the model was calibrated with
(``null_scores.npz`` of the model). Both samples are tiles the model never trained on.

The rule is a **median shift in robust sigmas**::

    shift = (median(new) - median(null)) / (1.4826 * MAD(null))

and the model is retrained when ``|shift| > max_shift_sigma`` (3 by default), given at
least ``min_tiles`` new tiles. Why this and not a two-sample Kolmogorov-Smirnov test:

* KS answers "are the two samples from exactly the same distribution?", and its p-value
  shrinks with the sample size: a night of survey data brings 10^5 OFF tiles, with which
  KS rejects differences far too small to matter (a per-cent change in the noise variance),
  so a scheduled run would retrain every night. The median shift is an *effect size*: the
  same bound means the same thing at 50 tiles and at 10^6.
* Its unit is the spread of the calibration sample itself: a shift of 3 robust sigmas puts
  the typical new noise tile where only ~0.1 % of the calibration tiles lie; the p-values
  (calibrated on the null) are then no longer valid for the new data.
* Median and MAD have a 50 % breakdown point: a few RFI-laden OFF tiles that slipped
  through the ordinary pre-screen move neither.
* The median of ``n`` new tiles has a standard error of about ``1.25 sigma / sqrt(n)``
  (0.22 sigma at the minimum ``n = 32``), so a 3-sigma bound is not crossed by chance.

The KS distance ``D`` is reported beside it for information (it catches changes of shape
that leave the median in place), but does not decide.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from scipy import stats as sps

_MAD_TO_SIGMA = 1.4826


@dataclasses.dataclass(frozen=True)
class DriftConfig:
    """When new data make the current model stale (``model_policy="auto"``)."""

    max_shift_sigma: float = 3.0  # retrain when the median recon error moves more than this many robust sigmas
    min_tiles: int = 32  # fewer new OFF-source ordinary tiles than this: no decision, the model is kept
    max_tiles: int = 2048  # at most this many new tiles are scored for the check (a seeded sample)
    seed: int = 0  # seed of that sample


@dataclasses.dataclass(frozen=True)
class DriftVerdict:
    """The outcome of one drift check."""

    drifted: bool  # the bound was crossed: retrain
    shift_sigma: float  # (median(new) - median(null)) / robust sigma of the null; NaN when undecided
    ks_d: float  # two-sample Kolmogorov-Smirnov distance (information only); NaN when undecided
    n_new: int  # new tiles compared
    n_null: int  # null tiles of the model
    null_median: float  # median recon error of the null tiles
    new_median: float  # median recon error of the new tiles (NaN when none)
    reason: str  # the decision in words

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def noise_drift(null: np.ndarray, new: np.ndarray, cfg: DriftConfig = DriftConfig()) -> DriftVerdict:
    """Compare the new tiles' statistic with the null's (see the module docstring for the rule).

    Parameters
    ----------
    null : array
        The statistic (reconstruction error) of the model's held-out null tiles.
    new : array
        The same statistic of new OFF-source, ordinary tiles, under the same model.
    cfg : DriftConfig
        The bound and the minimum sample.
    """
    null = np.asarray(null, np.float64)
    null = null[np.isfinite(null)]
    new = np.asarray(new, np.float64)
    new = new[np.isfinite(new)]
    if null.size < 2:
        raise ValueError(f"the model's null sample has {null.size} finite values; a drift check needs at least 2")
    centre = float(np.median(null))
    sigma = _MAD_TO_SIGMA * float(np.median(np.abs(null - centre)))
    if not sigma > 0:  # a degenerate null: fall back to its standard deviation
        sigma = float(np.std(null)) or 1e-12
    if new.size < cfg.min_tiles:
        return DriftVerdict(False, float("nan"), float("nan"), int(new.size), int(null.size), centre,
                            float(np.median(new)) if new.size else float("nan"),
                            f"{new.size} new OFF-source tiles (< {cfg.min_tiles}): too few to judge, model kept")
    new_median = float(np.median(new))
    shift = (new_median - centre) / sigma
    d = float(sps.ks_2samp(new, null).statistic)
    drifted = bool(abs(shift) > cfg.max_shift_sigma)
    words = "beyond" if drifted else "within"
    return DriftVerdict(drifted, float(shift), d, int(new.size), int(null.size), centre, new_median,
                        f"median recon error moved {shift:+.2f} robust sigmas ({words} +/-{cfg.max_shift_sigma:g})"
                        f" over {new.size} new tiles; KS D = {d:.3f}")
