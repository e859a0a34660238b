"""Readers and writers for sigproc filterbank and BL HDF5 (seti_auditor.formats).

Decoding in these tests is done independently of the project code: headers are
built and located with ``struct``/``bytes.find``, sub-byte data unpacked with
``np.unpackbits(bitorder="little")`` or explicit shifts written here.
"""

from __future__ import annotations

import pickle
import struct
from pathlib import Path

import h5py
import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)
import numpy as np
import pytest

from seti_auditor.errors import InputFileError
from seti_auditor.formats import (
    SUPPORTED_SUFFIXES,
    bl_h5,
    filterbank,
    open_observation,
    read_header,
    write_bl_h5,
    write_filterbank,
)

REAL = Path(__file__).resolve().parents[2] / "shared/data/real"
HEADER = {
    "telescope_id": 6, "machine_id": 10, "data_type": 1, "rawdatafile": "guppi_0001.raw",
    "source_name": "TEST_SRC", "src_raj": 123456.7, "src_dej": -123456.7,
    "az_start": 12.5, "za_start": 33.25, "tstart": 60000.125, "tsamp": 18.253611008,
    "fch1": 1501.5, "foff": -2.7939677238464355e-06,
}


# ----------------------------------------------------------------- helpers


def _hdr_string(s: str) -> bytes:
    raw = s.encode()
    return struct.pack("<i", len(raw)) + raw


def raw_header(items: list[tuple[str, str, object]]) -> bytes:
    """Sigproc header from (key, kind, value); kind is 'i', 'd', 's' or raw 'b' bytes."""
    out = _hdr_string("HEADER_START")
    for key, kind, val in items:
        out += _hdr_string(key)
        if kind == "s":
            out += _hdr_string(val)
        elif kind == "b":
            out += val
        else:
            out += struct.pack("<" + kind, val)
    return out + _hdr_string("HEADER_END")


def base_items(**over) -> list[tuple[str, str, object]]:
    """A valid 8-channel, 32-bit header as items; ``over`` replaces or (None) drops keys."""
    vals = {"source_name": ("s", "SRC"), "tstart": ("d", 60000.0), "tsamp": ("d", 1.0),
            "fch1": ("d", 1500.0), "foff": ("d", -0.5), "nchans": ("i", 8),
            "nbits": ("i", 32), "nifs": ("i", 1)}
    for key, kv in over.items():
        if kv is None:
            vals.pop(key, None)
        else:
            vals[key] = kv
    return [(k, kind, v) for k, (kind, v) in vals.items()]


def data_after_header(path: Path) -> bytes:
    blob = path.read_bytes()
    end = blob.find(b"HEADER_END")
    assert end > 0
    return blob[end + len(b"HEADER_END"):]


def decode_independently(payload: bytes, nbits: int, nchans: int) -> np.ndarray:
    """Decode filterbank data bytes without project helpers (low bits first)."""
    raw = np.frombuffer(payload, dtype=np.uint8)
    if nbits == 32:
        vals = np.frombuffer(payload, dtype="<f4")
    elif nbits == 16:
        vals = np.frombuffer(payload, dtype="<u2")
    elif nbits == 8:
        vals = raw
    elif nbits == 1:
        vals = np.unpackbits(raw, bitorder="little")
    elif nbits == 2:
        vals = np.stack([(raw >> 0) & 3, (raw >> 2) & 3, (raw >> 4) & 3, (raw >> 6) & 3], axis=1)
    elif nbits == 4:
        vals = np.stack([raw & 0x0F, raw >> 4], axis=1)
    return vals.reshape(-1, nchans).astype(np.float32)


def assert_input_error(path: Path, exc_info) -> None:
    msg = str(exc_info.value)
    assert path.name in msg, msg
    assert len(exc_info.value.reason) > 5, msg


# ----------------------------------------------------------------- writers and readers


@pytest.mark.parametrize("nbits", [1, 2, 4, 8, 16, 32])
def test_round_trip_each_nbits(tmp_path, nbits):
    rng = np.random.default_rng(nbits)
    nsamp, nchans = 5, 48
    if nbits == 32:
        data = rng.normal(10, 2, (nsamp, nchans)).astype(np.float32)
    else:
        data = rng.integers(0, 2**nbits, (nsamp, nchans)).astype(np.float64)
    path = tmp_path / f"obs_{nbits}.fil"
    write_filterbank(path, {**HEADER, "nbits": nbits}, data)

    payload = data_after_header(path)
    assert len(payload) == nsamp * nchans * nbits // 8
    expected = decode_independently(payload, nbits, nchans)
    np.testing.assert_array_equal(expected, data.astype(np.float32))

    arr = open_observation(path)
    assert arr.name == "power" and arr.dims == ("time", "freq")
    assert arr.dtype == np.float32 and arr.shape == (nsamp, nchans)
    np.testing.assert_array_equal(arr.values, expected)
    for key, val in HEADER.items():
        assert arr.attrs[key] == val, key
    assert arr.attrs["nbits"] == nbits and arr.attrs["nchans"] == nchans
    assert arr.attrs["nsamples"] == nsamp and arr.attrs["format"] == "filterbank"
    assert arr.attrs["path"] == str(path)


def test_sub_byte_packing_order_is_low_bits_first(tmp_path):
    data = np.array([[1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0]], float)
    path = tmp_path / "bits.fil"
    write_filterbank(path, {**HEADER, "nbits": 1}, data)
    assert data_after_header(path) == bytes([0b00000001, 0b00000010])
    write_filterbank(path, {**HEADER, "nbits": 2}, np.array([[3, 0, 1, 2]], float))
    assert data_after_header(path) == bytes([0b10_01_00_11])
    write_filterbank(path, {**HEADER, "nbits": 4}, np.array([[5, 12]], float))
    assert data_after_header(path) == bytes([0xC5])


def test_writer_rounds_and_clips_integers(tmp_path):
    path = tmp_path / "clip.fil"
    write_filterbank(path, {**HEADER, "nbits": 8}, np.array([[-3.0, 2.6, 300.0, 7.4]]))
    np.testing.assert_array_equal(open_observation(path).values, [[0, 3, 255, 7]])
    with pytest.raises(ValueError):
        write_filterbank(path, {**HEADER, "nbits": 8}, np.array([[np.nan, 1.0]]))


def test_writer_rejects_bad_arguments(tmp_path):
    data = np.zeros((2, 8), np.float32)
    with pytest.raises(ValueError, match="nchans"):
        write_filterbank(tmp_path / "a.fil", {**HEADER, "nchans": 9}, data)
    with pytest.raises(ValueError, match="unknown"):
        write_filterbank(tmp_path / "a.fil", {**HEADER, "bogus": 1}, data)
    with pytest.raises(ValueError, match="nbits"):
        write_filterbank(tmp_path / "a.fil", {**HEADER, "nbits": 3}, data)
    with pytest.raises(ValueError):
        write_bl_h5(tmp_path / "a.h5", HEADER, data, compression="zip")
    assert list(tmp_path.iterdir()) == []  # nothing half-written left behind


def test_writers_accept_reader_attrs_and_nfpc(tmp_path):
    data = np.arange(32, dtype=np.float32).reshape(2, 16)
    write_filterbank(tmp_path / "a.fil", {**HEADER, "nfpc": 4}, data)
    attrs = dict(open_observation(tmp_path / "a.fil").attrs)
    assert attrs["nfpc"] == 4
    write_filterbank(tmp_path / "b.fil", attrs, data)  # nsamples/format/path dropped
    write_bl_h5(tmp_path / "b.h5", attrs, data)
    assert open_observation(tmp_path / "b.h5").attrs["nfpc"] == 4
    assert data_after_header(tmp_path / "a.fil") == data_after_header(tmp_path / "b.fil")


def test_filterbank_header_key_order(tmp_path):
    path = tmp_path / "order.fil"
    write_filterbank(path, {**HEADER, "nfpc": 8}, np.zeros((1, 8), np.float32))
    blob = path.read_bytes()
    order = ["telescope_id", "machine_id", "data_type", "rawdatafile", "source_name",
             "src_raj", "src_dej", "az_start", "za_start", "tstart", "tsamp", "nbits",
             "fch1", "foff", "nchans", "nifs", "nfpc", "HEADER_END"]
    positions = [blob.find(struct.pack("<i", len(k)) + k.encode()) for k in order]
    assert all(p > 0 for p in positions) and positions == sorted(positions)


@pytest.mark.parametrize("compression", ["bitshuffle", None])
def test_fil_and_h5_of_same_data_agree(tmp_path, compression):
    rng = np.random.default_rng(7)
    data = rng.normal(0, 1, (6, 320)).astype(np.float32)
    write_filterbank(tmp_path / "x.fil", HEADER, data)
    write_bl_h5(tmp_path / "x.h5", HEADER, data, compression=compression)
    fil, h5 = open_observation(tmp_path / "x.fil"), open_observation(tmp_path / "x.h5")
    np.testing.assert_array_equal(fil.values, h5.values)
    np.testing.assert_array_equal(fil.values, data)
    np.testing.assert_array_equal(fil.time.values, h5.time.values)
    np.testing.assert_array_equal(fil.freq.values, h5.freq.values)
    for key in HEADER:
        assert fil.attrs[key] == h5.attrs[key], key
    assert h5.attrs["format"] == "bl_h5" and h5.attrs["nsamples"] == 6


def test_bl_h5_layout_written(tmp_path):
    data = np.ones((3, 40), np.float32)
    write_bl_h5(tmp_path / "x.h5", HEADER, data)
    with h5py.File(tmp_path / "x.h5", "r") as fh:
        assert fh.attrs["CLASS"] == "FILTERBANK" and fh.attrs["VERSION"] == "1.0"
        dset = fh["data"]
        assert dset.shape == (3, 1, 40) and dset.dtype == np.float32
        assert str(bl_h5.BITSHUFFLE_FILTER_ID) in dset._filters
        assert dset.attrs["source_name"] == "TEST_SRC" and dset.attrs["nchans"] == 40


def test_coordinates_and_attrs_types(tmp_path):
    data = np.zeros((4, 16), np.float32)
    write_filterbank(tmp_path / "c.fil", HEADER, data)
    arr = open_observation(tmp_path / "c.fil")
    assert arr.time.dtype == np.float64 and arr.freq.dtype == np.float64
    np.testing.assert_allclose(arr.time.values,
                               HEADER["tstart"] + np.arange(4) * HEADER["tsamp"] / 86400.0,
                               rtol=0, atol=1e-12)
    np.testing.assert_allclose(arr.freq.values, HEADER["fch1"] + np.arange(16) * HEADER["foff"],
                               rtol=0, atol=1e-9)
    assert all(type(v) in (str, int, float) for v in arr.attrs.values())
    assert read_header(tmp_path / "c.fil")["nsamples"] == 4


def test_lazy_slicing_reads_only_requested_range(tmp_path, monkeypatch):
    rng = np.random.default_rng(3)
    data = rng.normal(size=(4, 4096)).astype(np.float32)
    write_filterbank(tmp_path / "l.fil", HEADER, data)
    write_bl_h5(tmp_path / "l.h5", HEADER, data)
    reads = []
    orig_fil, orig_h5 = filterbank.FilterbankArray._read, bl_h5.BLH5Array.__getitem__
    monkeypatch.setattr(filterbank.FilterbankArray, "_read",
                        lambda self, r, c: reads.append(c) or orig_fil(self, r, c))
    monkeypatch.setattr(bl_h5.BLH5Array, "__getitem__",
                        lambda self, k: reads.append(k[1]) or orig_h5(self, k))
    for name in ("l.fil", "l.h5"):
        reads.clear()
        arr = open_observation(tmp_path / name, chunk_channels=1024)
        if name.endswith(".fil"):  # (.h5 chunks follow the file's 4096-channel HDF5 chunk)
            assert arr.data.chunks[1] == (1024,) * 4
        np.testing.assert_array_equal(arr.isel(freq=slice(1100, 1200)).values,
                                      data[:, 1100:1200])
        assert reads == [slice(1100, 1200)], (name, reads)


def test_sub_byte_lazy_chunks_match_full_read(tmp_path):
    rng = np.random.default_rng(11)
    data = rng.integers(0, 4, (3, 200)).astype(float)
    write_filterbank(tmp_path / "s.fil", {**HEADER, "nbits": 2}, data)
    arr = open_observation(tmp_path / "s.fil", chunk_channels=30)
    assert all(c % 4 == 0 for c in arr.data.chunks[1][:-1])
    np.testing.assert_array_equal(arr.values, data)
    np.testing.assert_array_equal(arr.isel(freq=slice(3, 97)).values, data[:, 3:97])
    np.testing.assert_array_equal(arr.isel(time=1, freq=[5, 2, 199]).values, data[1, [5, 2, 199]])


def test_h5_chunks_align_with_hdf5_chunks(tmp_path):
    write_bl_h5(tmp_path / "a.h5", HEADER, np.zeros((2, 3000), np.float32))
    with h5py.File(tmp_path / "a.h5", "r") as fh:
        hchunk = fh["data"].chunks[2]
    arr = open_observation(tmp_path / "a.h5", chunk_channels=10)
    assert arr.data.chunks[1][0] == hchunk


def test_default_chunks():
    assert filterbank.chunk_channels_for(1024, 16, None) == 1024  # whole band
    assert filterbank.chunk_channels_for(2**22, 16, None) == 2**20
    assert filterbank.chunk_channels_for(2**22, 279, None) * 279 <= 2**25  # bounded chunk
    assert filterbank.chunk_channels_for(2**22, 279, None, multiple=1024) % 1024 == 0
    with pytest.raises(ValueError):
        filterbank.chunk_channels_for(100, 1, 0)


def test_lazy_array_pickles_small(tmp_path):
    data = np.arange(4 * 2048, dtype=np.float32).reshape(4, 2048)
    for name, writer in (("p.fil", write_filterbank), ("p.h5", write_bl_h5)):
        writer(tmp_path / name, HEADER, data)
        darr = open_observation(tmp_path / name).data
        blob = pickle.dumps(darr)
        assert len(blob) < data.nbytes / 2
        np.testing.assert_array_equal(pickle.loads(blob).compute(), data)


def test_file_shrunk_after_open_raises_input_file_error(tmp_path):
    path = tmp_path / "shrink.fil"
    write_filterbank(path, HEADER, np.ones((4, 64), np.float32))
    arr = open_observation(path)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(InputFileError, match="shrink.fil"):
        arr.values


def test_written_files_have_ordinary_permissions(tmp_path):
    write_filterbank(tmp_path / "p.fil", HEADER, np.ones((1, 8), np.float32))
    write_bl_h5(tmp_path / "p.h5", HEADER, np.ones((1, 8), np.float32))
    for name in ("p.fil", "p.h5"):
        assert (tmp_path / name).stat().st_mode & 0o044, name  # group/other can read
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.fil", "p.h5"]


def test_input_file_error_pickles():
    err = pickle.loads(pickle.dumps(InputFileError("/x/y.fil", "bad thing")))
    assert str(err) == "/x/y.fil: bad thing"


# ----------------------------------------------------------------- bad files


def _fil(tmp_path, name, items, payload: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(raw_header(items) + payload)
    return path


def _bad_fil_cases(tmp_path) -> list[Path]:
    ok = np.zeros((2, 8), "<f4").tobytes()  # 2 spectra of 8 channels x 32 bit
    full = raw_header(base_items()) + ok
    cases = [
        ("empty.fil", b""),
        ("garbage.fil", np.random.default_rng(0).bytes(3000)),
        ("trunc_header.fil", full[:40]),
        ("no_header_end.fil", raw_header(base_items())[:-10]),
    ]
    paths = [tmp_path / name for name, _ in cases]
    for path, (_, blob) in zip(paths, cases):
        path.write_bytes(blob)
    specs = {
        "trunc_data.fil": (base_items(), ok[:-3]),
        "header_only.fil": (base_items(), b""),
        "nsamples_lies.fil": (base_items(nsamples=("i", 5)), ok),
        "nchans_zero.fil": (base_items(nchans=("i", 0)), ok),
        "nchans_negative.fil": (base_items(nchans=("i", -8)), ok),
        "nchans_huge.fil": (base_items(nchans=("i", 2**31 - 1)), ok),
        "nifs2.fil": (base_items(nifs=("i", 2)), ok),
        "nbits3.fil": (base_items(nbits=("i", 3)), ok),
        "nbits64.fil": (base_items(nbits=("i", 64)), ok),
        "tsamp_nan.fil": (base_items(tsamp=("d", float("nan"))), ok),
        "tsamp_zero.fil": (base_items(tsamp=("d", 0.0)), ok),
        "foff_zero.fil": (base_items(foff=("d", 0.0)), ok),
        "fch1_inf.fil": (base_items(fch1=("d", float("inf"))), ok),
        "no_tsamp.fil": (base_items(tsamp=None), ok),
        "unknown_key.fil": (base_items() + [("mystery", "i", 1)], ok),
        "bad_key_length.fil": (base_items() + [("x" * 200, "i", 1)], ok),
        "bad_string_length.fil": (base_items(source_name=("b", struct.pack("<i", 10**9))), ok),
        "duplicate_key.fil": (base_items() + [("nbits", "i", 32)], ok),
        "time_series.fil": (base_items(data_type=("i", 2)), ok),
    }
    for name, (items, payload) in specs.items():
        paths.append(_fil(tmp_path, name, items, payload))
    return paths


def _bad_h5_cases(tmp_path) -> list[Path]:
    attrs = {"fch1": 1500.0, "foff": -0.5, "tstart": 60000.0, "tsamp": 1.0,
             "nchans": 8, "nifs": 1, "nbits": 32, "source_name": "SRC"}

    def make(name, shape=(2, 1, 8), over=None, dset_name="data", dtype=np.float32):
        path = tmp_path / name
        with h5py.File(path, "w") as fh:
            fh.attrs["CLASS"] = "FILTERBANK"
            dset = fh.create_dataset(dset_name, data=np.zeros(shape, dtype))
            for k, v in {**attrs, **(over or {})}.items():
                if v is not None:
                    dset.attrs[k] = v
        return path

    paths = [
        make("no_data.h5", dset_name="spectra"),
        make("ndim2.h5", shape=(2, 8)),
        make("nchans_disagrees.h5", over={"nchans": 9}),
        make("nchans_absurd.h5", over={"nchans": 2**40}),
        make("nifs2.h5", shape=(2, 2, 8), over={"nifs": 2}),
        make("zero_spectra.h5", shape=(0, 1, 8)),
        make("tsamp_nan.h5", over={"tsamp": float("nan")}),
        make("foff_zero.h5", over={"foff": 0.0}),
        make("no_tsamp.h5", over={"tsamp": None}),
        make("foff_string.h5", over={"foff": "fast"}),
        make("nchans_fraction.h5", over={"nchans": 8.5}),
        make("bool_data.h5", dtype=np.bool_),
    ]
    for name, blob in (("empty.h5", b""), ("garbage.h5", b"not hdf5 at all" * 50),
                       ("hdf5_magic_then_garbage.h5", b"\x89HDF\r\n\x1a\n" + b"\x00" * 600)):
        (tmp_path / name).write_bytes(blob)
        paths.append(tmp_path / name)
    fil_as_h5 = tmp_path / "really_fil.h5"
    write_filterbank(fil_as_h5, HEADER, np.zeros((1, 8), np.float32))
    paths.append(fil_as_h5)
    h5_as_fil = tmp_path / "really_h5.fil"
    write_bl_h5(h5_as_fil, HEADER, np.zeros((1, 8), np.float32))
    paths.append(h5_as_fil)
    with h5py.File(tmp_path / "wrong_class.h5", "w") as fh:
        fh.attrs["CLASS"] = "IMAGE"
    paths.append(tmp_path / "wrong_class.h5")
    return paths


def test_every_bad_file_raises_input_file_error(tmp_path):
    paths = _bad_fil_cases(tmp_path) + _bad_h5_cases(tmp_path)
    (tmp_path / "obs.txt").write_bytes(b"x")
    (tmp_path / "adir.fil").mkdir()
    paths += [tmp_path / "obs.txt", tmp_path / "missing.fil", tmp_path / "adir.fil"]
    for path in paths:
        for func in (read_header, open_observation):
            with pytest.raises(InputFileError) as exc_info:
                func(path)
            assert_input_error(path, exc_info)


def test_bad_file_reasons_are_specific(tmp_path):
    paths = {p.name: p for p in _bad_fil_cases(tmp_path) + _bad_h5_cases(tmp_path)}
    expect = {
        "empty.fil": "empty", "trunc_header.fil": "truncated", "trunc_data.fil": "whole number",
        "header_only.fil": "zero spectra", "nsamples_lies.fil": "nsamples",
        "nchans_zero.fil": "nchans", "nifs2.fil": "nifs", "nbits3.fil": "nbits",
        "tsamp_nan.fil": "tsamp", "foff_zero.fil": "foff", "unknown_key.fil": "mystery",
        "no_data.h5": "'data'", "ndim2.h5": "shape", "nchans_disagrees.h5": "nchans",
        "nchans_absurd.h5": "nchans", "garbage.h5": "HDF5", "really_h5.fil": "HDF5",
    }
    for name, word in expect.items():
        with pytest.raises(InputFileError, match=word):
            read_header(paths[name])


def test_supported_suffixes():
    assert SUPPORTED_SUFFIXES == (".fil", ".h5")


# ----------------------------------------------------------------- real files

needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real data not found at {REAL}")


def _real(name: str) -> Path:
    path = REAL / name
    if not path.exists():
        pytest.skip(f"{path} absent")
    return path


@needs_real
def test_real_setigen_fil_and_h5_agree():
    fil = open_observation(_real("setigen_sample_GBT_SgrB2.fil"))
    h5 = open_observation(_real("setigen_sample_GBT_SgrB2.h5"))
    assert fil.shape == h5.shape == (32, 1024)
    independent = np.frombuffer(data_after_header(_real("setigen_sample_GBT_SgrB2.fil")),
                                dtype="<f4").reshape(32, 1024)
    np.testing.assert_array_equal(fil.values, independent)
    np.testing.assert_array_equal(h5.values, independent)
    np.testing.assert_array_equal(fil.time.values, h5.time.values)
    np.testing.assert_array_equal(fil.freq.values, h5.freq.values)
    assert fil.attrs["source_name"] == h5.attrs["source_name"] == "DIAG_SGR_B2"
    assert fil.attrs["telescope_id"] == 6 and h5.attrs["nbits"] == 32
    np.testing.assert_allclose(fil.attrs["foff"], -1.397e-6, rtol=1e-3)
    np.testing.assert_allclose(fil.attrs["tsamp"], 1.4317, rtol=1e-4)


@needs_real
def test_real_parkes_sub_byte_files():
    ref = open_observation(_real("sigpyproc3_parkes_8bit_1.fil"))
    assert ref.shape == (4096, 832) and ref.attrs["nbits"] == 8
    ref_vals = ref.values
    independent8 = np.frombuffer(data_after_header(_real("sigpyproc3_parkes_8bit_1.fil")),
                                 np.uint8).reshape(4096, 832)
    np.testing.assert_array_equal(ref_vals, independent8)
    for nbits, corr in ((4, 0.98), (2, 0.93), (1, 0.78)):
        path = _real(f"sigpyproc3_parkes_{nbits}bit.fil")
        arr = open_observation(path)
        assert arr.shape == (4096, 832) and arr.attrs["nbits"] == nbits
        vals = arr.values
        np.testing.assert_array_equal(vals, decode_independently(data_after_header(path),
                                                                 nbits, 832))
        assert vals.min() >= 0 and vals.max() <= 2**nbits - 1
        r = np.corrcoef(vals.ravel(), ref_vals.ravel())[0, 1]
        assert abs(r - corr) < 0.015, (nbits, r)
    second = open_observation(_real("sigpyproc3_parkes_8bit_2.fil"))
    assert second.attrs["tstart"] > ref.attrs["tstart"]
    np.testing.assert_allclose(ref.freq.values[[0, -1]], [4030.0, 4030.0 - 831 * 4.0])
    np.testing.assert_allclose(ref.attrs["tsamp"], 0.000512, rtol=1e-6)


@needs_real
def test_real_ddo210_slice():
    path = _real("bl_gbt_DDO210_slice.fil")
    hdr = read_header(path)
    arr = open_observation(path)
    assert arr.shape == (16, 16384) and hdr["nsamples"] == 16
    np.testing.assert_allclose(hdr["foff"], -2.794e-6, rtol=1e-3)
    np.testing.assert_allclose(hdr["tsamp"], 18.2536, rtol=1e-5)
    assert hdr["source_name"] == "DDO210" and hdr["fch1"] == 1000.0
    np.testing.assert_allclose(arr.time.values,
                               hdr["tstart"] + np.arange(16) * hdr["tsamp"] / 86400.0)
    np.testing.assert_allclose(arr.freq.values, 1000.0 + np.arange(16384) * hdr["foff"])
    independent = np.frombuffer(data_after_header(path), "<f4").reshape(16, 16384)
    np.testing.assert_array_equal(arr.isel(freq=slice(8000, 8400)).values,
                                  independent[:, 8000:8400])


@needs_real
def test_real_files_all_open():
    for path in sorted(REAL.glob("*")):
        if path.suffix in SUPPORTED_SUFFIXES:
            hdr = read_header(path)
            assert hdr["nifs"] == 1 and hdr["nsamples"] > 0, path.name
