"""The cadence line search: the local window search, its p-values, following and deciding lines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seti_auditor.cadence_search import (TARGET_COLUMNS, LineSearchConfig, blocks, coherent, decide_lines, fisher,
                                         line_events, next_targets, widths_for)
from seti_auditor.scoring import normal_scores, window_pvalue, window_stat

T, F = 16, 256
FOFF = -2.7939677238464355e-06  # MHz, BL high resolution
TSAMP = 18.253611008  # s


def _smeared_line(z: np.ndarray, centre: float, drift: float, amp: float) -> None:
    """Add a line drifting ``drift`` channels per integration, its power spread over |drift| channels."""
    width = max(1.0, abs(drift))
    for t in range(z.shape[0]):
        c = centre + drift * (t - (z.shape[0] - 1) / 2.0)
        lo = c - width / 2.0
        for ch in range(int(np.floor(lo)), int(np.ceil(lo + width))):
            if 0 <= ch < z.shape[1]:
                z[t, ch] += amp * max(0.0, min(ch + 1, lo + width) - max(ch, lo))


def _correlated_noise(rng, n: int) -> np.ndarray:
    """Residual-like noise: neighbouring channels correlated, plus a ripple that persists in time."""
    z = rng.normal(size=(T, n))
    z = (z + np.roll(z, 1, axis=1) + np.roll(z, 2, axis=1)) / np.sqrt(3.0)
    z += 0.4 * np.sin(np.arange(n) / (5.0 + rng.uniform(0, 5)))[None, :]
    return np.clip(z, -4, 4)


def test_window_search_finds_a_smeared_fast_line_where_it_is():
    rng = np.random.default_rng(1)
    z = rng.normal(size=(T, 3 * F))
    ideal = 7.0  # matched-filter S/N over the 16 x 13 pixels
    _smeared_line(z, 400.3, 13.0, ideal / np.sqrt(13.0 * T))  # per pixel
    stat, chan, drift, width, n_tracks = window_stat(np.clip(z, -4, 4), 395.0, 12.5, 20, 1.0, 2 / 15, (1, 2, 3, 13, 15))
    assert abs(chan - 400.3) <= 1.5 and abs(drift - 13.0) <= 0.3 and width in (13, 15)
    assert ideal - 1.5 < stat < ideal + 1.5
    assert window_pvalue(stat, n_tracks) < 1e-5
    # nothing there: a window elsewhere on the same strip is unremarkable
    far = window_stat(np.clip(z, -4, 4), 120.0, 12.5, 20, 1.0, 2 / 15, (1, 2, 3, 13, 15))
    assert window_pvalue(far[0], far[4]) > 1e-3


def test_window_pvalues_are_conservative_on_correlated_residuals():
    """Correlated channels and a persistent ripple widen raw track sums; the local null absorbs both."""
    rng = np.random.default_rng(7)
    p = np.array([window_pvalue(*np.take(window_stat(_correlated_noise(rng, 512), rng.uniform(150, 350), 13.0, 10,
                                                       0.5, 2 / 15, (1, 2, 3, 13, 15)), [0, 4])) for _ in range(150)])
    for alpha in (0.05, 0.2):
        assert np.mean(p <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / p.size)


def _chi2_residual(rng, n: int, dof: int = 8, strong: int | None = None, impulse: bool = False) -> np.ndarray:
    """Residual-like strip of chi-squared noise (positively skewed, ``sqrt(8 / dof)`` per pixel), row medians
    removed, robustly standardised and clipped like :func:`seti_auditor.scoring.residual_z`; optionally a
    strong 3-channel line at ``strong`` and two integrations lifted by a broadband impulse."""
    x = (rng.chisquare(dof, size=(T, n)) / dof - 1.0) / np.sqrt(2.0 / dof)
    if impulse:
        x[[5, 6]] *= 1.8
    if strong is not None:
        x[:, strong:strong + 3] += 60.0
    x -= np.median(x, axis=1, keepdims=True)
    return np.clip(x / (1.4826 * np.median(np.abs(x))), -4, 4)


def test_normal_scores_are_gaussian_per_row_and_keep_order():
    rng = np.random.default_rng(3)
    z = _chi2_residual(rng, 768)
    z[:, :5] = np.nan  # a missing neighbour tile
    g = normal_scores(z)
    assert np.isnan(g[:, :5]).all() and np.isfinite(g[:, 5:]).all()
    row = g[0, 5:]
    assert abs(row.mean()) < 0.02 and abs(row.std() - 1.0) < 0.03
    assert abs(float(((row - row.mean()) ** 3).mean())) < 0.05 < float(((z[0, 5:] - z[0, 5:].mean()) ** 3).mean())
    order = np.argsort(z[0, 5:], kind="stable")
    assert (np.diff(row[order]) >= 0).all()  # monotone: a line stays on top


def test_window_pvalues_hold_on_skewed_residuals_beside_a_strong_line():
    """The 1 GB benchmark's false lines: chi-squared residuals are skewed, so raw track sums have an upper
    tail several times the Gaussian's at 4-5 sigma. Windows beside a strong RFI line, with two integrations
    lifted by an impulse, must stay calibrated (summing raw residuals gave P(p <= 0.01) = 0.05 here)."""
    rng = np.random.default_rng(5)
    p = []
    for _ in range(400):
        z = _chi2_residual(rng, 3 * F, strong=380, impulse=True)
        centre = 380 + rng.choice([-1, 1]) * rng.uniform(90, 200)  # the window does not reach the strong line
        stat, *_, n_tracks = window_stat(z, centre, rng.uniform(-1, 1), 36, 1.4, 2 / 15, (1, 2, 3))
        p.append(window_pvalue(stat, n_tracks))
    p = np.asarray(p)
    for alpha in (0.01, 0.05):
        assert np.mean(p <= alpha) <= alpha + 3 * np.sqrt(alpha * (1 - alpha) / p.size)


def test_a_weak_line_in_clean_noise_still_shows():
    rng = np.random.default_rng(9)
    p = []
    for _ in range(40):
        z = rng.normal(size=(T, 3 * F))
        c, d = rng.uniform(300, 460), rng.uniform(-1, 1)
        for t in range(T):  # matched S/N 8 over 16 pixels
            z[t, int(round(c + d * (t - (T - 1) / 2)))] += 2.0
        stat, chan, drift, width, n_tracks = window_stat(np.clip(z, -4, 4), c + rng.uniform(-20, 20),
                                                         d + rng.uniform(-0.5, 0.5), 36, 1.4, 2 / 15, (1, 2, 3))
        p.append(window_pvalue(stat, n_tracks))
        assert abs(chan - c) <= 2.0 or p[-1] > 0.01
    assert np.mean(np.asarray(p) <= 0.01) >= 0.9


def test_fast_lines_are_searched_with_boxcars_of_their_smear():
    assert widths_for(0.3) == (1, 2, 3) and widths_for(2.6) == (1, 2, 3, 5)
    assert widths_for(-13.4) == (6, 13, 15) and min(widths_for(4.0)) == 2


def _rows(cadence: str = "c0") -> pd.DataFrame:
    """A tile table of one ABACAD cadence: 6 scans x 3 tiles (no sub-bands), one time block each."""
    out = []
    for scan in range(6):
        t0 = 60000.0 + scan * 300.0 / 86400.0
        for k in range(3):
            f0 = 1105.0 + k * F * FOFF
            out.append({"tile": scan * 3 + k, "subband": 0, "file_id": scan, "source_file": f"s{scan}.fil",
                        "source_name": "ON" if scan % 2 == 0 else f"OFF{scan}", "cadence_id": cadence,
                        "scan_index": scan, "on_source": scan % 2 == 0, "freq_min_mhz": f0 + (F - 1) * FOFF,
                        "freq_max_mhz": f0, "tstart_mjd": t0, "tstop_mjd": t0 + T * TSAMP / 86400.0, "p": 0.5,
                        "drift_hz_s": 0.0, "peak_freq_mhz": f0 + 100 * FOFF, "foff_mhz": FOFF, "tsamp_s": TSAMP,
                        "tile_freq0_mhz": f0})
    return pd.DataFrame(out)


def test_following_starts_at_the_seed_then_on_scans_then_gated_off_scans():
    rows = _rows()
    cfg = LineSearchConfig()
    seed = rows.iloc[[7]].assign(p=1e-6, drift_hz_s=0.5, seed=0)  # scan 2, middle tile
    cad = blocks(rows)
    first = next_targets(seed, cad, pd.DataFrame(), cfg, T, 4.0)
    assert list(first.columns) == list(TARGET_COLUMNS)
    assert first["own"].tolist() == [True] and first["scan_index"].tolist() == [2]
    assert first["half_chan"].iloc[0] == pytest.approx(1.0)

    def measure(targets, p):
        f0 = targets["tile_freq0_mhz"].to_numpy()
        return targets.assign(stat=5.0, p=p, chan=(targets["freq_mhz"].to_numpy() - f0) / FOFF,
                              drift_chan=targets["drift0_chan"], width=1, n_int=T)

    measured = measure(first, 1e-6)
    order = []
    for _ in range(5):
        nxt = next_targets(seed, cad, measured, cfg, T, 4.0, gate_p=1e-3)
        if nxt.empty:
            break
        order.append(int(nxt["scan_index"].iloc[0]))
        measured = pd.concat([measured, measure(nxt, 1e-4 if nxt["on_source"].iloc[0] else 0.5)], ignore_index=True)
    assert order[:2] in ([0, 4], [4, 0]) and sorted(order[2:]) == [1, 3, 5]  # ON scans first, then OFFs
    # the prediction carries the drift: 600 s at 0.5 Hz/s is 300 Hz away from the seed's frequency
    later = measured[measured["scan_index"] == 4].iloc[0]
    assert later["freq_mhz"] - seed["peak_freq_mhz"].iloc[0] == pytest.approx(0.5 * later["dt_s"] / 1e6)
    # a seed whose ON scans say nothing is not followed into the OFF scans
    weak = next_targets(seed, cad, measured.assign(p=np.where(measured["own"], 1e-6, 0.9))
                        .query("on_source"), cfg, T, 4.0, gate_p=1e-9)
    assert weak.empty


def _measured_line(seed: int, on_p: float, off_p: float, own_p: float = 1e-6, chan: float = 100.0,
                   on_shift: float = 0.0) -> pd.DataFrame:
    """Measured targets of one seed in scan 2 (a zero-drift line at ``chan``); ``on_shift`` moves the best
    track of the other ON scans by that many channels (a peak that does not continue the seed's track)."""
    rows = _rows()
    first = rows[rows["tile"] % 3 == 0]
    other_on = first["on_source"].to_numpy() & (first["scan_index"].to_numpy() != 2)
    return pd.DataFrame({
        "seed": seed, "cadence_id": "c0", "scan_index": first["scan_index"].to_numpy(),
        "on_source": first["on_source"].to_numpy(), "file_id": first["file_id"].to_numpy(),
        "tile": first["tile"].to_numpy(), "own": first["scan_index"].to_numpy() == 2,
        "dt_s": (first["scan_index"].to_numpy() - 2) * 300.0, "tstart_mjd": first["tstart_mjd"].to_numpy(),
        "tstop_mjd": first["tstop_mjd"].to_numpy(), "chan": chan + on_shift * other_on, "drift_chan": 0.0, "width": 1,
        "half_drift_chan": LineSearchConfig().drift_unc_hz_s * TSAMP / abs(FOFF * 1e6),
        "foff_mhz": FOFF, "tsamp_s": TSAMP, "tile_freq0_mhz": 1105.0, "n_int": T, "stat": 5.0,
        "p": np.where(first["scan_index"].to_numpy() == 2, own_p, np.where(first["on_source"].to_numpy(), on_p, off_p)),
        "source_file": first["source_file"].to_numpy(), "source_name": first["source_name"].to_numpy(),
    })  # fmt: skip


def _seeds(ids_p: dict[int, float], chan: dict[int, float]) -> pd.DataFrame:
    rows = _rows()
    base = rows[rows["tile"] == 6].iloc[0]
    return pd.DataFrame([{**base.to_dict(), "seed": s, "p": p, "peak_freq_mhz": 1105.0 + chan[s] * FOFF}
                         for s, p in ids_p.items()])


def test_decide_lines_passes_vetoes_and_merges():
    cfg = LineSearchConfig(q=0.01)
    measured = pd.concat([
        _measured_line(0, on_p=1e-5, off_p=0.5),  # a line in the three ON scans only
        _measured_line(1, on_p=1e-5, off_p=0.5, chan=101.0),  # the same line seen from another seed
        _measured_line(2, on_p=1e-5, off_p=1e-4, chan=200.0),  # present in the OFF scans: RFI
        _measured_line(3, on_p=0.5, off_p=0.5, chan=40.0),  # a lone noise peak
        _measured_line(4, on_p=1e-5, off_p=0.5, own_p=0.3, chan=10.0),  # the seed's own track does not hold up
        # the other ON scans' best tracks are peaks 60 channels (168 Hz in 300-600 s) off the seed's zero drift
        _measured_line(5, on_p=1e-5, off_p=0.5, chan=160.0, on_shift=60.0),
    ], ignore_index=True)
    seeds = _seeds({0: 1e-6, 1: 1e-5, 2: 1e-6, 3: 1e-4, 4: 1e-6, 5: 1e-6},
                   {0: 100.0, 1: 101.0, 2: 200.0, 3: 40.0, 4: 10.0, 5: 160.0})
    lines, rows = decide_lines(seeds, measured, m_tests=1000, cfg=cfg)
    verdict = dict(zip(lines["seed"], lines["verdict"]))
    assert 1 not in verdict  # merged into seed 0's line
    assert verdict == {0: "pass", 2: "in_off", 3: "not_significant", 4: "not_significant", 5: "few_on_scans"}
    assert lines.loc[lines["seed"] == 5, "n_on_scans"].item() == 1
    assert lines.loc[lines["seed"] == 0, "n_on_scans"].item() == 3
    p0 = fisher(np.array([1e-6, 1e-5, 1e-5]))
    assert lines.loc[lines["seed"] == 0, "p_combined"].item() == pytest.approx(p0)
    # BH over the five distinct lines (not the six seeds): four share the smallest p-value
    assert lines.loc[lines["seed"] == 0, "q_combined"].item() == pytest.approx(p0 * 1000 / 4)
    events = line_events(rows[rows["verdict"] == "pass"], seeds)
    assert sorted(events["scan_index"]) == [0, 2, 4] and set(events["method"]) == {"cadence_line"}
    assert (events["freq_min_mhz"] <= 1105.0 + 100 * FOFF).all() and (events["freq_max_mhz"] >= 1105.0 + 100 * FOFF).all()


def test_coherence_follows_a_chirp_and_rejects_a_peak_off_the_track():
    """Mean drift between two scans = average of their drifts (exact for a constant chirp)."""
    cfg = LineSearchConfig()
    to_chan = TSAMP / (FOFF * 1e6)  # Hz/s -> channels per integration
    d0, chirp, dt = 1.5, 3e-4, 600.0  # Hz/s, Hz/s^2, s
    d1 = d0 + chirp * dt
    shift_hz = 0.5 * (d0 + d1) * dt  # 945 Hz: the track's position in the later scan
    t0 = 60000.0
    base = {"seed": 0, "tile_freq0_mhz": 1105.0, "foff_mhz": FOFF, "tsamp_s": TSAMP,
            "half_drift_chan": cfg.drift_unc_hz_s * abs(to_chan)}
    rows = pd.DataFrame([
        {**base, "own": True, "chan": 100.0, "drift_chan": d0 * to_chan, "tstart_mjd": t0, "tstop_mjd": t0 + 1e-3},
        *({**base, "own": False, "chan": 100.0 + (shift_hz + err) / (FOFF * 1e6), "drift_chan": d1 * to_chan,
           "tstart_mjd": t0 + dt / 86400.0, "tstop_mjd": t0 + 1e-3 + dt / 86400.0} for err in (5.0, 100.0)),
        {**base, "own": False, "chan": np.nan, "drift_chan": np.nan, "tstart_mjd": t0, "tstop_mjd": t0},  # no track
    ])
    assert coherent(rows, cfg).tolist() == [True, True, False, True]
