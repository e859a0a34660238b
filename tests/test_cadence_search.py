"""The cadence line search: the local window search, its p-values, following and deciding lines."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seti_auditor.cadence_search import LineSearchConfig, blocks, decide_lines, fisher, line_events, next_targets
from seti_auditor.scoring import window_pvalue, window_stat

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


def _measured_line(seed: int, on_p: float, off_p: float, own_p: float = 1e-6, chan: float = 100.0) -> pd.DataFrame:
    rows = _rows()
    first = rows[rows["tile"] % 3 == 0]
    return pd.DataFrame({
        "seed": seed, "cadence_id": "c0", "scan_index": first["scan_index"].to_numpy(),
        "on_source": first["on_source"].to_numpy(), "file_id": first["file_id"].to_numpy(),
        "tile": first["tile"].to_numpy(), "own": first["scan_index"].to_numpy() == 2,
        "dt_s": (first["scan_index"].to_numpy() - 2) * 300.0, "tstart_mjd": first["tstart_mjd"].to_numpy(),
        "tstop_mjd": first["tstop_mjd"].to_numpy(), "chan": chan, "drift_chan": 0.0, "width": 1,
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
    ], ignore_index=True)
    seeds = _seeds({0: 1e-6, 1: 1e-5, 2: 1e-6, 3: 1e-4, 4: 1e-6}, {0: 100.0, 1: 101.0, 2: 200.0, 3: 40.0, 4: 10.0})
    lines, rows = decide_lines(seeds, measured, m_tests=1000, cfg=cfg)
    verdict = dict(zip(lines["seed"], lines["verdict"]))
    assert 1 not in verdict  # merged into seed 0's line
    assert verdict == {0: "pass", 2: "in_off", 3: "not_significant", 4: "not_significant"}
    assert lines.loc[lines["seed"] == 0, "n_on_scans"].item() == 3
    p0 = fisher(np.array([1e-6, 1e-5, 1e-5]))
    assert lines.loc[lines["seed"] == 0, "p_combined"].item() == pytest.approx(p0)
    # BH over the four distinct lines (not the five seeds): three share the smallest p-value
    assert lines.loc[lines["seed"] == 0, "q_combined"].item() == pytest.approx(p0 * 1000 / 3)
    events = line_events(rows[rows["verdict"] == "pass"], seeds)
    assert sorted(events["scan_index"]) == [0, 2, 4] and set(events["method"]) == {"cadence_line"}
    assert (events["freq_min_mhz"] <= 1105.0 + 100 * FOFF).all() and (events["freq_max_mhz"] >= 1105.0 + 100 * FOFF).all()
