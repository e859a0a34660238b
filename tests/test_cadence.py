"""Cadence grouping from header summaries."""

import pytest

from seti_auditor.cadence import ScanInfo, group_cadences, parse_cadence_table, sanitise

SCAN_DAYS = 300 / 86400
GAP_DAYS = 20 / 86400


def _scans(names, t0=60000.0, fmin=1100.0, prefix="f"):
    out, t = [], t0
    for i, name in enumerate(names):
        out.append(ScanInfo(f"{prefix}{i}", name, t, t + SCAN_DAYS, fmin, fmin + 2.9))
        t += SCAN_DAYS + GAP_DAYS
    return out


def test_abacad_found_from_source_names():
    slots = group_cadences(_scans(["TIC1", "HIP2", "TIC1", "HIP3", "TIC1", "HIP4"]))
    assert [slots[f"f{i}"].scan_index for i in range(6)] == list(range(6))
    assert [slots[f"f{i}"].on_source for i in range(6)] == [True, False] * 3
    assert len({s.cadence_id for s in slots.values()}) == 1


def test_order_comes_from_tstart_not_input_order():
    scans = _scans(["TIC1", "HIP2", "TIC1", "HIP3", "TIC1", "HIP4"])
    slots = group_cadences(list(reversed(scans)))
    assert slots["f0"].scan_index == 0 and slots["f5"].scan_index == 5


def test_broken_pattern_and_lone_scans_get_no_cadence():
    slots = group_cadences(_scans(["TIC1", "HIP2", "HIP2", "HIP3", "TIC1", "HIP4"]))
    assert all(s.cadence_id == "" and s.scan_index == -1 for s in slots.values())
    assert group_cadences(_scans(["TIC1"]))["f0"].cadence_id == ""


def test_bands_and_gaps_separate_cadences():
    names = ["TIC1", "HIP2", "TIC1", "HIP3", "TIC1", "HIP4"]
    low = _scans(names, fmin=1100.0, prefix="lo")
    high = _scans(names, fmin=1500.0, prefix="hi")
    slots = group_cadences(low + high)
    assert slots["lo0"].cadence_id != slots["hi0"].cadence_id
    assert all(slots[f"hi{i}"].scan_index == i for i in range(6))
    # a long pause after the third scan breaks the cadence
    gapped = _scans(names[:3]) + _scans(names[3:], t0=61000.0, prefix="g")
    assert all(s.cadence_id == "" for s in group_cadences(gapped).values())


def test_explicit_table():
    table = parse_cadence_table("file,cadence_id,scan_index,on_source\na.fil,c/1,0,true\nb.h5,c/1,1,false\n")
    assert table["a.fil"].on_source and not table["b.h5"].on_source
    assert table["a.fil"].cadence_id == "c_1"  # sanitised
    with pytest.raises(ValueError, match="line 2"):
        parse_cadence_table("file,cadence_id,scan_index,on_source\na.fil,c,zero,true\n", "t.csv")
    with pytest.raises(ValueError, match="needs the columns"):
        parse_cadence_table("file,cadence\n")


def test_sanitise_header_names():
    assert sanitise("../../etc/passwd") == "etc_passwd"
    assert sanitise("TIC 123/b;rm -rf") == "TIC_123_b_rm_-rf"
    assert len(sanitise("x" * 500)) == 64
