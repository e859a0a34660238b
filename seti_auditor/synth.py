"""Synthetic Breakthrough-Listen-like ON/OFF cadences with injected signals (pure compute).

A cadence is six scans in ABACAD order: scans 0, 2, 4 point at the target ("ON",
``source_name`` = target), scans 1, 3, 5 at three different other sources ("OFF").
Every scan is a ``(n_ints, nchans)`` float32 power spectrogram built from

* **noise**: ``bandpass_F * chi2(dof) / dof`` with ``dof = 102`` (two polarisations of
  51 summed spectra), so every pixel has mean ``bandpass_F`` and relative standard
  deviation ``sqrt(2 / dof)``;
* **bandpass** ``bandpass_F``: the mean noise power per channel. Each coarse channel
  has a flat top of level ``NoiseConfig.mean_level`` times a random per-coarse-channel
  gain, a slight linear slope, raised-cosine roll-offs over ``rolloff_frac`` of the
  channel at both edges and a DC spike (``dc_factor`` times the level) in channel
  ``nfpc // 2`` of each coarse channel. It is the same for the six scans of a cadence;
* **RFI**, present in all six scans: zero-drift lines, drifting lines (one continuous
  track through the cadence) and broadband impulses (1-2 integrations over a wide band);
* **ETI-like signals**, present only in the ON scans: one continuous frequency track
  through the whole cadence timeline (gaps and OFF scans included), of kind
  ``"linear"`` (constant drift), ``"chirped"`` (drift rate changing linearly with time)
  or ``"pulsed"`` (linear track switched on for ``pulse_duty`` of every
  ``pulse_period_s``).

Signal model
------------
The track is ``f(t) = f_start + drift * t + chirp * t**2 / 2`` with ``t`` in seconds
since the start of scan 0 of the cadence (see :func:`track_freq_mhz`). The spectral
profile (Gaussian of FWHM ``width_hz`` or boxcar of full width ``width_hz``) is integrated
over each channel's extent, and over each integration: the integration is sub-sampled in
time (at least four samples per channel crossed), so a fast drift is Doppler-smeared over
every channel it crosses. Signals pass through the same filter as the noise, so their
power is multiplied by ``bandpass_F``. Signals are kept away from coarse-channel edges
(roll-off), DC channels, the band edges and each other by ``SynthConfig.margin_hz`` in
every scan, so the truth is unambiguous.

SNR definition (setigen-like)
-----------------------------
The integrated SNR of a signal over one scan is::

    snr = sum_{integrations i} sum_{channels j} S_ij / (sigma_j * sqrt(n_ints))

where ``S_ij`` is the signal power added to pixel ``(i, j)`` and
``sigma_j = sqrt(2 / dof) * bandpass_F[j]`` is the noise standard deviation of one pixel.
Equivalently, in bandpass-normalised units the channel-integrated signal power of one
integration is ``snr * sqrt(2 / dof) / sqrt(n_ints)``. For a pulsed signal ``snr`` refers
to the scan total as well: the on-state power is divided by ``pulse_duty``, so the
*expected* scan total is ``snr``; the realised value of every scan (which also accounts
for partial pulses and for power lost off the band edge) is recorded as ``snr_scan``.

Randomness
----------
Every function that draws takes an explicit ``numpy.random.Generator``; nothing is seeded
at import. :func:`make_cadence` spawns independent child streams for the timeline, the
sky positions, the bandpass, the placement of lines, the impulses and the noise, so the
noise of a cadence does not change when signals are added or removed.
:func:`iter_cadences` spawns one child per cadence from ``default_rng(seed)``: cadence
``k`` is identical whatever the number of cadences requested.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "BL_FOFF_MHZ",
    "BL_TSAMP_S",
    "DEFAULT_ETI",
    "KINDS",
    "N_SCANS",
    "ON_SCANS",
    "Cadence",
    "EtiGrid",
    "NoiseConfig",
    "ObsConfig",
    "RfiConfig",
    "Scan",
    "SignalSpec",
    "SynthConfig",
    "bandpass",
    "iter_cadences",
    "make_cadence",
    "matched_snr",
    "signal_grid",
    "specs_by_cadence",
    "track_freq_mhz",
]

BL_TSAMP_S = 18.253611008  # BL high-resolution integration time (s)
BL_FOFF_MHZ = -2.7939677238464355e-06  # BL high-resolution channel width (MHz), 2.79 Hz
KINDS = ("linear", "chirped", "pulsed")
PROFILES = ("gaussian", "boxcar")
N_SCANS = 6
ON_SCANS = (0, 2, 4)
_SIGMA_PER_FWHM = 1.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))


# --------------------------------------------------------------------------- configs


@dataclass(frozen=True)
class ObsConfig:
    """Geometry and timing of every scan (BL high-resolution values, a small band)."""

    n_ints: int = 16  # integrations per scan
    tsamp_s: float = BL_TSAMP_S  # integration time (s)
    foff_mhz: float = BL_FOFF_MHZ  # channel width (MHz); negative: frequency falls with index
    nfpc: int = 4096  # fine channels per coarse channel
    n_coarse: int = 4  # coarse channels per file
    fch1_mhz: float = 1100.0  # centre frequency of channel 0 in cadence 0 (MHz)
    band_step_mhz: float = 1.0  # cadence k observes from fch1_mhz + k * band_step_mhz
    gap_s: tuple[float, float] = (10.0, 30.0)  # slew gap between scans, drawn uniformly (s)
    mjd_start: float = 60000.0  # MJD of the first scan of cadence 0
    cadence_spacing_s: float = 3600.0  # start-to-start time between cadences (s)

    def __post_init__(self) -> None:
        if self.n_ints < 1 or self.nfpc < 16 or self.n_coarse < 1:
            raise ValueError("n_ints >= 1, nfpc >= 16 and n_coarse >= 1 are required")
        if not 0.0 <= self.gap_s[0] <= self.gap_s[1]:
            raise ValueError(f"gap_s must be an ordered pair of non-negative seconds: {self.gap_s}")
        if abs(self.band_step_mhz) < self.nchans * abs(self.foff_mhz):
            raise ValueError("band_step_mhz is smaller than the band of a file: bands overlap")
        if self.cadence_spacing_s < self.cadence_length_s:
            raise ValueError("cadence_spacing_s is shorter than a cadence: cadences would overlap")

    @property
    def nchans(self) -> int:
        """Channels per file."""
        return self.nfpc * self.n_coarse

    @property
    def scan_s(self) -> float:
        """Length of one scan (s)."""
        return self.n_ints * self.tsamp_s

    @property
    def foff_hz(self) -> float:
        """Channel width (Hz, signed)."""
        return self.foff_mhz * 1e6

    @property
    def cadence_length_s(self) -> float:
        """Longest possible cadence: six scans and five maximal gaps (s)."""
        return N_SCANS * self.scan_s + (N_SCANS - 1) * self.gap_s[1]

    def fch1_of(self, cadence_index: int) -> float:
        """Frequency of channel 0 of cadence ``cadence_index`` (MHz)."""
        return self.fch1_mhz + cadence_index * self.band_step_mhz


@dataclass(frozen=True)
class NoiseConfig:
    """Chi-squared noise shaped by a coarse-channel bandpass."""

    dof: int = 102  # chi-squared degrees of freedom (2 polarisations x 51 summed spectra)
    mean_level: float = 1.0e9  # mean noise power on the flat top of the bandpass
    rolloff_frac: float = 0.1  # fraction of a coarse channel rolled off at each edge
    edge_level: float = 0.35  # bandpass at the outer edge of a coarse channel, relative to the top
    slope: float = 0.04  # fractional linear tilt across a coarse channel
    gain_spread: float = 0.05  # rms scatter of coarse-channel gains (drawn once per cadence)
    dc_factor: float = 5.0  # power multiplier of the DC channel (nfpc // 2 of each coarse channel)

    def __post_init__(self) -> None:
        if self.dof < 1 or self.mean_level <= 0 or not 0 <= self.rolloff_frac < 0.5:
            raise ValueError("dof >= 1, mean_level > 0 and 0 <= rolloff_frac < 0.5 are required")


@dataclass(frozen=True)
class RfiConfig:
    """Man-made interference injected into all six scans of every cadence."""

    n_zero_drift: int = 2  # constant-frequency lines per cadence
    n_drifting: int = 2  # drifting lines per cadence (one continuous track, all six scans)
    n_impulses: int = 1  # broadband impulses per file
    line_snr: tuple[float, float] = (30.0, 1000.0)  # integrated SNR per scan, log-uniform
    line_width_hz: tuple[float, float] = (1.0, 12.0)  # spectral FWHM of the lines (Hz), uniform
    drift_hz_s: tuple[float, float] = (0.3, 2.0)  # |drift| of drifting lines (Hz/s), uniform
    impulse_ints: tuple[int, int] = (1, 2)  # integrations covered by one impulse (inclusive)
    impulse_level: tuple[float, float] = (0.2, 1.0)  # added power, fraction of the bandpass
    impulse_band_frac: tuple[float, float] = (0.3, 1.0)  # fraction of the band an impulse covers

    @classmethod
    def none(cls) -> RfiConfig:
        """No RFI at all."""
        return cls(n_zero_drift=0, n_drifting=0, n_impulses=0)


@dataclass(frozen=True)
class SignalSpec:
    """One ETI-like signal: a narrowband track present only in the ON scans."""

    kind: str = "linear"  # "linear", "chirped" or "pulsed"
    snr: float = 30.0  # integrated SNR over one ON scan (module docstring)
    drift_hz_s: float = 0.3  # drift rate at the start of the cadence (Hz/s)
    chirp_hz_s2: float = 0.0  # change of the drift rate (Hz/s^2); non-zero only for "chirped"
    width_hz: float = 2.0  # FWHM (gaussian) or full width (boxcar) of the profile (Hz)
    profile: str = "gaussian"  # spectral profile: "gaussian" or "boxcar"
    pulse_period_s: float = 4 * BL_TSAMP_S  # pulse period ("pulsed" only, s)
    pulse_duty: float = 0.5  # fraction of each period the pulse is on ("pulsed" only)
    pulse_phase_s: float = 0.0  # time of the first pulse start after the cadence start (s)
    f_start_mhz: float | None = None  # MHz at the cadence start (not checked); None: random
    cadence: int | None = None  # index of the cadence it goes into; None: every cadence

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {self.kind!r}")
        if self.profile not in PROFILES:
            raise ValueError(f"profile must be one of {PROFILES}, got {self.profile!r}")
        if (self.kind == "chirped") != (self.chirp_hz_s2 != 0.0):
            raise ValueError("chirp_hz_s2 must be non-zero for 'chirped' and zero otherwise")
        if self.snr < 0 or self.width_hz <= 0:
            raise ValueError("snr >= 0 and width_hz > 0 are required")
        if not (0.0 < self.pulse_duty <= 1.0 and self.pulse_period_s > 0):
            raise ValueError("0 < pulse_duty <= 1 and pulse_period_s > 0 are required")

    @property
    def duty(self) -> float:
        """Fraction of the time the signal is on (1 unless pulsed)."""
        return self.pulse_duty if self.kind == "pulsed" else 1.0


DEFAULT_ETI = (
    SignalSpec(kind="linear", snr=40.0, drift_hz_s=-0.35, width_hz=1.4),
    SignalSpec(kind="chirped", snr=60.0, drift_hz_s=1.5, chirp_hz_s2=4e-4, width_hz=8.4,
               profile="boxcar"),
    SignalSpec(kind="pulsed", snr=30.0, drift_hz_s=0.25, width_hz=4.0),
)


@dataclass(frozen=True)
class SynthConfig:
    """Everything that defines a synthetic survey (with a seed, the whole archive)."""

    obs: ObsConfig = field(default_factory=ObsConfig)  # geometry and timing
    noise: NoiseConfig = field(default_factory=NoiseConfig)  # noise and bandpass
    rfi: RfiConfig = field(default_factory=RfiConfig)  # interference per cadence
    eti: tuple[SignalSpec, ...] = DEFAULT_ETI  # ETI-like signals (each says which cadence)
    margin_hz: float = 100.0  # clearance around every line: edges, DC, other lines (Hz)
    max_tries: int = 2000  # random placements tried per line before giving up


@dataclass(frozen=True)
class EtiGrid:
    """A detection-benchmark grid: every combination of the tuples, dealt over cadences."""

    snrs: tuple[float, ...] = (8.0, 12.0, 16.0, 25.0, 40.0, 80.0)  # integrated SNRs per scan
    kinds: tuple[str, ...] = KINDS  # signal kinds
    drifts_hz_s: tuple[float, ...] = (0.2, 2.0)  # |drift| at the cadence start (Hz/s)
    widths_hz: tuple[float, ...] = (1.4,)  # FWHM (Hz)
    chirp_hz_s2: float = 3e-4  # chirp of the "chirped" signals (Hz/s^2)
    pulse_period_s: float = 4 * BL_TSAMP_S  # period of the "pulsed" signals (s)
    pulse_duty: float = 0.5  # duty cycle of the "pulsed" signals


def signal_grid(grid: EtiGrid, cadences: int) -> tuple[SignalSpec, ...]:
    """Expand a benchmark grid into signal specs dealt round-robin over cadences.

    Parameters
    ----------
    grid : EtiGrid
        The values to combine (every snr x kind x drift x width).
    cadences : int
        Number of cadences; signal ``i`` goes into cadence ``i % cadences``.

    Returns
    -------
    tuple of SignalSpec
        One spec per grid point; drift signs alternate so both directions occur.
    """
    if cadences < 1:
        raise ValueError("cadences must be >= 1")
    specs = []
    combos = [(s, k, d, w) for s in grid.snrs for k in grid.kinds
              for d in grid.drifts_hz_s for w in grid.widths_hz]
    for i, (snr, kind, drift, width) in enumerate(combos):
        sign = 1.0 if (i // cadences) % 2 == 0 else -1.0
        specs.append(SignalSpec(
            kind=kind, snr=float(snr), drift_hz_s=sign * abs(drift), width_hz=float(width),
            chirp_hz_s2=sign * grid.chirp_hz_s2 if kind == "chirped" else 0.0,
            pulse_period_s=grid.pulse_period_s, pulse_duty=grid.pulse_duty,
            cadence=i % cadences))
    return tuple(specs)


# --------------------------------------------------------------------------- outputs


@dataclass(frozen=True)
class Scan:
    """One file's worth of data."""

    header: dict  # sigproc keywords (telescope_id, source_name, tstart, fch1, foff, nfpc, ...)
    data_TxF: np.ndarray  # float32 power, shape (n_ints, nchans)


@dataclass(frozen=True)
class Cadence:
    """Six scans of one ABACAD cadence and its ground truth."""

    index: int  # position of the cadence in the survey
    cadence_id: str  # label used in the truth records
    target: str  # source_name of the ON scans
    scans: tuple[Scan, ...]  # the six scans in observing order
    bandpass_F: np.ndarray  # mean noise power per channel (float64, DC spikes included)
    signals: tuple[dict, ...]  # truth records of the ETI-like signals
    rfi: tuple[dict, ...]  # truth records of the RFI events


# --------------------------------------------------------------------------- models


def track_freq_mhz(f_start_mhz: float, drift_hz_s: float, chirp_hz_s2: float,
                   t_s: np.ndarray | float) -> np.ndarray:
    """Frequency of a track at ``t_s`` seconds after the cadence start (MHz)."""
    t = np.asarray(t_s, dtype=np.float64)
    return f_start_mhz + 1e-6 * (drift_hz_s * t + 0.5 * chirp_hz_s2 * t * t)


def bandpass(obs: ObsConfig, noise: NoiseConfig, rng: np.random.Generator) -> np.ndarray:
    """Mean noise power per channel for one cadence.

    Parameters
    ----------
    obs, noise : ObsConfig, NoiseConfig
        Geometry and bandpass shape.
    rng : numpy.random.Generator
        Draws the coarse-channel gains.

    Returns
    -------
    numpy.ndarray
        float64, shape ``(nchans,)``: flat top ``mean_level * gain``, slope, raised-cosine
        roll-off at both coarse-channel edges, DC spike at ``nfpc // 2``.
    """
    x = (np.arange(obs.nfpc) + 0.5) / obs.nfpc  # position inside a coarse channel, 0..1
    shape = 1.0 + noise.slope * (0.5 - x)
    if noise.rolloff_frac > 0:
        edge_dist = np.minimum(x, 1.0 - x) / noise.rolloff_frac  # 0 at the edge, 1 on the top
        ramp = 0.5 * (1.0 - np.cos(np.pi * np.clip(edge_dist, 0.0, 1.0)))
        shape *= noise.edge_level + (1.0 - noise.edge_level) * ramp
    shape[obs.nfpc // 2] *= noise.dc_factor
    gains = np.clip(1.0 + noise.gain_spread * rng.standard_normal(obs.n_coarse), 0.5, 1.5)
    return noise.mean_level * (gains[:, None] * shape[None, :]).ravel()


def _erf(x: np.ndarray) -> np.ndarray:
    """Error function (Abramowitz & Stegun 7.1.26, absolute error < 1.5e-7); numpy only."""
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741
                                                       + t * (-1.453152027 + t * 1.061405429))))
    return np.sign(x) * (1.0 - poly * np.exp(-a * a))


def _profile_cdf(x_ch: np.ndarray, profile: str, width_ch: float) -> np.ndarray:
    """Fraction of a unit profile centred at 0 that lies below ``x_ch`` (channel units)."""
    if profile == "gaussian":
        sigma = width_ch * _SIGMA_PER_FWHM
        return 0.5 * (1.0 + _erf(x_ch / (sigma * math.sqrt(2.0))))
    return np.clip(x_ch / width_ch + 0.5, 0.0, 1.0)


def _profile_extent_ch(spec: SignalSpec, foff_hz: float) -> float:
    """Half-extent of the profile beyond which its power is negligible (channels)."""
    width_ch = spec.width_hz / abs(foff_hz)
    half = 6.0 * width_ch * _SIGMA_PER_FWHM if spec.profile == "gaussian" else 0.5 * width_ch
    return half + 1.0


def _pulse_on(spec: SignalSpec, t_s: np.ndarray) -> np.ndarray:
    """1 where the signal is on at times ``t_s`` (s since the cadence start), else 0."""
    if spec.kind != "pulsed":
        return np.ones_like(t_s)
    phase = np.mod(t_s - spec.pulse_phase_s, spec.pulse_period_s)
    return (phase < spec.pulse_duty * spec.pulse_period_s).astype(np.float64)


def _line_weights(spec: SignalSpec, t0_s: float, obs: ObsConfig,
                  fch1_mhz: float) -> tuple[np.ndarray, np.ndarray]:
    """Fraction of a line's power in each pixel of one scan, divided by its duty cycle.

    Only the channels each integration touches are computed: a window of ``W`` channels
    starting at ``lo_I[i]`` in integration ``i``.

    Parameters
    ----------
    spec : SignalSpec
        The line, with ``f_start_mhz`` set.
    t0_s : float
        Start of the scan, seconds after the cadence start.
    obs : ObsConfig
        Geometry.
    fch1_mhz : float
        Frequency of channel 0.

    Returns
    -------
    lo_I : numpy.ndarray
        int64, shape ``(n_ints,)``: first channel of each integration's window (may lie
        outside ``0..nchans-1``; the caller clips).
    weights_IxW : numpy.ndarray
        float64, shape ``(n_ints, W)``: the profile integrated over each channel and
        averaged over sub-samples of the integration (Doppler smearing), so each row of a
        continuous line sums to 1.
    """
    scan_t = np.array([t0_s, t0_s + obs.scan_s])
    max_rate = np.max(np.abs(spec.drift_hz_s + spec.chirp_hz_s2 * scan_t))
    n_sub = max(4, math.ceil(4.0 * max_rate * obs.tsamp_s / abs(obs.foff_hz)))
    t_IxK = t0_s + (np.arange(obs.n_ints)[:, None]
                    + (np.arange(n_sub)[None, :] + 0.5) / n_sub) * obs.tsamp_s
    c_IxK = (track_freq_mhz(spec.f_start_mhz, spec.drift_hz_s, spec.chirp_hz_s2, t_IxK)
             - fch1_mhz) / obs.foff_mhz
    ext = _profile_extent_ch(spec, obs.foff_hz)
    lo_I = np.floor(c_IxK.min(axis=1) - ext).astype(np.int64)
    width = int(np.max(np.ceil(c_IxK.max(axis=1) + ext).astype(np.int64) - lo_I)) + 1
    edges_IxE = lo_I[:, None] + np.arange(width + 1)[None, :] - 0.5
    cdf = _profile_cdf(edges_IxE[:, None, :] - c_IxK[:, :, None], spec.profile,
                       spec.width_hz / abs(obs.foff_hz))
    frac_IxKxW = np.diff(cdf, axis=-1)
    on_IxK = _pulse_on(spec, t_IxK)
    weights = np.einsum("ik,ikw->iw", on_IxK, frac_IxKxW) / (n_sub * spec.duty)
    return lo_I, weights


def matched_snr(spec: SignalSpec, t0_s: float, obs: ObsConfig, fch1_mhz: float, pulses_known: bool = True) -> float:
    """S/N of the clairvoyant matched filter for a line in one scan: the best any detector can reach.

    In bandpass-normalised units a pixel holds ``a_ij = snr * w_ij / sqrt(n_ints)`` of the
    line (module docstring; ``w_ij`` from :func:`_line_weights`, channels outside the file
    dropped), and the noise of a pixel is 1. The matched filter ``sum(a x) / |a|`` (the line's
    exact track, profile and pulses known, one trial) is N(0, 1) under noise and N(rho, 1)
    with the line, ``rho = |a| = snr * sqrt(sum w^2 / n_ints)``. A line that stays in one
    channel has ``rho = snr``; one smeared evenly over ``k`` channels per integration has
    ``snr / sqrt(k)``; a pulse of duty ``d`` has about ``snr / sqrt(d)`` (the weights hold the
    scan's actual pulses, as the injection does).

    ``pulses_known=False``: the filter is the same track switched on all the time (a search
    for continuous tracks, which does not model pulse timing): ``rho = (a . v) / |v|`` with
    ``v`` the continuous track's weights; equal to the above for an unpulsed line.
    """
    lo_I, weights = _line_weights(spec, t0_s, obs, fch1_mhz)
    cols_IxW = lo_I[:, None] + np.arange(weights.shape[1])[None, :]
    inside = (cols_IxW >= 0) & (cols_IxW < obs.nchans)
    a = np.where(inside, weights, 0.0) * (spec.snr / math.sqrt(obs.n_ints))
    if pulses_known or spec.kind != "pulsed":
        return float(np.sqrt(np.sum(a * a)))
    lo_v, v = _line_weights(dataclasses.replace(spec, kind="linear"), t0_s, obs, fch1_mhz)
    assert np.array_equal(lo_v, lo_I) and v.shape == weights.shape  # same track, same windows
    v = np.where(inside, v, 0.0)
    return float(np.sum(a * v) / max(float(np.sqrt(np.sum(v * v))), 1e-300))


def _scan_bands_mhz(spec: SignalSpec, offsets_s: np.ndarray, obs: ObsConfig) -> np.ndarray:
    """Band ``[fmin, fmax]`` (MHz) a line's track covers in each scan, widened by its width.

    The centre's range over the scan is widened on both sides by ``max(width_hz, |foff|)``
    (one FWHM for a Gaussian: 98 % of the power; twice the half-width for a boxcar).
    """
    t0 = np.asarray(offsets_s, dtype=np.float64)
    t1 = t0 + obs.scan_s
    if spec.chirp_hz_s2 != 0.0:
        vertex = np.clip(-spec.drift_hz_s / spec.chirp_hz_s2, t0, t1)
    else:
        vertex = t0
    f = track_freq_mhz(spec.f_start_mhz or 0.0, spec.drift_hz_s, spec.chirp_hz_s2,
                       np.stack([t0, t1, vertex]))
    half = 1e-6 * max(spec.width_hz, abs(obs.foff_hz))
    return np.stack([f.min(axis=0) - half, f.max(axis=0) + half], axis=1)


def _band_channels(band_mhz: np.ndarray, obs: ObsConfig, fch1_mhz: float) -> np.ndarray:
    """Channel-index interval ``[c_lo, c_hi]`` (float) of each band ``[fmin, fmax]``."""
    c = (band_mhz - fch1_mhz) / obs.foff_mhz
    return np.sort(c, axis=-1)


def _safe_zones_ch(obs: ObsConfig, noise: NoiseConfig, margin_ch: float) -> np.ndarray:
    """Channel intervals clear of roll-offs and DC channels, shape ``(2 * n_coarse, 2)``."""
    edge = math.ceil(noise.rolloff_frac * obs.nfpc) + margin_ch
    dc = obs.nfpc // 2
    start = np.arange(obs.n_coarse)[:, None] * obs.nfpc
    lower = np.hstack([start + edge, start + dc - margin_ch])
    upper = np.hstack([start + dc + margin_ch, start + obs.nfpc - 1 - edge])
    return np.vstack([lower, upper]).astype(np.float64)


def _place(spec: SignalSpec, present: np.ndarray, offsets_s: np.ndarray, obs: ObsConfig,
           fch1_mhz: float, zones_ch: np.ndarray | None, occupied: list[np.ndarray],
           margin_mhz: float, rng: np.random.Generator, max_tries: int) -> SignalSpec:
    """Choose ``f_start_mhz`` at random so that the line is unambiguous.

    In every scan where it is present the line's band lies inside the file band (and inside
    one of ``zones_ch`` when given); in every scan its band is ``margin_mhz`` away from the
    bands of the ``occupied`` lines. A spec with ``f_start_mhz`` set is returned unchanged.
    """
    f_edges = sorted((fch1_mhz, fch1_mhz + (obs.nchans - 1) * obs.foff_mhz))
    if spec.f_start_mhz is not None:
        bands = _scan_bands_mhz(spec, offsets_s, obs)[present]
        if bands[:, 1].max() < f_edges[0] or bands[:, 0].min() > f_edges[1]:
            raise ValueError(f"{spec} lies outside the band {f_edges} MHz of its cadence")
        return spec
    rel = _scan_bands_mhz(dataclasses.replace(spec, f_start_mhz=0.0), offsets_s, obs)
    lo = f_edges[0] + margin_mhz - rel[present, 0].min()
    hi = f_edges[1] - margin_mhz - rel[present, 1].max()
    for _ in range(max_tries if lo < hi else 0):
        f0 = rng.uniform(lo, hi)
        bands = rel + f0
        if zones_ch is not None:
            c = _band_channels(bands[present], obs, fch1_mhz)
            inside = ((zones_ch[None, :, 0] <= c[:, None, 0])
                      & (c[:, None, 1] <= zones_ch[None, :, 1]))
            if not inside.any(axis=1).all():
                continue
        if any(((bands[:, 0] < occ[:, 1] + margin_mhz)
                & (occ[:, 0] < bands[:, 1] + margin_mhz)).any() for occ in occupied):
            continue
        return dataclasses.replace(spec, f_start_mhz=float(f0))
    raise RuntimeError(
        f"could not place {spec} clear of edges, DC channels and other lines in "
        f"{max_tries} tries: widen the band (n_coarse, nfpc) or inject fewer/slower lines")


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class _Line:
    """A placed line: an ETI signal or an RFI line."""

    ident: str  # id in the truth records
    label: str  # kind in the truth records
    spec: SignalSpec  # placed spec (f_start_mhz set)
    present: np.ndarray  # bool per scan


def _scan_offsets_s(obs: ObsConfig, rng: np.random.Generator) -> np.ndarray:
    """Start of each scan, seconds after the start of scan 0."""
    gaps = rng.uniform(obs.gap_s[0], obs.gap_s[1], size=N_SCANS - 1)
    return np.concatenate([[0.0], np.cumsum(obs.scan_s + gaps)])


def _draw_rfi_specs(rfi: RfiConfig, rng: np.random.Generator) -> list[tuple[str, SignalSpec]]:
    """Parameters of the RFI lines of one cadence (frequencies are placed later)."""
    out = []
    for label, count in (("zero_drift", rfi.n_zero_drift), ("drifting", rfi.n_drifting)):
        for _ in range(count):
            snr = math.exp(rng.uniform(math.log(rfi.line_snr[0]), math.log(rfi.line_snr[1])))
            width = rng.uniform(*rfi.line_width_hz)
            drift = 0.0
            if label == "drifting":
                drift = rng.choice((-1.0, 1.0)) * rng.uniform(*rfi.drift_hz_s)
            out.append((label, SignalSpec(kind="linear", snr=float(snr),
                                          drift_hz_s=float(drift), width_hz=float(width))))
    return out


def _plan_lines(config: SynthConfig, index: int, cadence_id: str, offsets_s: np.ndarray,
                fch1_mhz: float, rng: np.random.Generator) -> list[_Line]:
    """Place the ETI signals (ON scans, clear zones) first, then the RFI lines (all scans)."""
    obs = config.obs
    margin_mhz = config.margin_hz * 1e-6
    zones = _safe_zones_ch(obs, config.noise, config.margin_hz / abs(obs.foff_hz))
    on = np.isin(np.arange(N_SCANS), ON_SCANS)
    occupied: list[np.ndarray] = []
    lines = []
    todo = [(f"{cadence_id}-eti{j}", spec.kind, spec, on, zones) for j, spec in
            enumerate(s for s in config.eti if s.cadence is None or s.cadence == index)]
    todo += [(f"{cadence_id}-rfi{j}", label, spec, np.ones(N_SCANS, bool), None)
             for j, (label, spec) in enumerate(_draw_rfi_specs(config.rfi, rng))]
    for ident, label, spec, present, zone in todo:
        placed = _place(spec, present, offsets_s, obs, fch1_mhz, zone, occupied, margin_mhz,
                        rng, config.max_tries)
        occupied.append(_scan_bands_mhz(placed, offsets_s, obs))
        lines.append(_Line(ident, label, placed, present))
    return lines


def _plan_impulses(rfi: RfiConfig, obs: ObsConfig, rng: np.random.Generator) -> list[list[dict]]:
    """Broadband impulses of each scan: integrations, channel range and level."""
    out = []
    for _ in range(N_SCANS):
        scan = []
        for _ in range(rfi.n_impulses):
            n_int = int(rng.integers(rfi.impulse_ints[0], rfi.impulse_ints[1] + 1))
            n_int = min(n_int, obs.n_ints)
            i0 = int(rng.integers(0, obs.n_ints - n_int + 1))
            width = max(1, round(rng.uniform(*rfi.impulse_band_frac) * obs.nchans))
            c0 = int(rng.integers(0, obs.nchans - width + 1))
            scan.append({"int_start": i0, "int_stop": i0 + n_int, "chan_min": c0,
                         "chan_max": c0 + width - 1,
                         "level": float(rng.uniform(*rfi.impulse_level))})
        out.append(scan)
    return out


def _sigproc_angle(value: float) -> float:
    """Hours or degrees as sigproc's ``[-]ddmmss.s`` float."""
    sign = -1.0 if value < 0 else 1.0
    value = abs(value)
    d = int(value)
    m = int((value - d) * 60.0)
    s = (value - d - m / 60.0) * 3600.0
    return sign * (d * 10000 + m * 100 + round(s, 3))


def _headers(obs: ObsConfig, fch1_mhz: float, t0_mjd: float, offsets_s: np.ndarray,
             rng: np.random.Generator) -> list[dict]:
    """Sigproc headers of the six scans: target in 0, 2, 4; three other sources in 1, 3, 5."""
    ids: list[int] = []
    while len(ids) < 4:
        n = int(rng.integers(10_000_000, 500_000_000))
        if n not in ids:
            ids.append(n)
    ra_h, dec_deg = rng.uniform(0.0, 24.0), rng.uniform(-30.0, 80.0)
    sky = [(f"TIC{ids[0]}", ra_h, dec_deg)]
    sky += [(f"TIC{n}", (ra_h + rng.uniform(-0.2, 0.2)) % 24.0,
             float(np.clip(dec_deg + rng.uniform(-2.0, 2.0), -89.0, 89.0))) for n in ids[1:]]
    az0, za0 = rng.uniform(0.0, 360.0), rng.uniform(10.0, 60.0)
    headers = []
    for s in range(N_SCANS):
        name, ra, dec = sky[0] if s in ON_SCANS else sky[1 + s // 2]
        headers.append({
            "telescope_id": 6, "machine_id": 10, "data_type": 1, "source_name": name,
            "src_raj": _sigproc_angle(ra), "src_dej": _sigproc_angle(dec),
            "az_start": float((az0 + 0.4 * s + rng.uniform(-1.0, 1.0)) % 360.0),
            "za_start": float(za0 + 0.2 * s + rng.uniform(-1.0, 1.0)),
            "tstart": float(t0_mjd + offsets_s[s] / 86400.0), "tsamp": obs.tsamp_s,
            "nbits": 32, "fch1": float(fch1_mhz), "foff": obs.foff_mhz, "nchans": obs.nchans,
            "nifs": 1, "nfpc": obs.nfpc})
    return headers


# --------------------------------------------------------------------------- rendering


def _noise(bandpass_F: np.ndarray, n_ints: int, dof: int,
           rng: np.random.Generator) -> np.ndarray:
    """Chi-squared noise with mean ``bandpass_F``, float32 ``(n_ints, nchans)``."""
    data = rng.standard_gamma(dof / 2.0, size=(n_ints, bandpass_F.size), dtype=np.float32)
    data *= (bandpass_F / (dof / 2.0)).astype(np.float32)
    return data


def _inject_line(data_TxF: np.ndarray, bandpass_F: np.ndarray, spec: SignalSpec,
                 t0_s: float, obs: ObsConfig, fch1_mhz: float, dof: int) -> float:
    """Add a line to one scan in place; return its realised integrated SNR in that scan."""
    lo_I, weights = _line_weights(spec, t0_s, obs, fch1_mhz)
    cols_IxW = lo_I[:, None] + np.arange(weights.shape[1])[None, :]
    inside = (cols_IxW >= 0) & (cols_IxW < obs.nchans)
    rows = np.broadcast_to(np.arange(obs.n_ints)[:, None], cols_IxW.shape)[inside]
    cols = cols_IxW[inside]
    weights = weights[inside]
    amp = spec.snr * math.sqrt(2.0 / dof) / math.sqrt(obs.n_ints)
    data_TxF[rows, cols] += (amp * weights * bandpass_F[cols]).astype(np.float32)
    return float(spec.snr * weights.sum() / obs.n_ints)


def _line_record(line: _Line, cadence_id: str, t0_mjd: float, offsets_s: np.ndarray,
                 obs: ObsConfig, fch1_mhz: float, snr_scan: np.ndarray) -> dict:
    """Truth record of a line (ETI signal or RFI line)."""
    spec = line.spec
    bands = _scan_bands_mhz(spec, offsets_s, obs)
    chans = np.clip(np.rint(_band_channels(bands, obs, fch1_mhz)), -1, obs.nchans)
    f_scan = track_freq_mhz(spec.f_start_mhz, spec.drift_hz_s, spec.chirp_hz_s2, offsets_s)
    pulsed = line.label == "pulsed"
    scans = [{"scan_index": s, "present": bool(line.present[s]),
              "t_offset_s": float(offsets_s[s]), "f_scan_start_mhz": float(f_scan[s]),
              "freq_min_mhz": float(bands[s, 0]), "freq_max_mhz": float(bands[s, 1]),
              "chan_min": int(chans[s, 0]), "chan_max": int(chans[s, 1]),
              "snr_scan": float(snr_scan[s])} for s in range(N_SCANS)]
    return {"id": line.ident, "cadence_id": cadence_id, "kind": line.label,
            "profile": spec.profile, "snr": spec.snr, "width_hz": spec.width_hz,
            "drift_hz_s": spec.drift_hz_s, "chirp_hz_s2": spec.chirp_hz_s2,
            "pulse_period_s": spec.pulse_period_s if pulsed else None,
            "pulse_duty": spec.pulse_duty if pulsed else None,
            "pulse_phase_s": spec.pulse_phase_s if pulsed else None,
            "f_start_mhz": spec.f_start_mhz, "t0_mjd": t0_mjd, "scans": scans}


def _impulse_records(impulses: list[list[dict]], cadence_id: str, obs: ObsConfig,
                     fch1_mhz: float) -> list[dict]:
    """Truth records of the broadband impulses, one per impulse (each in a single scan)."""
    out = []
    for s, scan in enumerate(impulses):
        for j, imp in enumerate(scan):
            f = fch1_mhz + np.array([imp["chan_min"], imp["chan_max"]]) * obs.foff_mhz
            out.append({"id": f"{cadence_id}-imp{s}{j}", "cadence_id": cadence_id,
                        "kind": "impulse", "level": imp["level"],
                        "scans": [{"scan_index": s, "present": True,
                                   "int_start": imp["int_start"], "int_stop": imp["int_stop"],
                                   "freq_min_mhz": float(f.min()) - 0.5 * abs(obs.foff_mhz),
                                   "freq_max_mhz": float(f.max()) + 0.5 * abs(obs.foff_mhz),
                                   "chan_min": imp["chan_min"], "chan_max": imp["chan_max"]}]})
    return out


def make_cadence(config: SynthConfig, rng: np.random.Generator, *, index: int = 0) -> Cadence:
    """Generate one ABACAD cadence: six scans and their ground truth.

    Parameters
    ----------
    config : SynthConfig
        What to generate. ETI specs with ``cadence`` equal to ``index`` or ``None`` are
        injected.
    rng : numpy.random.Generator
        Source of all randomness; six independent child streams are spawned from it.
    index : int
        Position in the survey: sets the band (``obs.fch1_of(index)``), the start time
        (``mjd_start + index * cadence_spacing_s``) and the ``cadence_id``.

    Returns
    -------
    Cadence
        Scans with sigproc headers and float32 ``(n_ints, nchans)`` data, the bandpass and
        the truth records (see the module docstring for the SNR definition).
    """
    obs, noise = config.obs, config.noise
    r_time, r_sky, r_bp, r_place, r_imp, r_noise = rng.spawn(6)
    cadence_id = f"cad{index:03d}"
    fch1 = obs.fch1_of(index)
    t0_mjd = obs.mjd_start + index * obs.cadence_spacing_s / 86400.0
    offsets = _scan_offsets_s(obs, r_time)
    headers = _headers(obs, fch1, t0_mjd, offsets, r_sky)
    bp = bandpass(obs, noise, r_bp)
    lines = _plan_lines(config, index, cadence_id, offsets, fch1, r_place)
    impulses = _plan_impulses(config.rfi, obs, r_imp)
    snr_LxS = np.zeros((len(lines), N_SCANS))
    scans = []
    for s in range(N_SCANS):
        data = _noise(bp, obs.n_ints, noise.dof, r_noise)
        for li, line in enumerate(lines):
            if line.present[s]:
                snr_LxS[li, s] = _inject_line(data, bp, line.spec, offsets[s], obs, fch1,
                                              noise.dof)
        for imp in impulses[s]:
            lo, hi = imp["chan_min"], imp["chan_max"] + 1
            data[imp["int_start"]:imp["int_stop"], lo:hi] += (
                imp["level"] * bp[lo:hi]).astype(np.float32)
        scans.append(Scan(header=headers[s], data_TxF=data))
    records = [_line_record(line, cadence_id, t0_mjd, offsets, obs, fch1, snr_LxS[li])
               for li, line in enumerate(lines)]
    return Cadence(
        index=index, cadence_id=cadence_id, target=headers[0]["source_name"],
        scans=tuple(scans), bandpass_F=bp,
        signals=tuple(r for r in records if r["kind"] in KINDS),
        rfi=tuple([r for r in records if r["kind"] not in KINDS]
                  + _impulse_records(impulses, cadence_id, obs, fch1)))


def iter_cadences(config: SynthConfig, *, seed: int, cadences: int) -> Iterator[Cadence]:
    """Yield the cadences of a survey; cadence ``k`` uses child ``k`` of ``default_rng(seed)``.

    Cadence ``k`` is therefore the same whatever ``cadences`` is.
    """
    for k, child in enumerate(np.random.default_rng(seed).spawn(cadences)):
        yield make_cadence(config, child, index=k)


def specs_by_cadence(specs: Sequence[SignalSpec], cadences: int) -> list[list[SignalSpec]]:
    """Group specs by the cadence they go into (``cadence=None``: all of them)."""
    out: list[list[SignalSpec]] = [[] for _ in range(cadences)]
    for spec in specs:
        if spec.cadence is not None and not 0 <= spec.cadence < cadences:
            raise ValueError(f"{spec} names cadence {spec.cadence}, outside 0..{cadences - 1}")
        for k in range(cadences) if spec.cadence is None else (spec.cadence,):
            out[k].append(spec)
    return out
