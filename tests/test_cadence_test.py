"""Tests of event building, RFI rules and the ON/OFF cadence test on small tile tables."""

import numpy as np
import pandas as pd
import pytest

from seti_auditor.cadence_test import EVENT_COLUMNS, CadenceConfig, cadence_test

N_FREQ_TILES = 8
TILE_MHZ = 0.001  # 1 kHz tiles
F0_MHZ = 1400.0
SCAN_S = 300.0
MJD0 = 60000.0


def _file_rows(file_id, scan, cadence_id, flagged_tiles, drift=0.0, tile_base=0, on=None):
    """One file (one time block) of N_FREQ_TILES tiles; ``flagged_tiles``: tile positions."""
    t0 = MJD0 + max(scan, 0) * SCAN_S / 86400 + (file_id * 0.01 if scan < 0 else 0.0)
    rows = []
    for k in range(N_FREQ_TILES):
        fmin = F0_MHZ + k * TILE_MHZ
        flag = k in flagged_tiles
        rows.append(dict(
            tile=tile_base + k, file_id=file_id, source_file=f"f{file_id}.h5",
            source_name="TIC1" if (on if on is not None else scan % 2 == 0) else "OFF",
            cadence_id=cadence_id, scan_index=scan,
            on_source=bool(on if on is not None else (scan >= 0 and scan % 2 == 0)),
            freq_min_mhz=fmin, freq_max_mhz=fmin + TILE_MHZ * 0.996,
            tstart_mjd=t0, tstop_mjd=t0 + SCAN_S / 86400,
            score=10.0 + k if flag else 1.0, z=8.0 if flag else 0.0, p=1e-6 if flag else 0.5,
            q=1e-4 if flag else 0.9, flagged=flag, drift_hz_s=drift if flag else 0.0,
            peak_freq_mhz=fmin + TILE_MHZ / 2,
        ))  # fmt: skip
    return rows


def _cadence(cid, flagged_by_scan, drift=0.0, first_file=0):
    rows = []
    for scan in range(6):
        fid = first_file + scan
        rows += _file_rows(fid, scan, cid, flagged_by_scan.get(scan, []), drift, fid * N_FREQ_TILES)
    return rows


TILE_MATCH = CadenceConfig(match="tile")  # the synthetic peaks sit at tile centres, not on the lines


def _run(rows, cfg=TILE_MATCH):
    return cadence_test(pd.DataFrame(rows), cfg)


def test_on_only_drifting_event_is_a_candidate():
    # 2 Hz/s: +1.2 kHz (1.2 tiles) per 600 s between ON scans
    cand, rfi, rej = _run(_cadence("c1", {0: [2], 2: [3], 4: [4, 5]}, drift=2.0))
    assert len(cand) == 3 and rfi.empty and rej.empty
    first = cand[cand["scan_index"] == 0].iloc[0]
    assert first["n_on_scans"] == 3 and first["cadence_test"] == "pass"
    assert first["n_off_checked"] == 1
    merged = cand[cand["scan_index"] == 4].iloc[0]
    assert merged["n_tiles"] == 2 and merged["tiles"] == "36,37"
    assert list(cand.columns) == list(EVENT_COLUMNS)


def test_event_in_all_six_scans_is_rfi():
    cand, rfi, rej = _run(_cadence("c1", {s: [6] for s in range(6)}))
    assert cand.empty and rej.empty
    assert sorted(rfi["reason"]) == ["all_scans"] * 3 + ["off_scan"] * 3


def test_event_in_neighbouring_off_is_rfi_but_far_off_is_not():
    cand, rfi, _ = _run(_cadence("c1", {0: [1], 1: [1]}))
    assert cand.empty and set(rfi["reason"]) == {"in_off", "off_scan"}
    cand, rfi, _ = _run(_cadence("c1", {0: [1], 5: [1]}))  # scan 5 is not next to scan 0
    assert len(cand) == 1 and cand["n_on_scans"].iloc[0] == 1
    cand, rfi, _ = _run(_cadence("c1", {0: [1], 5: [1]}), CadenceConfig(match="tile", off_scope="all"))
    assert cand.empty


def test_drift_carried_across_the_gap():
    # the OFF after scan 0 shows a line at +0.6 kHz: the drift predicts it, so it vetoes
    rows = _cadence("c1", {0: [2], 1: [3]}, drift=2.0)
    cand, rfi, _ = _run(rows)
    assert cand.empty and "in_off" in set(rfi["reason"])
    # without drift the OFF's tile 3 is elsewhere: no veto
    cand, _, _ = _run(_cadence("c1", {0: [2], 1: [4]}, drift=0.0))
    assert len(cand) == 1


def test_broadband_impulse_is_rfi():
    cand, rfi, rej = _run(_cadence("c1", {2: list(range(7))}))
    assert cand.empty and rej.empty
    assert rfi["reason"].tolist() == ["broadband"] and rfi["n_tiles"].iloc[0] == 7


def test_no_cadence_is_not_applicable():
    rows = _file_rows(40, -1, "", [3], drift=0.5, tile_base=400, on=False)
    cand, rfi, rej = _run(rows)
    assert len(cand) == 1 and rfi.empty and rej.empty
    assert cand["cadence_test"].iloc[0] == "n/a" and cand["n_on_scans"].iloc[0] == -1


def test_min_on_scans_rejects_single_scan_events():
    cand, rfi, rej = _run(_cadence("c1", {0: [2]}), CadenceConfig(min_on_scans=2))
    assert cand.empty and rfi.empty
    assert rej["reason"].tolist() == ["few_on_scans"] and rej["n_on_scans"].iloc[0] == 1


def test_empty_and_deterministic():
    rows = _cadence("c1", {0: [2], 2: [3], 4: [4]}, drift=2.0) + _cadence("c2", {1: [5]}, first_file=6)
    rows += _file_rows(40, -1, "", [1, 2], tile_base=400, on=False)
    a = _run(rows)
    shuffled = pd.DataFrame(rows).sample(frac=1.0, random_state=0)
    b = cadence_test(shuffled, TILE_MATCH)
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    none = _run(_cadence("c1", {}))
    assert all(df.empty for df in none)
    assert list(none[1].columns) == list(EVENT_COLUMNS) + ["reason"]


def test_line_matching_ignores_another_line_in_the_same_tile():
    """A strong line elsewhere in the OFF scans' tile vetoes only when it is on the carried track."""
    rows = _cadence("c1", {0: [2], 1: [2], 2: [2], 3: [2], 4: [2], 5: [2]}, drift=0.0)
    frame = pd.DataFrame(rows)
    on = frame["on_source"] & frame["flagged"]
    frame.loc[on, "peak_freq_mhz"] = F0_MHZ + 2 * TILE_MHZ + 0.0001  # the signal, 100 Hz into tile 2
    frame.loc[~frame["on_source"] & frame["flagged"], "peak_freq_mhz"] = F0_MHZ + 2 * TILE_MHZ + 0.0008  # RFI
    cand, rfi, _ = cadence_test(frame, CadenceConfig(min_on_scans=2))
    assert len(cand) == 3 and set(cand["n_on_scans"]) == {3}
    assert set(rfi["reason"]) == {"off_scan"}
    # the same frame judged by whole tiles: the RFI shares the tile, so everything is RFI
    cand, rfi, _ = cadence_test(frame, TILE_MATCH)
    assert cand.empty
    # an OFF line on the track does veto
    frame.loc[~frame["on_source"] & frame["flagged"], "peak_freq_mhz"] = F0_MHZ + 2 * TILE_MHZ + 0.0001
    cand, rfi, _ = cadence_test(frame, CadenceConfig())
    assert cand.empty and {"all_scans", "off_scan"} <= set(rfi["reason"])


def test_weak_rows_on_the_track_confirm_in_on_and_veto_in_off():
    """Only the event itself must pass the archive-wide threshold: along its carried line, a
    weaker row (p <= confirm_p) confirms it in another ON scan, and one (p <= veto_p, z at least a
    quarter of the event's) in a neighbouring OFF scan makes it RFI; weak rows off the line or with
    another drift do neither."""
    frame = pd.DataFrame(_cadence("c1", {0: [2]}, drift=0.0))
    line = F0_MHZ + 2 * TILE_MHZ + 0.0001
    frame["peak_freq_mhz"] = np.where(frame["freq_min_mhz"] == F0_MHZ + 2 * TILE_MHZ, line, frame["peak_freq_mhz"])
    in_tile2 = frame["freq_min_mhz"] == F0_MHZ + 2 * TILE_MHZ
    cfg = CadenceConfig(min_on_scans=2)
    assert cadence_test(frame, cfg)[0].empty  # alone in one ON scan: rejected
    weak_on = frame.copy()
    weak_on.loc[in_tile2 & (weak_on["scan_index"] == 2), "p"] = 0.005
    cand = cadence_test(weak_on, cfg)[0]
    assert len(cand) == 1 and cand["n_on_scans"].iloc[0] == 2
    weak_off = weak_on.copy()
    weak_off.loc[in_tile2 & (weak_off["scan_index"] == 1), ["p", "z"]] = [0.005, 1.0]
    assert len(cadence_test(weak_off, cfg)[0]) == 1  # a noise-like row (z 1 against the event's 8) is no copy
    weak_off.loc[in_tile2 & (weak_off["scan_index"] == 1), "z"] = 4.0
    cand, rfi, _ = cadence_test(weak_off, cfg)
    assert cand.empty and "in_off" in set(rfi["reason"])
    other_drift = weak_off.copy()
    other_drift.loc[in_tile2 & (other_drift["scan_index"] == 1), "drift_hz_s"] = 3.0
    assert len(cadence_test(other_drift, cfg)[0]) == 1


def test_a_line_through_consecutive_time_blocks_of_one_file_is_one_event():
    """Outside a cadence, a long observation lists a persistent line once, not once per block."""
    rows = []
    block_s = SCAN_S / 4
    for blk in range(4):
        t0 = MJD0 + blk * block_s / 86400
        for k in range(N_FREQ_TILES):
            fmin = F0_MHZ + k * TILE_MHZ
            line = k == 2 or (k == 6 and blk == 1)  # a persistent line in tile 2; a one-off in tile 6
            rows.append(dict(
                tile=blk * N_FREQ_TILES + k, file_id=9, source_file="long.fil", source_name="J0534",
                cadence_id="", scan_index=-1, on_source=False, freq_min_mhz=fmin,
                freq_max_mhz=fmin + TILE_MHZ * 0.996, tstart_mjd=t0, tstop_mjd=t0 + block_s / 86400,
                score=9.0 if line else 1.0, z=8.0 if line else 0.0, p=1e-6 if line else 0.5,
                q=1e-4 if line else 0.9, flagged=line, drift_hz_s=0.0, peak_freq_mhz=fmin + 0.0003,
            ))  # fmt: skip
    cand, rfi, rej = cadence_test(pd.DataFrame(rows), CadenceConfig())
    assert len(cand) == 2 and rfi.empty and rej.empty
    long = cand[cand["n_tiles"] == 4].iloc[0]
    assert long["tiles"] == "2,10,18,26" and long["cadence_test"] == "n/a"
    assert long["tstop_mjd"] - long["tstart_mjd"] == pytest.approx(SCAN_S / 86400)
