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
