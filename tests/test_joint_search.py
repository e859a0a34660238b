"""The cadence-coherent joint search for fast lines (seti_auditor.joint_search): small seeded synthetic scans."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
from scipy.special import ndtr, ndtri

from seti_auditor.joint_search import (SLOW_JOINT, TAIL_X, JointSearchConfig, ScanGeometry, bin_rows, decide_peaks,
                                       joint_events, joint_triplet, off_values, scan_drifts, scan_map, trial_grid)

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


def test_the_slow_search_finds_a_weak_slow_line_at_full_resolution():
    """SLOW_JOINT: no binning, drifts from zero (once) to 0.6 Hz/s; an SNR-8 line at 0.2 Hz/s (1.3 channels per
    integration) found at its channel and drift, and passing for this cadence, far above the OFF triplet."""
    rng = np.random.default_rng(5)
    cfg = SLOW_JOINT
    grid = scan_drifts(cfg, TSAMP, FOFF, T)
    assert np.sum(grid == 0) == 1 and np.all(np.diff(grid) > 0) and grid.max() * FOFF / TSAMP > 0.6
    maps, geos = [], []
    for s in range(6):
        z = _scan(rng, TIMES[s], 8.0 if s % 2 == 0 else 0.0, 0.2)
        maps.append(scan_map(bin_rows(z, 1), grid, cfg.min_track_frac))
        geos.append(ScanGeometry(TIMES[s] + T * TSAMP / 2, 0.0, FOFF, TSAMP))
    drifts, _ = trial_grid(cfg, geos[0::2])
    assert np.sum(drifts == 0) == 1 and np.all(np.diff(drifts) > 0)
    peaks, n_trials, _ = joint_triplet(maps[0::2], geos[0::2], grid, cfg)
    best = peaks.loc[peaks["stat"].idxmax()]
    chan, drift = _expected(geos[2], 0.2)
    assert abs(best["ref_chan"] - chan) <= 2
    assert abs(best["drift_hz_s"] - drift) < 0.03
    null, _, _ = joint_triplet(maps[1::2], geos[1::2], grid, cfg)
    assert best["stat"] > null["stat"].max() + 2.0
    assert decide_peaks(best.to_frame().T.assign(off_max=-np.inf), n_trials, cfg)["verdict"].iloc[0] == "pass"


def test_binning_precomputed_normal_scores_changes_nothing():
    """joint_lines computes a scan's normal scores once for the fast and the slow binning (scored=True)."""
    from seti_auditor.scoring import normal_scores

    rng = np.random.default_rng(2)
    z = rng.standard_normal((T, 1024)).astype(np.float32) ** 3  # skewed, as residuals are
    z[3, 100:200] = np.nan  # an absent tile
    for fb in (1, 2, 4):
        assert np.array_equal(bin_rows(normal_scores(z), fb, scored=True), bin_rows(z, fb), equal_nan=True)


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


def _results(stat_line: float, off_max: float, n_trials: int = 10**7, nbytes: int = 0) -> list[dict]:
    """One cadence's search result with one peak (fabricated geometry: 3 ON scans 620 s apart, 4-channel bins)."""
    geos = [{"t_mid_s": 146.0 + k * 620.0, "f0_hz": 1.1e9, "bin_hz": 4 * FOFF, "tsamp_s": TSAMP} for k in range(3)]
    files = [{"file_id": s, "source_file": f"f{s}.fil", "source_name": "X", "tstart_mjd": 60000 + s * 310 / 86400,
              "tstop_mjd": 60000 + (s * 310 + 292) / 86400, "n_int": T} for s in (0, 2, 4)]
    peak = {"ref_chan": 1000, "stat": stat_line, "drift_hz_s": 2.0, "chirp_hz_s2": 0.0, "components": [4.0, 4.0, 4.0],
            "chans": [889, 1000, 1111], "drift_idx": [40, 40, 40], "off_values": [off_max] * 3, "off_max": off_max,
            "n_off_checked": 3, "cadence_id": "c", "scans": [0, 2, 4], "files": files, "geometry": geos}
    none = np.zeros(TAIL_X.size, np.int64)
    return [{"cadence_id": "c", "peaks": pd.DataFrame([peak]), "n_trials": n_trials, "tail": none,
             "null_peaks": pd.DataFrame(), "n_trials_null": n_trials, "tail_null": none, "bytes": nbytes}]


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


def test_the_runs_level_grows_with_its_bytes_so_the_threshold_does_not():
    """alpha per run for small runs, alpha_per_gb per GB for large ones: the same line passes in a big run."""
    from seti_auditor.cadence_search import LineSearchConfig
    from seti_auditor.cadence_test import sort_events
    from seti_auditor.joint_search import run_alpha
    from seti_auditor.score_archive import ScoreJob, finish_joint

    cfg = dataclasses.replace(CFG, alpha=0.01, alpha_per_gb=0.05)
    assert run_alpha(cfg, 0.0) == run_alpha(cfg, 0.1) == 0.01  # below 0.2 GB: per run
    assert run_alpha(cfg, 2.0) == pytest.approx(0.1) and run_alpha(cfg, 1e9) == 1.0
    job = ScoreJob(lines=LineSearchConfig(joint=cfg))
    table = pd.DataFrame({"tile": [7], "file_id": [0], "tstart_mjd": [60000.0], "freq_min_mhz": [1100.0],
                          "freq_max_mhz": [1100.02]})
    empty_c, empty_r = sort_events(pd.DataFrame(), False), sort_events(pd.DataFrame(), True)
    stat = 5.9  # 10**7 trials: Bonferroni p = 0.018
    c, _, _, small = finish_joint(_results(stat, 1.0), table, empty_c, empty_r, empty_r, job)
    assert c.empty and small["not_significant"] == 1 and small["alpha"] == 0.01
    c, _, _, big = finish_joint(_results(stat, 1.0, nbytes=2 * 10**9), table, empty_c, empty_r, empty_r, job)
    assert len(c) == 3 and big["pass"] == 1 and big["alpha"] == pytest.approx(0.1) and big["gb"] == pytest.approx(2.0)
    assert big["threshold"] < stat < small["threshold"]
    # ten times the data with ten times the trials: the same threshold
    _, _, _, ten = finish_joint(_results(stat, 1.0, 10**8, 2 * 10**10), table, empty_c, empty_r, empty_r, job)
    assert ten["threshold"] == pytest.approx(big["threshold"], abs=1e-9)


# --------------------------------------------------------------------------- the fast per-scan code against the
# per-channel implementation it replaced (kept here verbatim as the reference): the same numbers, bit for bit


def _ref_scan_map(zb_TxN: np.ndarray, drifts: np.ndarray, min_track_frac: float = 0.5) -> np.ndarray:
    from seti_auditor.joint_search import smear_width

    z = np.asarray(zb_TxN, np.float64)
    t, n = z.shape
    inside = np.isfinite(z)
    zero = np.zeros((t, 1))
    csum = np.concatenate([zero, np.cumsum(np.where(inside, z, 0.0), axis=1)], axis=1).ravel()
    cnt = np.concatenate([zero, np.cumsum(inside, axis=1)], axis=1).ravel()
    dt = np.arange(t)[:, None] - (t - 1) / 2.0
    row = (np.arange(t) * (n + 1))[:, None]
    chans = np.arange(n, dtype=np.float64)[None, :]
    out = np.full((len(drifts), n), np.nan, np.float32)
    for i, d in enumerate(drifts):
        w = smear_width(d)
        lo = np.rint(chans + d * dt - (w - 1) / 2.0).astype(np.int64)
        hi = np.clip(lo + w, 0, n) + row
        lo = np.clip(lo, 0, n) + row
        total = (csum.take(hi) - csum.take(lo)).sum(axis=0)
        pixels = (cnt.take(hi) - cnt.take(lo)).sum(axis=0)
        stat = np.where(pixels >= min_track_frac * t * w, total / np.sqrt(np.maximum(pixels, 1.0)), np.nan)
        ok = np.isfinite(stat)
        if ok.sum() < 32:
            continue
        loc = np.median(stat[ok])
        scale = max(1.4826 * float(np.median(np.abs(stat[ok] - loc))), 1e-6)
        out[i] = (stat - loc) / scale
    return out


def _ref_mask_strong(m_DxN, drifts, n_int, strong_z, margin=2):
    from seti_auditor.joint_search import track_extent

    n = m_DxN.shape[1]
    strong = np.nan_to_num(m_DxN, nan=-np.inf) > strong_z
    if not strong.any():
        return m_DxN
    marked = np.zeros(n + 1, np.int64)
    di, ci = np.nonzero(strong)
    ext = np.ceil(track_extent(drifts[di], n_int)).astype(np.int64) + margin
    np.add.at(marked, np.clip(ci - ext, 0, n), 1)
    np.add.at(marked, np.clip(ci + ext + 1, 0, n), -1)
    covered = np.concatenate([[0], np.cumsum(marked[:n]) > 0]).cumsum()
    out = m_DxN.copy()
    chans = np.arange(n)
    for i, d in enumerate(drifts):
        e = int(math.ceil(track_extent(d, n_int)))
        lo, hi = np.clip(chans - e, 0, n), np.clip(chans + e + 1, 0, n)
        out[i, covered[hi] - covered[lo] > 0] = np.nan
    return out


def _ref_gather(m_DxN, idx, shift, n_ref):
    out = np.full(n_ref, np.nan, np.float32)
    if idx < 0:
        return out
    n = m_DxN.shape[1]
    a, b = max(0, -shift), min(n_ref, n - shift)
    if b > a:
        out[a:b] = m_DxN[idx, a + shift : b + shift]
    return out


def _ref_joint_triplet(maps, geo, scan_drift_grid, cfg):
    from seti_auditor.joint_search import PEAK_COLUMNS, _carry, _local_maxima

    ref = geo[len(geo) // 2]
    n_ref = maps[len(geo) // 2].shape[1]
    drifts, chirps = trial_grid(cfg, geo)
    best = np.full(n_ref, -np.inf, np.float32)
    best_k = np.zeros(n_ref, np.int64)
    n_trials = 0
    tail = np.zeros(TAIL_X.size, np.int64)
    combos = [(d, c) for d in drifts for c in chirps]
    carried = [_carry(g, ref, np.array([d for d, _ in combos]), np.array([c for _, c in combos]), scan_drift_grid)
               for g in geo]
    norm = 1.0 / math.sqrt(len(geo))
    for k in range(len(combos)):
        parts = [np.minimum(_ref_gather(m, int(idx[k]), int(sh[k]), n_ref), cfg.cap)
                 for m, (sh, idx) in zip(maps, carried)]
        j = np.sum(parts, axis=0) * norm
        ok = np.isfinite(j)
        n_trials += int(ok.sum())
        big = j[ok & (j > TAIL_X[0])]
        if big.size:
            tail += (big[:, None] > TAIL_X[None, :]).sum(axis=0)
        better = ok & (np.min(parts, axis=0) >= cfg.min_component) & (j > best)
        best[better] = j[better]
        best_k[better] = k
    peaks = _local_maxima(best, cfg.peak_half_chan, cfg.prethreshold)
    rows = []
    for c in peaks:
        k = int(best_k[c])
        chans = [int(c + sh[k]) for sh, _ in carried]
        idxs = [int(idx[k]) for _, idx in carried]
        comps = [float(m[i, ch]) for m, ch, i in zip(maps, chans, idxs)]
        rows.append({"ref_chan": int(c), "stat": float(best[c]), "drift_hz_s": float(combos[k][0]),
                     "chirp_hz_s2": float(combos[k][1]), "components": comps, "chans": chans, "drift_idx": idxs})
    return pd.DataFrame(rows, columns=list(PEAK_COLUMNS)), n_trials, tail


def _holes(rng, z: np.ndarray) -> np.ndarray:
    """``z`` with absent tiles (NaN columns), a scan edge, scattered NaN pixels, infinities and clipped (tied)
    values."""
    z = np.clip(np.asarray(z, np.float64).copy(), -3.0, 3.0)
    n = z.shape[1]
    for _ in range(3):
        a = int(rng.integers(0, n - 64))
        z[:, a : a + int(rng.integers(8, 64))] = np.nan
    z[:, n - int(rng.integers(1, 40)) :] = np.nan
    z[rng.random(z.shape) < 0.002] = np.nan
    z[rng.random(z.shape) < 0.0005] = np.inf
    return z


def _ref_normal_scores(z_TxL):
    """scoring.normal_scores as it was: scipy's average ranks, then Phi^-1(rank / (n + 1))."""
    from scipy.stats import rankdata

    z = np.asarray(z_TxL, np.float64)
    ok = np.isfinite(z)
    ranks = rankdata(np.where(ok, z, np.nan), axis=1, nan_policy="omit")
    n = ok.sum(axis=1, keepdims=True)
    return np.where(ok, ndtri(ranks / (n + 1.0)), np.nan)


def test_normal_scores_equal_scipys_ranks_bit_for_bit():
    from seti_auditor.scoring import normal_scores

    rng = np.random.default_rng(21)
    for trial in range(40):
        t, n = int(rng.integers(1, 9)), int(rng.integers(1, 400))
        z = np.round(rng.standard_normal((t, n)), int(rng.integers(0, 3)))  # rounded: many ties
        z[rng.random((t, n)) < 0.15] = np.nan
        z[rng.random((t, n)) < 0.03] = rng.choice([np.inf, -np.inf])
        if trial % 4 == 0:
            z[0] = np.nan  # a row with nothing finite
        for x in (z, z.astype(np.float32)):  # float32 is sorted as float32
            assert np.array_equal(normal_scores(x), _ref_normal_scores(x), equal_nan=True), trial
    z = _holes(rng, rng.standard_normal((T, L)))  # a scan's size, with clipped values, holes and infinities
    for x in (z, z.astype(np.float32)):
        assert np.array_equal(normal_scores(x), _ref_normal_scores(x), equal_nan=True)


@pytest.mark.parametrize("n_int, fast_bin", [(16, 4), (16, 2), (7, 4), (10, 1)])
def test_scan_map_equals_the_per_channel_formula(n_int, fast_bin):
    """The slice-based map is the per-channel one bit for bit, ties included (half-integer offsets round to
    even per channel), on data with holes, edges and a line; and tied integrations do occur on these grids."""
    from seti_auditor.joint_search import _track_offsets

    rng = np.random.default_rng(100 + n_int + fast_bin)
    cfg = dataclasses.replace(CFG, fast_bin=fast_bin)
    grid = scan_drifts(cfg, TSAMP, FOFF * fast_bin, n_int)
    z = rng.standard_normal((n_int, 2048 * fast_bin))
    z[:, 3000:3040] += np.linspace(0, 3, n_int)[:, None]  # something non-white
    zb = bin_rows(_holes(rng, z), fast_bin)
    new, ref = scan_map(zb, grid, 0.5), _ref_scan_map(zb, grid, 0.5)
    assert np.isfinite(new).mean() > 0.5
    assert np.array_equal(new, ref, equal_nan=True)
    if n_int == 16:
        assert sum(_track_offsets(float(d), n_int)[3].any() for d in grid) > len(grid) // 4
    # full coverage (no absent pixel), a strict track fraction, and a scan too short for some drifts
    zb = bin_rows(rng.standard_normal((n_int, 300 * fast_bin)), fast_bin)
    for frac in (0.5, 1.0):
        assert np.array_equal(scan_map(zb, grid, frac), _ref_scan_map(zb, grid, frac), equal_nan=True)


def test_mask_strong_equals_the_reference():
    from seti_auditor.joint_search import mask_strong

    rng = np.random.default_rng(8)
    grid = scan_drifts(CFG, TSAMP, FOFF * B, T)
    m = rng.standard_normal((grid.size, 3000)).astype(np.float32)
    m[rng.random(m.shape) < 0.01] = np.nan
    assert mask_strong(m, grid, T, CFG.strong_z) is m  # nothing strong: the map itself
    m[5, 10], m[40, 1500], m[grid.size - 1, 2995], m[20, 700] = 9.0, 12.0, 8.0, np.inf
    new = mask_strong(m, grid, T, CFG.strong_z)
    assert np.array_equal(new, _ref_mask_strong(m, grid, T, CFG.strong_z), equal_nan=True)
    assert np.isnan(new).mean() > np.isnan(m).mean() and not np.shares_memory(new, m)


def test_joint_triplet_equals_the_reference():
    """Same peaks (statistic, drift, chirp, components), trial count and tail as the per-combo implementation,
    with lines, holes (masked strong lines, absent channels), scans of different widths and chirps."""
    from seti_auditor.joint_search import mask_strong

    for seed, snr_on, drift, chirp in ((3, 16.0, 2.0, 0.0), (5, 25.0, 1.8, 3e-4), (9, 60.0, -1.6, -2e-4)):
        rng = np.random.default_rng(seed)
        maps, geos, grid = _cadence(rng, snr_on, 0.0, drift, chirp)
        maps = [mask_strong(m, grid, T, CFG.strong_z) for m in maps]
        maps[0] = maps[0][:, :-37]  # a narrower scan
        maps[2][:, 300:340] = np.nan
        for cfg in (CFG, dataclasses.replace(CFG, chirp_hz_s2=0.0, min_component=-np.inf, cap=3.0)):
            for triplet in (slice(0, None, 2), slice(1, None, 2)):
                new = joint_triplet(maps[triplet], geos[triplet], grid, cfg)
                ref = _ref_joint_triplet(maps[triplet], geos[triplet], grid, cfg)
                assert new[1] == ref[1] and np.array_equal(new[2], ref[2])
                pd.testing.assert_frame_equal(new[0], ref[0])
        assert len(joint_triplet(maps[0::2], geos[0::2], grid, CFG)[0]) > 0
        for sub in (slice(2, 3), slice(0, 3, 2)):  # one scan, two scans: the same sums
            new = joint_triplet(maps[sub], geos[sub], grid, CFG)
            ref = _ref_joint_triplet(maps[sub], geos[sub], grid, CFG)
            assert new[1] == ref[1] and np.array_equal(new[2], ref[2])
            pd.testing.assert_frame_equal(new[0], ref[0])


def test_median_selection_equals_numpys():
    """scan_map's median (middle values selected between a sample's bounds) is np.median's, also when the
    sample misleads it (the whole array is then partitioned) and with ties, skew and sorted input."""
    from seti_auditor.joint_search import _median

    rng = np.random.default_rng(4)
    for trial in range(300):
        n = int(rng.choice([1, 2, 33, 4095, 4096, 4097, 16384, 20001]))
        v = rng.standard_normal(n)
        v = [v, np.round(v, 1), np.abs(v), np.sort(v), np.where(np.arange(n) <= n // 2, 0.7, v)][trial % 5]
        assert _median(v.copy()) == float(np.median(v)), (trial, n)
    v = rng.standard_normal(16384)
    v[:: 16384 // 512] = 1e9  # every sampled value: bounds far above the middle
    assert _median(v.copy()) == float(np.median(v))


def test_a_cadence_too_wide_for_memory_is_skipped_and_counted(caplog):
    """cadence_bytes grows with the channels; a cadence over max_cadence_gb is counted as skipped (not searched,
    no trials, no bytes towards the level) and logged, and the other cadences are decided as before."""
    from seti_auditor.cadence_search import LineSearchConfig
    from seti_auditor.cadence_test import sort_events
    from seti_auditor.joint_search import SLOW_JOINT, cadence_bytes
    from seti_auditor.score_archive import ScoreJob, finish_joint

    both = (CFG, SLOW_JOINT)
    bench = cadence_bytes(both, T, 65536, TSAMP, FOFF)  # the detection benchmark's files: ~0.5 GB
    assert 0.3e9 < bench < 1e9
    assert cadence_bytes(both, T, 2 * 65536, TSAMP, FOFF) == pytest.approx(2 * bench, rel=0.01)
    assert cadence_bytes(both, T, 64 * 2**20, TSAMP, FOFF) > CFG.max_cadence_gb * 1e9  # a full-band BL file
    assert cadence_bytes((CFG,), T, 65536, TSAMP, FOFF) < bench
    job = ScoreJob(lines=LineSearchConfig(joint=CFG))
    table = pd.DataFrame({"tile": [7], "file_id": [0], "tstart_mjd": [60000.0], "freq_min_mhz": [1100.0],
                          "freq_max_mhz": [1100.02]})
    empty_c, empty_r = sort_events(pd.DataFrame(), False), sort_events(pd.DataFrame(), True)
    none = np.zeros(TAIL_X.size, np.int64)
    wide = {"cadence_id": "w", "peaks": pd.DataFrame(), "n_trials": 0, "tail": none, "null_peaks": pd.DataFrame(),
            "n_trials_null": 0, "tail_null": none, "bytes": 0, "skipped": "900.0 GB for 67108864 channels per scan"}
    alone = finish_joint(_results(8.0, 1.0), table, empty_c, empty_r, empty_r, job)
    with caplog.at_level("WARNING", logger="seti_auditor.score_archive"):
        c, _, _, counts = finish_joint(_results(8.0, 1.0) + [wide], table, empty_c, empty_r, empty_r, job)
    assert counts["skipped"] == 1 and counts["skipped_cadences"] == ["w"] and counts["cadences"] == 1
    assert counts["threshold"] == alone[3]["threshold"] and len(c) == len(alone[0]) == 3
    assert "1 cadence(s) not searched" in caplog.text and "900.0 GB" in caplog.text
