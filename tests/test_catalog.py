"""Tests of the versioned catalog store (tmp_path only)."""

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from seti_auditor.cadence_test import EVENT_COLUMNS
from seti_auditor import catalog
from seti_auditor.catalog import append_rows, list_versions, open_catalog, write_catalog


def _events(n, seed=0, reason=False):
    rng = np.random.default_rng(seed)
    df = pd.DataFrame({
        "source_file": [f"f{i}.h5" for i in range(n)], "source_name": ["TIC 1"] * n,
        "file_id": np.arange(n, dtype=np.int64), "cadence_id": ["c1"] * n,
        "scan_index": np.zeros(n, np.int64), "on_source": np.ones(n, bool),
        "freq_min_mhz": 1400 + rng.random(n), "freq_max_mhz": 1401 + rng.random(n),
        "tstart_mjd": 60000 + rng.random(n), "tstop_mjd": 60001 + rng.random(n),
        "score": rng.random(n), "z_score": rng.random(n), "p_value": rng.random(n),
        "q_value": rng.random(n), "drift_hz_s": np.r_[np.nan, rng.random(n - 1)] if n else [],
        "peak_freq_mhz": 1400 + rng.random(n), "n_tiles": np.ones(n, np.int64),
        "tile_first": np.arange(n, dtype=np.int64), "tile_last": np.arange(n, dtype=np.int64),
        "tiles": [str(i) for i in range(n)], "n_on_scans": np.ones(n, np.int64),
        "n_off_checked": np.ones(n, np.int64), "cadence_test": ["pass"] * n,
        "method": ["tile" if i % 2 else "cadence_line" for i in range(n)],
    })  # fmt: skip
    if reason:
        df["reason"] = ["in_off"] * n
    return df[list(EVENT_COLUMNS) + (["reason"] if reason else [])]


ATTRS = {"run_id": "r1", "thresholds": {"0": {"p_threshold": 1e-3}}, "inputs": ["a.h5", "b.fil"]}


def _write(workdir, n, version, seed=0, attrs=ATTRS):
    return write_catalog(workdir, _events(n, seed), _events(2, seed + 1, True), _events(0, 0, True),
                         attrs=attrs, model_version=version)  # fmt: skip


def _open_root(workdir):
    with xr.open_zarr(os.path.join(workdir, "catalog.zarr"), consolidated=False) as ds:
        return ds.load()


def test_roundtrip_and_layout(tmp_path):
    assert _write(tmp_path, 3, "v1") == "v1"
    root = _open_root(tmp_path)  # plain xarray opens the current version
    assert root.sizes["candidate"] == 3
    assert root["source_file"].values.tolist() == ["f0.h5", "f1.h5", "f2.h5"]
    assert np.isnan(root["drift_hz_s"].values[0]) and root["on_source"].dtype == bool
    cat = open_catalog(tmp_path)
    assert cat.attrs["thresholds"] == ATTRS["thresholds"] and cat.attrs["inputs"] == ATTRS["inputs"]
    assert cat.attrs["model_version"] == "v1" and cat.attrs["catalog_versions"] == ["v1"]
    assert open_catalog(tmp_path, group="rfi")["reason"].values.tolist() == ["in_off", "in_off"]
    assert open_catalog(tmp_path, group="rejected").sizes.get("candidate", 0) == 0
    assert sorted(os.listdir(tmp_path)) == ["catalog.zarr"]  # no temporary leftovers


def test_rerun_same_version_is_identical(tmp_path):
    _write(tmp_path, 3, "v1")
    before = [open_catalog(tmp_path), open_catalog(tmp_path, "v1"), open_catalog(tmp_path, group="rfi")]
    _write(tmp_path, 3, "v1")
    after = [open_catalog(tmp_path), open_catalog(tmp_path, "v1"), open_catalog(tmp_path, group="rfi")]
    for b, a in zip(before, after):
        xr.testing.assert_identical(b, a)
    assert list_versions(tmp_path) == ["v1"]


def test_rescore_same_version_replaces_content(tmp_path):
    _write(tmp_path, 5, "v1")
    _write(tmp_path, 2, "v1", seed=7)
    assert open_catalog(tmp_path).sizes["candidate"] == 2
    assert open_catalog(tmp_path, "v1").sizes["candidate"] == 2


def test_new_version_becomes_current_old_stays_readable(tmp_path):
    _write(tmp_path, 3, "v1")
    v1 = open_catalog(tmp_path)
    _write(tmp_path, 4, "v2", seed=3, attrs={**ATTRS, "run_id": "r2"})
    cur = open_catalog(tmp_path)
    assert cur.attrs["model_version"] == "v2" and cur.sizes["candidate"] == 4
    assert list_versions(tmp_path) == ["v1", "v2"]
    old = open_catalog(tmp_path, "v1")
    xr.testing.assert_equal(old, v1)
    assert old.attrs["run_id"] == "r1"
    _write(tmp_path, 3, "v1")  # republishing v1 makes it current again, v2 kept
    assert open_catalog(tmp_path).attrs["model_version"] == "v1"
    assert open_catalog(tmp_path, "v2").sizes["candidate"] == 4


def test_zero_candidates(tmp_path):
    write_catalog(tmp_path / "catalog.zarr", _events(0), _events(0, reason=True), _events(0, reason=True),
                  attrs={}, model_version="v0")  # fmt: skip
    root = _open_root(tmp_path)
    assert root.sizes["candidate"] == 0
    assert set(EVENT_COLUMNS) <= set(root.data_vars)
    assert root["source_file"].dtype.kind in "OT"  # variable-length strings, even when empty


def test_bad_version_id(tmp_path):
    with pytest.raises(ValueError):
        _write(tmp_path, 1, "../v1")


def _chunk_files(store: Path) -> dict[str, int]:
    """Chunk files per array directory of the store (``.../c/<k>`` files), keyed by the array's path."""
    counts: dict[str, int] = {}
    for f in store.rglob("*"):
        if f.is_file() and f.parent.name == "c":
            key = str(f.parent.parent.relative_to(store))
            counts[key] = counts.get(key, 0) + 1
    return counts


def test_appends_of_one_row_fill_fixed_chunks(tmp_path, monkeypatch):
    """One row written, then one row appended at a time: each array holds ceil(rows / ROW_CHUNK) chunk files,
    not one per append, and the rows read back in order."""
    monkeypatch.setattr(catalog, "ROW_CHUNK", 2)  # small chunks, so that 5 rows cross chunk boundaries
    rows = [_events(1, seed=i) for i in range(5)]
    write_catalog(tmp_path, rows[0], _events(0, reason=True), _events(0, reason=True), attrs={}, model_version="v1")
    for i, row in enumerate(rows[1:], start=1):
        assert append_rows(tmp_path, row, _events(1, i, True), _events(0, reason=True), attrs={"n": i},
                           model_version="v1") == {"candidates": (i, i + 1), "rfi": (i - 1, i), "rejected": (0, 0)}
    counts = _chunk_files(Path(catalog.store_path(tmp_path)))
    # 5 rows in chunks of 2: at most 3 files per array (one file per append would be 5); zarr skips a
    # chunk that holds only the fill value (a column of zeros here), hence "at most"
    assert counts and max(counts.values()) == 3
    assert counts["score"] == counts["versions/v1/score"] == counts["source_file"] == 3
    assert counts["rfi/score"] == counts["versions/v1/rfi/score"] == 2  # 4 rows
    cat = open_catalog(tmp_path)
    expected = pd.concat(rows, ignore_index=True)
    assert cat["source_file"].values.tolist() == expected["source_file"].tolist()
    np.testing.assert_array_equal(cat["score"].values, expected["score"].to_numpy())
    np.testing.assert_array_equal(cat["tile_first"].values, expected["tile_first"].to_numpy())
    assert cat.attrs["n"] == 4 and open_catalog(tmp_path, "v1").sizes["candidate"] == 5
    assert sorted(os.listdir(tmp_path)) == ["catalog.zarr"]  # no temporaries left


def test_first_write_chunks_at_the_fixed_row_chunk(tmp_path):
    """Every array of every node of a one-row version is chunked at ROW_CHUNK rows, not at its length."""
    import zarr

    _write(tmp_path, 1, "v1")
    root = zarr.open_group(catalog.store_path(tmp_path), mode="r")
    chunks = {}
    for node in ("", "rfi", "rejected", "versions/v1", "versions/v1/rfi", "versions/v1/rejected"):
        group = root[node] if node else root
        chunks.update({f"{node}/{name}": arr.chunks for name, arr in group.arrays()})
    assert len(chunks) == 6 * len(EVENT_COLUMNS) + 4  # rfi and rejected also carry "reason"
    assert set(chunks.values()) == {(catalog.ROW_CHUNK,)}
