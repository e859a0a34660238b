"""Header parsers under hostile bytes: every example bounded in time and in memory.

tests/test_header_fuzz.py checks the outcomes (a valid header or InputFileError) with a
per-example deadline, which cannot stop a parser that never returns, and bounds memory for
one hand-made file. Here every example runs under a hard alarm (a hang fails the example
instead of the run) and tracemalloc (Python and numpy allocations), and the HDF5 reader gets
hostile attributes and shapes as well as bytes.
"""

from __future__ import annotations

import contextlib
import signal
import struct
import tracemalloc

import h5py
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seti_auditor.errors import InputFileError
from seti_auditor.formats import read_header

LIMITS = settings(max_examples=80, deadline=None, database=None,
                  suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SECONDS = 2.0  # wall-clock bound of one parse
PEAK_BYTES = 4 << 20  # allocation bound of one parse (the header read itself is at most 64 KiB)


class Hang(Exception):
    pass


@contextlib.contextmanager
def bounded():
    """Fail with Hang after SECONDS; assert the traced allocation peak stays under PEAK_BYTES."""
    def alarm(signum, frame):
        raise Hang(f"a parse ran longer than {SECONDS} s")

    old = signal.signal(signal.SIGALRM, alarm)
    tracemalloc.start()
    signal.setitimer(signal.ITIMER_REAL, SECONDS)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    assert peak < PEAK_BYTES, f"a parse allocated {peak} bytes"


def parse(path) -> None:
    with bounded():
        try:
            hdr = read_header(path)
        except InputFileError as exc:
            assert exc.reason and str(path) in str(exc)
            return
    assert 1 <= hdr["nchans"] < 2**31 and hdr["nsamples"] >= 1


def _s(text: str) -> bytes:
    raw = text.encode()
    return struct.pack("<i", len(raw)) + raw


INTS = st.sampled_from([0, 1, -1, 7, 2**16, 2**30, 2**31 - 1, -(2**31)])


@LIMITS
@given(nchans=INTS, nbits=st.sampled_from([1, 2, 4, 8, 16, 32, 0, 3, 64, -8]), nsamples=INTS,
       strlen=INTS, tail=st.binary(max_size=512))
def test_filterbank_headers_with_extreme_sizes(tmp_path_factory, nchans, nbits, nsamples, strlen, tail):
    path = tmp_path_factory.mktemp("fil", numbered=True) / "x.fil"
    head = (_s("HEADER_START") + _s("nchans") + struct.pack("<i", nchans) + _s("nbits") + struct.pack("<i", nbits)
            + _s("nsamples") + struct.pack("<i", nsamples) + _s("tstart") + struct.pack("<d", 60000.0)
            + _s("tsamp") + struct.pack("<d", 1.0) + _s("fch1") + struct.pack("<d", 1400.0)
            + _s("foff") + struct.pack("<d", -1.0) + _s("source_name") + struct.pack("<i", strlen) + b"SRC"
            + _s("HEADER_END"))
    path.write_bytes(head + tail)
    parse(path)


@LIMITS
@given(shape=st.tuples(st.integers(0, 3), st.integers(0, 3), st.integers(0, 9)),
       nchans=st.one_of(st.none(), INTS, st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=5)),
       nifs=st.one_of(st.none(), INTS), tsamp=st.floats(allow_nan=True, allow_infinity=True),
       chunked=st.booleans())
def test_bl_h5_with_hostile_attributes_and_shapes(tmp_path_factory, shape, nchans, nifs, tsamp, chunked):
    path = tmp_path_factory.mktemp("h5", numbered=True) / "x.h5"
    with h5py.File(path, "w") as fh:
        fh.attrs["CLASS"] = "FILTERBANK"
        kwargs = {"chunks": True} if chunked and 0 not in shape else {}
        dset = fh.create_dataset("data", shape=shape, dtype=np.float32, **kwargs)
        for key, value in (("nchans", nchans), ("nifs", nifs), ("tsamp", tsamp), ("fch1", 1400.0),
                           ("foff", -1.0), ("tstart", 60000.0), ("nbits", 32)):
            if value is not None:
                dset.attrs[key] = value
    parse(path)


@LIMITS
@given(blob=st.binary(max_size=4096), at=st.integers(0, 4096))
def test_hdf5_signature_followed_by_garbage(tmp_path_factory, blob, at):
    """HDF5 looks for its signature at 0, 512, 1024...: garbage around a real signature."""
    path = tmp_path_factory.mktemp("sig", numbered=True) / "x.h5"
    pos = (at // 512) * 512
    data = bytearray(blob.ljust(pos + 8, b"\0"))
    data[pos:pos + 8] = b"\x89HDF\r\n\x1a\n"
    path.write_bytes(bytes(data))
    parse(path)
