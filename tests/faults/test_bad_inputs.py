"""One archive holding every kind of bad input beside good files, through the ingest flow."""

from __future__ import annotations

import os

import h5py
import numpy as np
import pytest

from seti_auditor import formats, ingest, tilestore
from seti_auditor.errors import InputFileError
from seti_auditor.formats.filterbank import encode_header
from seti_auditor.tiling import TilingConfig

CFG = TilingConfig(tile_time=16, tile_freq=256, chunk_tiles=8, channels_per_task=2048)
NCHANS, NINTS = 4096, 16
TILES_PER_FILE = (NCHANS // 256) * (NINTS // 16)


def _header(name="SRC", tstart=60000.0, **over):
    hdr = {"telescope_id": 6, "machine_id": 10, "data_type": 1, "source_name": name, "src_raj": 0.0,
           "src_dej": 0.0, "tstart": tstart, "tsamp": 18.253611008, "nbits": 32, "fch1": 1100.0,
           "foff": -2.7939677238464355e-06, "nchans": NCHANS, "nifs": 1, "nfpc": 1024}
    return {**hdr, **over}


def _noise(seed, shape=(NINTS, NCHANS)):
    rng = np.random.default_rng(seed)
    return (rng.chisquare(64, size=shape) / 64 * 1e9).astype(np.float32)


def _raw_fil(path, header: dict, payload: bytes) -> None:
    """A filterbank written byte by byte: the header may say anything."""
    path.write_bytes(encode_header(header) + payload)


def _h5(path, data_TxIxF, **attrs) -> None:
    with h5py.File(path, "w") as fh:
        fh.attrs["CLASS"] = "FILTERBANK"
        dset = fh.create_dataset("data", data=data_TxIxF)
        for k, v in {**_header(), **attrs}.items():
            dset.attrs[k] = v


# name -> a word its rejection reason must contain
BAD = {
    "empty.fil": "empty", "empty.h5": "empty",
    "garbage.fil": "HEADER_START", "garbage.h5": "HDF5",
    "truncated.fil": "whole number", "truncated.h5": "HDF5",
    "nsamples_lies.fil": "nsamples", "nchans_lies.h5": "nchans", "nchans_lies.fil": "whole number",
    "nchans_absurd.fil": "spectra",  # 2**31-1 channels: refused before any allocation
    "nbits3.fil": "nbits", "nbits64.fil": "nbits", "nifs2.fil": "nifs", "nifs2.h5": "nifs",
    "all_nan.fil": "finite", "all_inf.h5": "finite", "constant.fil": "variance",
    "too_short.fil": "tile",
    "replaced.fil": "changed",
}
GOOD = ("good_a.fil", "good_b.h5", "good_8bit.fil", "nan_and_inf_pixels.fil")


def build_archive(root) -> None:
    root.mkdir()
    formats.write_filterbank(root / "good_a.fil", _header("A", 60000.0), _noise(1))
    formats.write_bl_h5(root / "good_b.h5", _header("B", 60001.0), _noise(2))
    formats.write_filterbank(root / "good_8bit.fil", _header("C", 60002.0, nbits=8), np.clip(_noise(3) / 1e7, 0, 255))
    spotty = _noise(4)
    spotty[3, 100:140] = np.nan
    spotty[7, 2000] = np.inf
    spotty[:, 3001] = -np.inf
    formats.write_filterbank(root / "nan_and_inf_pixels.fil", _header("D", 60003.0), spotty)
    formats.write_filterbank(root / "replaced.fil", _header("E", 60004.0), _noise(5))

    good = (root / "good_a.fil").read_bytes()
    (root / "empty.fil").write_bytes(b"")
    (root / "empty.h5").write_bytes(b"")
    (root / "garbage.fil").write_bytes(np.random.default_rng(6).bytes(5000))
    (root / "garbage.h5").write_bytes(np.random.default_rng(7).bytes(5000))
    (root / "truncated.fil").write_bytes(good[: len(good) // 2 + 3])
    whole_h5 = (root / "good_b.h5").read_bytes()
    (root / "truncated.h5").write_bytes(whole_h5[: len(whole_h5) // 3])
    payload = _noise(8).tobytes()
    _raw_fil(root / "nsamples_lies.fil", {**_header(), "nsamples": 1000}, payload)
    _raw_fil(root / "nchans_lies.fil", _header(nchans=4000), payload)
    _raw_fil(root / "nchans_absurd.fil", _header(nchans=2**31 - 1), payload)
    _raw_fil(root / "nbits3.fil", _header(nbits=3), payload)
    _raw_fil(root / "nbits64.fil", _header(nbits=64), payload)
    _raw_fil(root / "nifs2.fil", _header(nifs=2), payload)
    _h5(root / "nchans_lies.h5", _noise(9)[:, None, :], nchans=8192)
    _h5(root / "nifs2.h5", np.stack([_noise(10), _noise(11)], axis=1), nifs=2)
    formats.write_filterbank(root / "all_nan.fil", _header(), np.full((NINTS, NCHANS), np.nan, np.float32))
    formats.write_bl_h5(root / "all_inf.h5", _header(), np.full((NINTS, NCHANS), np.inf, np.float32))
    formats.write_filterbank(root / "constant.fil", _header(), np.full((NINTS, NCHANS), 7.0, np.float32))
    formats.write_filterbank(root / "too_short.fil", _header(), _noise(12, (8, NCHANS)))


@pytest.fixture()
def replace_during_read(monkeypatch):
    """Replace ``replaced.fil`` with other data right after the ingest reads its first channel region.

    The injection point is the reader (``formats.read_channels``); what detects it is the ingest's
    own check of the file's identity around the read. Thread workers share this process.
    """
    real = formats.read_channels
    done = []

    def reading(path, c0, c1):
        out = real(path, c0, c1)
        if os.path.basename(path) == "replaced.fil" and not done:
            done.append(path)
            tmp = f"{path}.new"
            formats.write_filterbank(tmp, _header("E", 60004.0), _noise(55))
            os.replace(tmp, path)
        return out

    monkeypatch.setattr(formats, "read_channels", reading)
    return done


def test_every_bad_input_is_rejected_with_its_reason_and_the_run_goes_on(tmp_path, prefect_harness, thread_runner,
                                                                          replace_during_read):
    """Injects: an archive of 4 good files and 19 bad ones: 0-byte, garbage, truncated (.fil and .h5),
    headers lying about nsamples/nchans, absurd nchans, nbits 3 and 64, nifs 2 (.fil and .h5), all-NaN,
    all-Inf, constant data, too short for a tile, and a file replaced while it is being read.

    Must hold: the ingest flow completes; every input file has exactly one manifest row, ingested or
    rejected with its name and a specific reason; good files (including one with NaN/Inf pixels) give
    finite tiles; no tile of a rejected file is valid; a rerun retries only the file that changed while
    read (a transient reason) and ingests it, and takes no other rejected file again.
    """
    from flows.ingest import ingest_flow

    archive, work = tmp_path / "archive", tmp_path / "work"
    build_archive(archive)
    names = sorted(p.name for p in archive.iterdir())
    assert set(names) == set(BAD) | set(GOOD) and len(names) == len(BAD) + len(GOOD)

    summary = ingest_flow.with_options(task_runner=thread_runner())(str(archive), str(work), tiling=CFG)
    assert replace_during_read, "the injection did not happen"
    assert summary.n_inputs == len(names) and summary.ok
    assert sorted(summary.ingested) == sorted(set(GOOD))
    assert set(summary.rejected) == set(BAD)
    for name, word in BAD.items():
        assert word.lower() in summary.rejected[name].lower(), (name, summary.rejected[name])
    assert summary.rejected["replaced.fil"].startswith(ingest.TRANSIENT)

    store = tilestore.store_path(work)
    manifest = tilestore.load_manifest(store)
    assert sorted(manifest.name) == names  # one row per input file, none lost, none twice
    assert all(manifest.loc[manifest.status == "rejected", "reason"].str.len() > 0)
    ds = tilestore.open_tiles(store).load()
    valid = ds.isel(tile=ds.valid.values)
    assert set(valid.source_file.values) == set(GOOD)
    assert valid.sizes["tile"] == len(GOOD) * TILES_PER_FILE
    assert np.isfinite(valid.tiles.values).all()

    again = ingest_flow.with_options(task_runner=thread_runner())(str(archive), str(work), tiling=CFG)
    assert again.ingested == ["replaced.fil"] and sorted(again.unchanged) == sorted(GOOD)
    manifest = tilestore.load_manifest(store)
    assert sorted(manifest.name) == names
    assert set(manifest.loc[manifest.status == "rejected", "name"]) == set(BAD) - {"replaced.fil"}
    ds = tilestore.open_tiles(store).load()
    assert int(ds.valid.sum()) == (len(GOOD) + 1) * TILES_PER_FILE


def test_region_of_a_file_replaced_after_inspection_is_refused(tmp_path):
    """Injects: a file replaced (same shape, other values) between its inspection and its tiling.

    Must hold: tiling the region raises InputFileError naming the file with a transient reason, and
    nothing is written to the store.
    """
    archive = tmp_path / "a"
    archive.mkdir()
    path = archive / "x.fil"
    formats.write_filterbank(path, _header(), _noise(1))
    inspected = ingest.inspect_file(path, CFG)
    plan = ingest.plan_ingest([inspected], tilestore.empty_manifest(), CFG, 0)
    store = tmp_path / "tiles.zarr"
    tilestore.ensure_capacity(store, plan.capacity, CFG)
    formats.write_filterbank(path, _header(), _noise(2))  # replaced: new inode, new mtime
    row = plan.manifest.loc[0]
    with pytest.raises(InputFileError, match="changed on disk") as info:
        ingest.ingest_region(store, row, plan.regions[0], CFG)
    assert info.value.path == str(path) and info.value.reason.startswith(ingest.TRANSIENT)
    assert not tilestore.open_tiles(store).valid.values.any()
