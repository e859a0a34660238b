"""Matching catalogs and tiles with the ground truth (seti_auditor.truthmatch), on hand-made truths."""

import numpy as np
import pandas as pd
import pytest

from seti_auditor import truthmatch

A, B = "a.fil", "b.fil"  # two scans: A is ON, B is OFF


def _scan(i, file, lo, hi, present=True, **extra):
    return {"scan_index": i, "file": file, "present": present, "freq_min_mhz": lo, "freq_max_mhz": hi, **extra}


TRUTH = {
    "signals": [
        {"id": "s1", "snr": 30.0, "kind": "linear", "drift_hz_s": 0.3,
         "scans": [_scan(0, A, 100.000, 100.001), _scan(1, B, 100.001, 100.002, present=False)]},
        {"id": "s2", "snr": 10.0, "kind": "pulsed", "drift_hz_s": -2.0,
         "scans": [_scan(0, A, 200.000, 200.001), _scan(1, B, 200.002, 200.003, present=False)]},
    ],
    "rfi": [
        {"id": "r1", "kind": "zero_drift", "snr": 50.0, "drift_hz_s": 0.0,
         "scans": [_scan(0, A, 150.0, 150.0001), _scan(1, B, 150.0, 150.0001)]},
        {"id": "i1", "kind": "impulse", "level": 0.5,
         "scans": [_scan(0, A, 120.0, 180.0, int_start=3, int_stop=5)]},
    ],
}


def _cands(rows):
    cols = ["source_file", "freq_min_mhz", "freq_max_mhz", "score"]
    return pd.DataFrame(rows, columns=cols)


def _cat(cands):
    empty = pd.DataFrame(columns=["source_file", "freq_min_mhz", "freq_max_mhz", "reason", "n_on_scans", "n_tiles",
                                  "score"])
    return {"candidates": cands, "rfi": empty, "rejected": empty}


def test_overlap_is_symmetric_in_the_order_of_the_ends_and_honours_the_tolerance():
    assert truthmatch.overlap(1.0, 2.0, 2.0, 3.0) and truthmatch.overlap(2.0, 1.0, 3.0, 2.0)
    assert not truthmatch.overlap(1.0, 2.0, 2.1, 3.0)
    assert truthmatch.overlap(1.0, 2.0, 2.1, 3.0, tol=0.1 + 1e-12)
    assert list(truthmatch.overlap(np.array([0.0, 5.0]), np.array([1.0, 6.0]), 0.5, 0.6)) == [True, False]


def test_candidates_are_labelled_signal_rfi_or_noise():
    cands = _cands([(A, 100.0005, 100.0006, 9.0),   # on s1 in its ON scan
                    (B, 100.0015, 100.0016, 8.0),   # where s1 would be in the OFF scan: not present there
                    (A, 150.00005, 150.00006, 7.0),  # on the zero-drift line, and inside the impulse band
                    (A, 300.0, 300.001, 6.0)])      # nothing there
    labels = truthmatch.candidate_labels(TRUTH, cands, tol_mhz=0.0)
    assert list(labels) == ["signal", "noise", "rfi", "noise"]
    assert list(truthmatch.candidate_labels(TRUTH, cands.iloc[:0], 0.0)) == []


def test_evaluate_counts_recall_false_candidates_and_leaks():
    cands = _cands([(A, 100.0005, 100.0006, 9.0), (A, 150.00005, 150.00006, 7.0), (A, 300.0, 300.001, 6.0)])
    ev = truthmatch.evaluate(TRUTH, _cat(cands), None, tol_mhz=0.0, total_bytes=2_000_000_000)
    hits = {s["id"]: (s["hits"], s["n_on"]) for s in ev["signals"]}
    assert hits == {"s1": (1, 1), "s2": (0, 1)}
    assert ev["n_candidates"] == 3 and ev["n_true_candidates"] == 1 and ev["n_false"] == 2
    assert ev["false_per_gb"] == pytest.approx(1.0)
    assert sorted(r["id"] for r in ev["rfi_leaked"]) == ["i1", "r1"]
    summary = truthmatch.summarise(ev)
    assert summary["overall"] == {"n": 2, "recall_scan": 0.5, "recall_any": 0.5}
    assert summary["by"]["snr"]["30"]["recall_scan"] == 1.0 and summary["by"]["snr"]["10"]["recall_scan"] == 0.0
    assert summary["by"]["drift"] == {"slow": {"n": 1, "recall_scan": 1.0, "recall_any": 1.0},
                                      "fast": {"n": 1, "recall_scan": 0.0, "recall_any": 0.0}}
    assert summary["targets"]["rfi_leaked"] == [2, False]


def test_the_tolerance_widens_a_match():
    cands = _cands([(A, 200.0015, 200.0016, 5.0)])  # 0.5 kHz above s2's band
    assert truthmatch.evaluate(TRUTH, _cat(cands), None, 0.0, 10**9)["n_false"] == 1
    assert truthmatch.evaluate(TRUTH, _cat(cands), None, 1e-3, 10**9)["n_false"] == 0


def test_tile_labels_follow_precedence_and_impulse_times():
    files = [A, A, A, B, A]
    lo = [100.0, 150.0, 130.0, 100.0, 300.0]
    hi = [100.002, 150.001, 131.0, 100.002, 301.0]
    assert list(truthmatch.tile_labels(TRUTH, files, lo, hi)) == ["signal", "rfi", "impulse", "noise", "noise"]
    # 16-integration tiles starting at 0 and 16: the impulse (integrations 3-4) is only in the first
    two = truthmatch.tile_labels(TRUTH, [A, A], [130.0, 130.0], [131.0, 131.0], time_start=[0, 16], tile_time=16)
    assert list(two) == ["impulse", "noise"]


def test_ceiling_is_phi_of_rho_minus_the_threshold():
    from scipy.stats import norm

    clair = [{"id": "a", "snr": 12.0, "kind": "linear", "drift": "fast", "rho_scans": [3.0, 3.0, 3.0],
              "rho_joint": 3.0 * np.sqrt(3.0)},
             {"id": "b", "snr": 25.0, "kind": "pulsed", "drift": "slow", "rho_scans": [20.0, 0.5, 1.0],
              "rho_joint": np.sqrt(401.25)}]
    u = 6.0
    c = truthmatch.ceiling(clair, u)
    p_a = norm.cdf(3.0 * np.sqrt(3.0) - u)  # jointly only: one scan alone is hopeless
    assert c["by"]["snr"]["12"]["recall_scan"] == pytest.approx(p_a, abs=1e-3)
    assert c["recall_snr_12_16"] == pytest.approx(p_a, abs=1e-3)
    assert c["recall_snr_ge_25"] == pytest.approx(1.0, abs=1e-3)  # rho_joint 20: every ON scan
    assert c["overall"]["recall_scan"] == pytest.approx((3 * p_a + 3) / 6, abs=1e-3)
    # a stricter threshold never raises the ceiling
    assert truthmatch.ceiling(clair, u + 1)["recall_snr_12_16"] < c["recall_snr_12_16"]
    # the slow search's own threshold applies to the slow signals only
    slow = dict(clair[0], id="c", drift="slow")
    two = truthmatch.ceiling([clair[0], slow], u, slow_threshold=u + 1)
    assert two["by"]["drift"]["fast"]["recall_scan"] == pytest.approx(p_a, abs=1e-3)
    assert two["by"]["drift"]["slow"]["recall_scan"] == pytest.approx(norm.cdf(3.0 * np.sqrt(3.0) - u - 1), abs=1e-3)


def test_clairvoyant_snr_of_a_written_archive(tmp_path):
    """Per signal and ON scan, from truth.json alone; fast lines lose sqrt(channels crossed), slow ones little."""
    import json

    from seti_auditor.archive import write_synthetic_archive
    from seti_auditor.synth import EtiGrid, ObsConfig, RfiConfig, SynthConfig, signal_grid

    obs = ObsConfig(nfpc=4096, n_coarse=2)
    grid = EtiGrid(snrs=(20.0,), kinds=("linear", "pulsed"), drifts_hz_s=(0.2, 2.0))
    config = SynthConfig(obs=obs, eti=signal_grid(grid, 1), rfi=RfiConfig.none())
    truth = json.loads(write_synthetic_archive(tmp_path, cadences=1, seed=3, config=config).read_text())
    clair = {c["id"]: c for c in truthmatch.clairvoyant(truth)}
    track = {c["id"]: c for c in truthmatch.clairvoyant(truth, pulses_known=False)}
    assert len(clair) == 4
    smear = 2.0 * obs.tsamp_s / abs(obs.foff_hz)
    for sig in truth["signals"]:
        c, t = clair[sig["id"]], track[sig["id"]]
        assert len(c["rho_scans"]) == 3
        assert c["rho_joint"] == pytest.approx(np.sqrt(np.sum(np.square(c["rho_scans"]))))
        if c["drift"] == "fast":
            assert all(0.85 * 20 / np.sqrt(smear) < r <= 20 / np.sqrt(smear) + 1e-6 for r in t["rho_scans"])
        else:
            assert all(10.0 < r <= 20.0 + 1e-6 for r in t["rho_scans"])
        if sig["kind"] == "pulsed":  # known pulse timing is worth about sqrt(1 / duty)
            assert c["rho_joint"] > 1.2 * t["rho_joint"]
        else:
            assert c["rho_joint"] == pytest.approx(t["rho_joint"])
