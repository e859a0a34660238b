"""The cadence-coherent joint search for fast lines (seti_auditor.joint_search): small seeded synthetic scans."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr, ndtri

from seti_auditor.joint_search import (TAIL_X, JointSearchConfig, ScanGeometry, bin_rows, decide_peaks, joint_events,
                                       joint_triplet, off_values, scan_drifts, scan_map, trial_grid)

T, L, FOFF, TSAMP, B = 16, 4096, 2.79, 18.25, 4  # one BL high-resolution scan, 4096 fine channels, 4-channel bins
TIMES = np.array([0.0, 312.0, 628.0, 941.0, 1250.0, 1566.0])  # scan starts (s): 292 s scans, uneven slews
CFG = JointSearchConfig(enabled=True)
F_START = 1500 * FOFF  # the line's frequency at t = 0 (Hz from channel 0)


def _scan(rng, t0: float, snr: float, drift: float, chirp: float = 0.0) -> np.ndarray:
    """Unit white noise plus a line ``F_START + drift t + chirp t^2 / 2`` of integrated SNR ``snr`` (benchmark's
    definition: sum of its power / sqrt(T)), each integration's power spread over the channels it crosses."""
    z = rng.standard_normal((T, L))
    if snr:
        for i in range(T):
            ts = np.linspace(t0 + i * TSAMP, t0 + (i + 1) * TSAMP, 400)
            ch = np.rint((F_START + drift * ts + 0.5 * chirp * ts * ts) / FOFF).astype(int)  # channel i: centre i * FOFF
            u, c = np.unique(ch, return_counts=True)
            z[i, u] += snr * math.sqrt(T) / T * c / c.sum()
    return z


def _cadence(rng, snr_on: float, snr_off: float, drift: float, chirp: float = 0.0, cfg: JointSearchConfig = CFG):
    grid = scan_drifts(cfg, TSAMP, FOFF * B, T)
    maps, geos = [], []
    for s in range(6):
        z = _scan(rng, TIMES[s], snr_on if s % 2 == 0 else snr_off, drift, chirp)
        maps.append(scan_map(bin_rows(z, B), grid, cfg.min_track_frac))
        geos.append(ScanGeometry(TIMES[s] + T * TSAMP / 2, (B - 1) / 2 * FOFF, FOFF * B, TSAMP))
    return maps, geos, grid


def _expected(geo: ScanGeometry, drift: float, chirp: float = 0.0) -> tuple[float, float]:
    t = geo.t_mid_s
    return (F_START + drift * t + 0.5 * chirp * t * t - geo.f0_hz) / geo.bin_hz, drift + chirp * t


def test_joint_statistic_finds_a_smeared_fast_line_no_single_scan_shows():
    rng = np.random.default_rng(3)
    snr = 16.0  # per scan, smeared over 13 channels per integration: at best 4.4 sigma in a matched track
    maps, geos, grid = _cadence(rng, snr, 0.0, 2.0)
    for m, g in zip(maps[0::2], geos[0::2]):
        # no ON scan shows it: its track stays below what a search of that scan alone must reach at alpha
        single_level = -ndtri(CFG.alpha / np.isfinite(m).sum())
        c, d = _expected(g, 2.0)
        i = int(np.abs(grid - d * TSAMP / g.bin_hz).argmin())
        assert m[i, int(round(c))] < single_level
    peaks, n_trials, _ = joint_triplet(maps[0::2], geos[0::2], grid, CFG)
    best = peaks.loc[peaks["stat"].idxmax()]
    chan, drift = _expected(geos[2], 2.0)
    assert abs(best["ref_chan"] - chan) <= 2
    assert abs(best["drift_hz_s"] - drift) < 0.05
    assert min(best["components"]) > 1.5
    # it stands above everything the OFF triplet (same trials, no line) reaches, and passes at alpha for this cadence
    null, _, _ = joint_triplet(maps[1::2], geos[1::2], grid, CFG)
    assert best["stat"] > null["stat"].max() + 0.5
    assert decide_peaks(best.to_frame().T.assign(off_max=-np.inf), n_trials, CFG)["verdict"].iloc[0] == "pass"


def test_joint_statistic_is_calibrated_on_noise():
    """Per trial, P(J > x) matches the normal tail (the scans are independent; each map is standardised)."""
    rng = np.random.default_rng(11)
    cfg = dataclasses.replace(CFG, chirp_hz_s2=0.0)
    tails, trials, maxima = np.zeros(TAIL_X.size), 0, []
    for _ in range(3):
        maps, geos, grid = _cadence(rng, 0.0, 0.0, 2.0, cfg=cfg)
        for triplet in (slice(0, None, 2), slice(1, None, 2)):
            peaks, n, tail = joint_triplet(maps[triplet], geos[triplet], grid, cfg)
            tails, trials = tails + tail, trials + n
            maxima.append(peaks["stat"].max() if len(peaks) else -np.inf)
    expected = trials * ndtr(-TAIL_X)
    for x, got, exp in zip(TAIL_X, tails, expected):
        if exp >= 30:  # enough events for a ratio: within 35 % of the normal tail (trials are correlated)
            assert 0.65 < got / exp < 1.35, (x, got, exp)
    # the Bonferroni bound holds for the maxima: none of six null triplets would pass at alpha
    per = trials / len(maxima)
    assert all(min(1.0, per * ndtr(-m)) > CFG.alpha for m in maxima)


def test_a_line_in_the_off_scans_too_is_vetoed():
    rng = np.random.default_rng(3)
    maps, geos, grid = _cadence(rng, 30.0, 30.0, -1.6)  # drifting RFI: in all six scans
    peaks, n_trials, _ = joint_triplet(maps[0::2], geos[0::2], grid, CFG)
    best = peaks.loc[peaks["stat"].idxmax()].to_dict()
    chan, _ = _expected(geos[2], -1.6)
    assert abs(best["ref_chan"] - chan) <= 2
    offs = off_values(maps[1::2], geos[1::2], geos[2], grid, best, CFG)
    assert min(offs) > CFG.veto_z  # every OFF scan shows it at the carried position
    decided = decide_peaks(pd.DataFrame([best]).assign(off_max=max(offs)), n_trials, CFG)
    assert decided["verdict"].iloc[0] == "in_off"
    # and an ON-only line of the same strength is not vetoed: the OFF scans are quiet there
    rng = np.random.default_rng(3)
    maps, geos, grid = _cadence(rng, 30.0, 0.0, -1.6)
    peaks, n_trials, _ = joint_triplet(maps[0::2], geos[0::2], grid, CFG)
    best = peaks.loc[peaks["stat"].idxmax()].to_dict()
    assert max(off_values(maps[1::2], geos[1::2], geos[2], grid, best, CFG)) < CFG.veto_z


def test_chirp_coverage():
    """A line whose drift changes by 3e-4 Hz/s^2 (~59 Hz off a straight line over +-625 s) is found with its chirp."""
    chirp = 3e-4
    rng = np.random.default_rng(5)
    maps, geos, grid = _cadence(rng, 25.0, 0.0, 1.8, chirp)
    drifts, chirps = trial_grid(CFG, geos[0::2])
    assert chirps.max() >= chirp and chirps.min() <= -chirp and np.all(np.abs(drifts) >= CFG.min_drift_hz_s)
    peaks, _, _ = joint_triplet(maps[0::2], geos[0::2], grid, CFG)
    best = peaks.loc[peaks["stat"].idxmax()]
    chan, drift = _expected(geos[2], 1.8, chirp)
    assert abs(best["ref_chan"] - chan) <= 2 and abs(best["drift_hz_s"] - drift) < 0.05
    assert best["chirp_hz_s2"] > 1.5e-4
    # straight lines only: the carried positions miss the outer scans' track, the statistic drops
    straight = dataclasses.replace(CFG, chirp_hz_s2=0.0)
    p0, _, _ = joint_triplet(maps[0::2], geos[0::2], grid, straight)
    near = p0[np.abs(p0["ref_chan"] - chan) <= 3]
    assert near.empty or near["stat"].max() < best["stat"] - 1.0


def test_events_carry_the_line_to_each_on_scan():
    rng = np.random.default_rng(7)
    maps, geos, grid = _cadence(rng, 40.0, 0.0, 2.0)
    peaks, n_trials, _ = joint_triplet(maps[0::2], geos[0::2], grid, CFG)
    best = peaks.loc[[peaks["stat"].idxmax()]]
    files = [{"file_id": s, "source_file": f"f{s}.fil", "source_name": "X", "tstart_mjd": 60000 + TIMES[s] / 86400,
              "tstop_mjd": 60000 + (TIMES[s] + T * TSAMP) / 86400, "n_int": T} for s in (0, 2, 4)]
    best = best.assign(cadence_id="c", scans=[[0, 2, 4]], files=[files], geometry=[[vars(g) for g in geos[0::2]]],
                       off_max=-np.inf, n_off_checked=3)
    ev = joint_events(decide_peaks(best, n_trials, CFG))
    assert list(ev["scan_index"]) == [0, 2, 4] and (ev["method"] == "cadence_joint").all()
    for row, g in zip(ev.itertuples(), geos[0::2]):
        f_true = (F_START + 2.0 * g.t_mid_s) / 1e6  # the line's frequency at the scan's middle (MHz)
        assert row.freq_min_mhz <= f_true <= row.freq_max_mhz
        assert abs(row.peak_freq_mhz - f_true) < 2 * B * FOFF / 1e6
        assert row.drift_hz_s == pytest.approx(2.0, abs=0.1)  # the chirp trades with the drift by a step or two


def _results(stat_line: float, off_max: float, n_trials: int = 10**7) -> list[dict]:
    """One cadence's search result with one peak (fabricated geometry: 3 ON scans 620 s apart, 4-channel bins)."""
    geos = [{"t_mid_s": 146.0 + k * 620.0, "f0_hz": 1.1e9, "bin_hz": 4 * FOFF, "tsamp_s": TSAMP} for k in range(3)]
    files = [{"file_id": s, "source_file": f"f{s}.fil", "source_name": "X", "tstart_mjd": 60000 + s * 310 / 86400,
              "tstop_mjd": 60000 + (s * 310 + 292) / 86400, "n_int": T} for s in (0, 2, 4)]
    peak = {"ref_chan": 1000, "stat": stat_line, "drift_hz_s": 2.0, "chirp_hz_s2": 0.0, "components": [4.0, 4.0, 4.0],
            "chans": [889, 1000, 1111], "drift_idx": [40, 40, 40], "off_values": [off_max] * 3, "off_max": off_max,
            "n_off_checked": 3, "cadence_id": "c", "scans": [0, 2, 4], "files": files, "geometry": geos}
    none = np.zeros(TAIL_X.size, np.int64)
    return [{"cadence_id": "c", "peaks": pd.DataFrame([peak]), "n_trials": n_trials, "tail": none,
             "null_peaks": pd.DataFrame(), "n_trials_null": n_trials, "tail_null": none}]


def test_finish_joint_reports_vetoes_and_merges():
    import json

    from seti_auditor.cadence_search import LineSearchConfig
    from seti_auditor.cadence_test import sort_events
    from seti_auditor.score_archive import ScoreJob, finish_joint

    job = ScoreJob(lines=LineSearchConfig(joint=dataclasses.replace(CFG, enabled=True)))
    table = pd.DataFrame({"tile": [7], "file_id": [0], "tstart_mjd": [60000.0], "freq_min_mhz": [1100.0],
                          "freq_max_mhz": [1100.02]})
    empty_c, empty_r = sort_events(pd.DataFrame(), False), sort_events(pd.DataFrame(), True)
    # significant, quiet OFF scans: three candidate rows, one per ON scan, with the counts in plain JSON
    c, r, _, counts = finish_joint(_results(8.0, 1.0), table, empty_c, empty_r, empty_r, job)
    assert len(c) == 3 and (c["method"] == "cadence_joint").all() and sorted(c["scan_index"]) == [0, 2, 4]
    assert c.loc[c["file_id"] == 0, "tile_first"].iloc[0] == 7  # the tile its band lies in
    assert counts["pass"] == 1 and counts["added"] == 3 and r.empty
    json.dumps(counts)
    # an OFF scan shows it: RFI rows, no candidate
    c, r, _, counts = finish_joint(_results(8.0, 6.0), table, empty_c, empty_r, empty_r, job)
    assert c.empty and len(r) == 3 and (r["reason"] == "joint_in_off").all()
    # not significant over the run's trials: nothing
    c, r, _, counts = finish_joint(_results(5.0, 1.0), table, empty_c, empty_r, empty_r, job)
    assert c.empty and r.empty and counts["not_significant"] == 1
    # a row on a tile-level RFI event of its scan: the whole line goes to RFI
    ev, _ = finish_joint(_results(8.0, 1.0), table, empty_c, empty_r, empty_r, job)[:2]
    rfi = ev.iloc[[1]].assign(reason="in_off", cadence_test="fail")
    c, r, _, counts = finish_joint(_results(8.0, 1.0), table, empty_c, rfi, empty_r, job)
    assert c.empty and counts["on_rfi"] == 1 and (r["reason"] == "joint_on_rfi").sum() == 3
    # rows already reported as candidates are not repeated
    c, r, _, counts = finish_joint(_results(8.0, 1.0), table, ev.iloc[[0]], empty_r, empty_r, job)
    assert len(c) == 3 and counts["added"] == 2
