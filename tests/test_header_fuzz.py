"""Property tests: no byte string makes the readers hang, allocate hugely or raise
anything but InputFileError."""

from __future__ import annotations

import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seti_auditor.errors import InputFileError
from seti_auditor.formats import open_observation, read_header

FUZZ = settings(max_examples=150, deadline=1000, database=None,
                suppress_health_check=[HealthCheck.too_slow])
INT_KEYS = ["nchans", "nbits", "nifs", "nsamples", "telescope_id", "machine_id",
            "data_type", "nfpc", "nbeams", "ibeam"]
DOUBLE_KEYS = ["tstart", "tsamp", "fch1", "foff", "src_raj", "src_dej", "az_start"]
STRING_KEYS = ["source_name", "rawdatafile"]


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<i", len(raw)) + raw


def valid_file(nchans: int = 16, nsamp: int = 3, nbits: int = 8) -> bytes:
    head = (_s("HEADER_START") + _s("source_name") + _s("SRC")
            + _s("tstart") + struct.pack("<d", 60000.0) + _s("tsamp") + struct.pack("<d", 1.0)
            + _s("fch1") + struct.pack("<d", 1400.0) + _s("foff") + struct.pack("<d", -1.0)
            + _s("nchans") + struct.pack("<i", nchans) + _s("nbits") + struct.pack("<i", nbits)
            + _s("nifs") + struct.pack("<i", 1) + _s("HEADER_END"))
    return head + bytes(range(256)) * (nchans * nsamp * nbits // 8 // 256 + 1)


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("fuzz")


def check_outcome(path) -> None:
    """read_header gives a consistent dict or InputFileError; nothing else."""
    try:
        hdr = read_header(path)
    except InputFileError as exc:
        assert path.name in str(exc) and exc.reason
        with pytest.raises(InputFileError):
            open_observation(path)
        return
    assert isinstance(hdr, dict)
    assert hdr["nsamples"] >= 1 and 1 <= hdr["nchans"] < 2**31 and hdr["nifs"] == 1
    arr = open_observation(path)
    assert arr.shape == (hdr["nsamples"], hdr["nchans"])
    vals = arr.values
    assert vals.dtype == np.float32


@FUZZ
@given(blob=st.binary(max_size=4096))
def test_any_bytes_as_fil(fuzz_dir, blob):
    path = fuzz_dir / "any.fil"
    path.write_bytes(blob)
    check_outcome(path)


@FUZZ
@given(blob=st.binary(max_size=2048))
def test_any_bytes_as_h5(fuzz_dir, blob):
    path = fuzz_dir / "any.h5"
    path.write_bytes(blob)
    with pytest.raises(InputFileError):
        read_header(path)


@FUZZ
@given(data=st.data(), nbits=st.sampled_from([1, 2, 4, 8, 16, 32]))
def test_mutated_valid_headers(fuzz_dir, data, nbits):
    blob = bytearray(valid_file(nbits=nbits))
    flips = data.draw(st.lists(st.tuples(st.integers(0, 255), st.integers(0, 255)),
                               max_size=4))
    for pos, val in flips:
        blob[pos % len(blob)] = val
    cut = data.draw(st.none() | st.integers(0, len(blob)))
    path = fuzz_dir / "mutated.fil"
    path.write_bytes(bytes(blob[:cut]))
    check_outcome(path)


def _key_value():
    ints = st.tuples(st.sampled_from(INT_KEYS), st.integers(-2**31, 2**31 - 1)).map(
        lambda kv: _s(kv[0]) + struct.pack("<i", kv[1]))
    doubles = st.tuples(st.sampled_from(DOUBLE_KEYS), st.floats(allow_nan=True)).map(
        lambda kv: _s(kv[0]) + struct.pack("<d", kv[1]))
    strings = st.tuples(st.sampled_from(STRING_KEYS), st.text(max_size=30)).map(
        lambda kv: _s(kv[0]) + _s(kv[1]))
    lengths = st.integers(-2**31, 2**31 - 1).map(lambda n: struct.pack("<i", n))
    return st.one_of(ints, doubles, strings, lengths)


@FUZZ
@given(fields=st.lists(_key_value(), max_size=12), tail=st.binary(max_size=600))
def test_structured_random_headers(fuzz_dir, fields, tail):
    path = fuzz_dir / "structured.fil"
    path.write_bytes(_s("HEADER_START") + b"".join(fields) + _s("HEADER_END") + tail)
    check_outcome(path)


def test_parser_memory_is_bounded(tmp_path):
    rng = np.random.default_rng(5)
    path = tmp_path / "big.fil"
    # a header claiming 2**31-1 channels and a 1-GiB string, then lots of garbage
    path.write_bytes(_s("HEADER_START") + _s("nchans") + struct.pack("<i", 2**31 - 1)
                     + _s("source_name") + struct.pack("<i", 2**30) + rng.bytes(2**20))
    tracemalloc.start()
    try:
        with pytest.raises(InputFileError):
            read_header(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20
