"""The ingest flow through a real Dask cluster inside the Prefect test harness."""

from __future__ import annotations

import numpy as np
import pytest

from seti_auditor import formats, ingest, tilestore
from seti_auditor.tiling import TilingConfig

TSAMP = 18.253611008
FOFF = -2.7939677238464355e-06
CFG = TilingConfig(tile_time=16, tile_freq=256, chunk_tiles=8, channels_per_task=2048)


def _header(name, tstart, fch1=1100.0, nchans=4096):
    return {"telescope_id": 6, "machine_id": 10, "data_type": 1, "source_name": name, "src_raj": 0.0,
            "src_dej": 0.0, "tstart": tstart, "tsamp": TSAMP, "nbits": 32, "fch1": fch1, "foff": FOFF,
            "nchans": nchans, "nifs": 1, "nfpc": 1024}


def _data(seed, nchans=4096, t=16):
    rng = np.random.default_rng(seed)
    return (rng.chisquare(102, size=(t, nchans)) / 102 * 1e9).astype(np.float32)


def _cadence(archive, t0=60000.0):
    names = ["TIC1", "HIP2", "TIC1", "HIP3", "TIC1", "HIP4"]
    for i, name in enumerate(names):
        write = formats.write_filterbank if i % 2 else formats.write_bl_h5
        suffix = ".fil" if i % 2 else ".h5"
        write(archive / f"scan_{i:04d}{suffix}", _header(name, t0 + i * 320 / 86400), _data(i))


@pytest.fixture()
def archive(tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    _cadence(root)
    (root / "empty.fil").write_bytes(b"")
    (root / "garbage.h5").write_bytes(b"\x00not hdf5 at all" * 100)
    good = (root / "scan_0001.fil").read_bytes()
    (root / "truncated.fil").write_bytes(good[: len(good) // 2 + 3])
    formats.write_filterbank(root / "nan_only.fil", _header("X", 59000.0), np.full((16, 4096), np.nan, np.float32))
    formats.write_filterbank(root / "constant.fil", _header("Y", 59001.0), np.ones((16, 4096), np.float32))
    return root


def _run(archive, workdir, runner):
    from flows.ingest import ingest_flow

    return ingest_flow.with_options(task_runner=runner())(str(archive), str(workdir), tiling=CFG)


def test_ingest_flow(prefect_harness, thread_runner, archive, tmp_path):
    workdir = tmp_path / "work"
    summary = _run(archive, workdir, thread_runner)
    assert sorted(summary.ingested) == sorted(f"scan_{i:04d}{'.fil' if i % 2 else '.h5'}" for i in range(6))
    assert set(summary.rejected) == {"empty.fil", "garbage.h5", "truncated.fil", "nan_only.fil", "constant.fil"}
    assert "finite" in summary.rejected["nan_only.fil"] and "variance" in summary.rejected["constant.fil"]
    assert summary.ok and summary.n_inputs == 11

    store = tilestore.store_path(workdir)
    ds = tilestore.open_tiles(store).load()
    manifest = tilestore.load_manifest(store)
    assert set(manifest.status) == {"ingested", "rejected"} and len(manifest) == 11
    valid = ds.isel(tile=ds.valid.values)
    assert valid.sizes["tile"] == 6 * 16 == summary.n_tiles  # 4096 / 256 frequency tiles, one time tile
    assert np.isfinite(valid.tiles.values).all()

    # coordinates against the header
    row = manifest[manifest.name == "scan_0002.h5"].iloc[0]
    tiles = valid.isel(tile=valid.source_file.values == "scan_0002.h5")
    hdr = formats.read_header(archive / "scan_0002.h5")
    k = 5
    lo = hdr["fch1"] + (k * 256 + 255) * hdr["foff"]
    hi = hdr["fch1"] + k * 256 * hdr["foff"]
    assert tiles.freq_min_mhz.values[k] == pytest.approx(lo) and tiles.freq_max_mhz.values[k] == pytest.approx(hi)
    assert tiles.tstart_mjd.values[k] == pytest.approx(hdr["tstart"])
    assert set(tiles.source_name.values) == {"TIC1"} and tiles.on_source.values.all()
    assert set(tiles.scan_index.values) == {2} and len(set(tiles.cadence_id.values)) == 1
    assert row.tile_start % CFG.chunk_tiles == 0
    off = valid.isel(tile=valid.source_file.values == "scan_0003.fil")
    assert not off.on_source.values.any() and set(off.source_name.values) == {"HIP3"}
    # values equal a direct tiling of the file
    from seti_auditor.tiling import normalise, cut_tiles
    direct = cut_tiles(normalise(formats.open_observation(archive / "scan_0002.h5").values, 1024, CFG), CFG)
    np.testing.assert_allclose(tiles.tiles.values, direct, rtol=1e-6)

    # a rerun adds nothing
    size_before = ds.sizes["tile"]
    again = _run(archive, workdir, thread_runner)
    assert again.ingested == [] and len(again.unchanged) == 6
    assert tilestore.n_tiles(store) == size_before
    assert len(tilestore.load_manifest(store)) == 11

    # a changed file supersedes its earlier tiles; a new file is appended
    formats.write_filterbank(archive / "scan_0003.fil", _header("HIP3", 60000.0 + 3 * 320 / 86400), _data(99))
    formats.write_filterbank(archive / "extra.fil", _header("LONE", 61000.0, fch1=2000.0), _data(7))
    third = _run(archive, workdir, thread_runner)
    assert sorted(third.ingested) == ["extra.fil", "scan_0003.fil"]
    manifest = tilestore.load_manifest(store)
    assert sorted(manifest.status[manifest.name == "scan_0003.fil"]) == ["ingested", "superseded"]
    ds = tilestore.open_tiles(store).load()
    assert int(ds.valid.sum()) == 7 * 16
    lone = ds.isel(tile=(ds.source_file.values == "extra.fil") & ds.valid.values)
    assert set(lone.cadence_id.values) == {""} and set(lone.scan_index.values) == {-1}
    new_off = ds.isel(tile=(ds.source_file.values == "scan_0003.fil") & ds.valid.values)
    assert set(new_off.scan_index.values) == {3}  # cadence still found with the replaced file


def test_plan_is_idempotent_without_io():
    rows = [
        {**{k: ingest._default(v) for k, v in tilestore.MANIFEST_COLUMNS.items()},
         "path": f"/a/f{i}.fil", "name": f"f{i}.fil", "content_hash": f"h{i}", "status": "ingested",
         "source_name": "S", "tstart_mjd": 60000.0 + i, "tstop_mjd": 60000.0 + i + 0.001, "fch1_mhz": 1000.0,
         "foff_mhz": FOFF, "nchans": 4096, "nints": 16, "tsamp_s": TSAMP, "n_tiles": 16, "coarse_width": 1024}
        for i in range(3)
    ]
    first = ingest.plan_ingest(rows, tilestore.empty_manifest(), CFG, 0)
    assert first.capacity == 3 * 16 and len(first.regions) == 3 * 2
    second = ingest.plan_ingest(rows, first.manifest, CFG, first.capacity)
    assert second.regions == [] and second.capacity == first.capacity and len(second.unchanged) == 3


def test_workdir_lock_refuses_a_second_process(tmp_path):
    import subprocess
    import sys

    from seti_auditor.workdir import WorkdirBusyError, locked

    code = ("import sys; from seti_auditor.workdir import locked, WorkdirBusyError\n"
            "try:\n    cm = locked(sys.argv[1]); cm.__enter__()\nexcept WorkdirBusyError as e:\n"
            "    print(e); sys.exit(3)\n")
    with locked(tmp_path):
        with locked(tmp_path):  # re-entrant in one process (parent flow + subflows)
            pass
        other = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
        assert other.returncode == 3 and str(tmp_path) in other.stdout and "another seti-auditor run" in other.stdout
    free = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True)
    assert free.returncode == 0
    assert isinstance(WorkdirBusyError("x"), RuntimeError)


def test_small_files_share_ingest_tasks_and_large_ones_do_not():
    cfg = TilingConfig(tile_time=16, tile_freq=256, chunk_tiles=8, channels_per_task=4096)
    small = [ingest.Region(i, f"/a/s{i}.fil", 0, 4, 8 * i) for i in range(5)]  # 1024 channels each
    large = [ingest.Region(9, "/a/big.fil", f0, f0 + 16, 100 + f0) for f0 in (0, 16, 32)]  # 4096 channels each
    batches = ingest.batch_regions(small + large + small[:1], cfg)
    assert [r for b in batches for r in b] == small + large + small[:1]  # every region once, in order
    assert [len(b) for b in batches] == [4, 1, 1, 1, 1, 1]
    for b in batches:
        assert sum((r.f1 - r.f0) * cfg.step_freq for r in b) <= cfg.channels_per_task
    # the default budget (2^20 channels) puts a demo archive's twelve 16384-channel files in one task
    demo = [ingest.Region(i, f"/a/d{i}.fil", 0, 64, 64 * i) for i in range(12)]
    assert ingest.batch_regions(demo, TilingConfig()) == [demo]
    assert ingest.batch_regions([], cfg) == []
