"""Sigproc filterbank (``.fil``): header parser, lazy reader and writer.

The header is a sequence of ``<int32 length><key>`` strings followed by a value
whose type the key determines (int32, float64, length-prefixed string, or one
byte for ``signed``), framed by ``HEADER_START`` / ``HEADER_END``. The data that
follow are spectra of ``nchans`` samples (``nifs`` must be 1), little-endian:
1/2/4-bit values packed low bits first within each byte, 8-bit and 16-bit
unsigned integers (8-bit signed when ``signed`` is 1), 32-bit float.

Parsing reads at most :data:`MAX_HEADER_BYTES` bytes and at most
:data:`MAX_HEADER_KEYS` keys, so no byte string can hang it or make it allocate
more than that; every failure raises :class:`~seti_auditor.errors.InputFileError`.
"""

from __future__ import annotations

import logging
import math
import os
import struct
import uuid
from pathlib import Path

import dask.array as da
import numpy as np
import xarray as xr
from dask.base import tokenize

from seti_auditor.errors import InputFileError

logger = logging.getLogger(__name__)

MAX_HEADER_BYTES = 64 * 1024  # a header longer than this is rejected
MAX_HEADER_KEYS = 256  # ... and so is one with more keys
MAX_KEY_LENGTH = 64  # longest accepted key name
MAX_STRING_LENGTH = 4096  # longest accepted string value
MAX_NCHANS = 2**31  # exclusive upper bound on nchans
DEFAULT_CHUNK_CHANNELS = 2**20  # dask chunk along freq when the caller gives none
DEFAULT_CHUNK_VALUES = 2**25  # ... shrunk so a default chunk holds at most 128 MiB of float32
SUPPORTED_NBITS = (1, 2, 4, 8, 16, 32)

INT_KEYS = (
    "telescope_id", "machine_id", "data_type", "barycentric", "pulsarcentric",
    "nbits", "nsamples", "nchans", "nifs", "nbeams", "ibeam", "nbins",
    "nfpc",  # fine channels per coarse channel (non-standard, written by rawspec)
)
DOUBLE_KEYS = (
    "tstart", "tsamp", "fch1", "foff", "refdm", "az_start", "za_start",
    "src_raj", "src_dej", "gal_l", "gal_b", "header_tol", "period",
)
STRING_KEYS = ("source_name", "rawdatafile")
BYTE_KEYS = ("signed",)
KNOWN_KEYS = frozenset(INT_KEYS + DOUBLE_KEYS + STRING_KEYS + BYTE_KEYS)
REQUIRED_KEYS = ("nchans", "nbits", "tstart", "tsamp", "fch1", "foff")
# Order in which write_filterbank emits keys; any other known key follows.
WRITE_ORDER = (
    "telescope_id", "machine_id", "data_type", "rawdatafile", "source_name",
    "src_raj", "src_dej", "az_start", "za_start", "tstart", "tsamp", "nbits",
    "fch1", "foff", "nchans", "nifs", "nfpc",
)
READER_KEYS = frozenset({"nsamples", "format", "path"})  # added by readers, not written
_HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


class _HeaderCursor:
    """Bounded reader over the first bytes of a file (the candidate header)."""

    def __init__(self, path: str, buf: bytes, file_size: int) -> None:
        self.path, self.buf, self.pos = path, buf, 0
        self.truncated_file = file_size <= len(buf)

    def take(self, n: int) -> bytes:
        if self.pos + n > len(self.buf):
            if self.truncated_file:
                raise InputFileError(self.path, "truncated sigproc header (no HEADER_END)")
            raise InputFileError(
                self.path, f"sigproc header longer than {MAX_HEADER_BYTES} bytes")
        out = self.buf[self.pos:self.pos + n]
        self.pos += n
        return out

    def int32(self) -> int:
        return struct.unpack("<i", self.take(4))[0]

    def float64(self) -> float:
        return struct.unpack("<d", self.take(8))[0]

    def key(self) -> str:
        n = self.int32()
        if not 1 <= n <= MAX_KEY_LENGTH:
            raise InputFileError(self.path, f"bad sigproc header key length {n}")
        raw = self.take(n)
        if not (raw.isascii() and raw.decode("ascii").isprintable()):
            raise InputFileError(self.path, f"sigproc header key is not printable ASCII: {raw!r}")
        return raw.decode("ascii")

    def string(self, key: str) -> str:
        n = self.int32()
        if not 0 <= n <= MAX_STRING_LENGTH:
            raise InputFileError(self.path, f"bad length {n} for header string {key!r}")
        return self.take(n).decode("utf-8", errors="replace").rstrip("\x00")


def _read_value(cur: _HeaderCursor, key: str) -> int | float | str:
    """Read the value of ``key`` at the cursor, by the key's sigproc type."""
    if key in INT_KEYS:
        return cur.int32()
    if key in DOUBLE_KEYS:
        return cur.float64()
    if key in STRING_KEYS:
        return cur.string(key)
    if key in BYTE_KEYS:
        return cur.take(1)[0]
    if key in ("FREQUENCY_START", "fchannel", "FREQUENCY_END"):
        raise InputFileError(cur.path, "per-channel frequency tables are not supported")
    raise InputFileError(
        cur.path, f"unknown sigproc header key {key!r} (its value size is unknown)")


def parse_header_bytes(path: str, buf: bytes, file_size: int) -> tuple[dict, int]:
    """Parse a sigproc header from ``buf`` (the first bytes of ``path``).

    Parameters
    ----------
    path : str
        File name, for error messages only.
    buf : bytes
        At most :data:`MAX_HEADER_BYTES` leading bytes of the file.
    file_size : int
        Size of the whole file in bytes.

    Returns
    -------
    header : dict
        Key -> value (int, float or str), in file order.
    header_length : int
        Offset of the first data byte.
    """
    if file_size == 0:
        raise InputFileError(path, "empty file (0 bytes)")
    if buf.startswith(_HDF5_SIGNATURE):
        raise InputFileError(path, "file is HDF5, not a sigproc filterbank")
    cur = _HeaderCursor(path, buf, file_size)
    if len(buf) < 16 or buf[:16] != struct.pack("<i", 12) + b"HEADER_START":
        raise InputFileError(path, "not a sigproc filterbank (no HEADER_START)")
    cur.pos = 16
    header: dict = {}
    for _ in range(MAX_HEADER_KEYS):
        key = cur.key()
        if key == "HEADER_END":
            return header, cur.pos
        if key in header:
            raise InputFileError(path, f"duplicate sigproc header key {key!r}")
        header[key] = _read_value(cur, key)
    raise InputFileError(path, f"sigproc header has more than {MAX_HEADER_KEYS} keys")


def validate_values(path: str, header: dict) -> None:
    """Check the physical header values shared by filterbank and BL HDF5.

    Raises :class:`InputFileError` for a missing required key, ``nchans``
    outside ``1 .. 2**31 - 1``, ``nifs != 1``, non-positive or non-finite
    ``tsamp``, zero or non-finite ``foff``, non-finite ``fch1``/``tstart``.
    """
    missing = [k for k in REQUIRED_KEYS if k not in header]
    if missing:
        raise InputFileError(path, f"header lacks required key(s) {', '.join(missing)}")
    nchans, nifs = header["nchans"], header.get("nifs", 1)
    if not 1 <= nchans < MAX_NCHANS:
        raise InputFileError(path, f"absurd nchans={nchans} (must be 1 .. 2**31-1)")
    if nifs != 1:
        raise InputFileError(path, f"nifs={nifs}: only single-IF (total power) data are supported")
    tsamp, foff = header["tsamp"], header["foff"]
    if not (math.isfinite(tsamp) and tsamp > 0):
        raise InputFileError(path, f"tsamp={tsamp} must be finite and > 0")
    if not (math.isfinite(foff) and foff != 0):
        raise InputFileError(path, f"foff={foff} must be finite and non-zero")
    for key in ("fch1", "tstart"):
        if not math.isfinite(header[key]):
            raise InputFileError(path, f"{key}={header[key]} is not finite")


def _validate_layout(path: str, header: dict, data_bytes: int) -> int:
    """Check nbits and the data length against the header; return nsamples."""
    nbits = header["nbits"]
    if nbits not in SUPPORTED_NBITS:
        raise InputFileError(path, f"unsupported nbits={nbits} (supported: {SUPPORTED_NBITS})")
    if header.get("data_type", 1) not in (0, 1):
        raise InputFileError(path, f"data_type={header['data_type']} is not filterbank data")
    bits = header["nchans"] * nbits
    if bits % 8:
        raise InputFileError(
            path, f"a spectrum of {header['nchans']} x {nbits}-bit values is not a whole byte")
    spectrum_bytes = bits // 8
    if data_bytes <= 0:
        raise InputFileError(path, "no data after the header (zero spectra)")
    if data_bytes % spectrum_bytes:
        raise InputFileError(
            path, f"data length {data_bytes} B is not a whole number of {spectrum_bytes}-B "
            "spectra (truncated mid-spectrum?)")
    nsamples = data_bytes // spectrum_bytes
    claimed = header.get("nsamples", 0)
    if claimed and claimed != nsamples:
        raise InputFileError(
            path, f"header nsamples={claimed} disagrees with the data ({nsamples} spectra)")
    return nsamples


def stat_size(path: str) -> int:
    try:
        st = os.stat(path)
    except OSError as exc:
        raise InputFileError(path, f"cannot open: {exc.strerror or exc}") from None
    if not os.path.isfile(path):
        raise InputFileError(path, "not a regular file")
    return st.st_size


def read_header_and_offset(path: str | os.PathLike) -> tuple[dict, int]:
    """Read and fully validate a filterbank header without reading data.

    Returns
    -------
    header : dict
        The sigproc keys plus ``nsamples`` (spectra in the file).
    header_length : int
        Byte offset of the data.
    """
    path = os.fspath(path)
    size = stat_size(path)
    try:
        with open(path, "rb") as fh:
            buf = fh.read(MAX_HEADER_BYTES)
    except OSError as exc:
        raise InputFileError(path, f"cannot read: {exc.strerror or exc}") from None
    header, offset = parse_header_bytes(path, buf, size)
    validate_values(path, header)
    header["nsamples"] = _validate_layout(path, header, size - offset)
    header.setdefault("nifs", 1)
    return header, offset


def read_header(path: str | os.PathLike) -> dict:
    """Validated header of a filterbank file plus ``nsamples``, ``format``, ``path``."""
    header, _ = read_header_and_offset(path)
    return {**header, "format": "filterbank", "path": os.fspath(path)}


def unpack_low_first(packed: np.ndarray, nbits: int) -> np.ndarray:
    """Unpack sub-byte values stored low bits first along the last axis.

    ``packed`` of shape ``(..., nbytes)`` uint8 becomes ``(..., nbytes * 8 // nbits)``.
    """
    per_byte = 8 // nbits
    shifts = np.arange(per_byte, dtype=np.uint8) * nbits
    vals = (packed[..., None] >> shifts) & np.uint8((1 << nbits) - 1)
    return vals.reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)


def pack_low_first(values: np.ndarray, nbits: int) -> np.ndarray:
    """Inverse of :func:`unpack_low_first`; the last axis must fill whole bytes."""
    per_byte = 8 // nbits
    v = values.astype(np.uint8).reshape(*values.shape[:-1], -1, per_byte)
    shifts = np.arange(per_byte, dtype=np.uint8) * nbits
    return np.bitwise_or.reduce(v << shifts, axis=-1).astype(np.uint8)


def _axis_read(k, n: int) -> tuple[slice, object]:
    """Contiguous range to read along one axis and the index to apply after it."""
    if isinstance(k, slice):
        start, stop, step = k.indices(n)
        if step == 1:
            return slice(start, max(start, stop)), slice(None)
        return slice(0, n), k
    if isinstance(k, (int, np.integer)) and -n <= k < n:
        i = int(k) % n
        return slice(i, i + 1), 0
    idx = np.asarray(k)
    if idx.dtype.kind in "iu" and idx.size and idx.min() >= -n and idx.max() < n:
        idx = idx % n
        lo = int(idx.min())
        return slice(lo, int(idx.max()) + 1), idx - lo
    return slice(0, n), k


def normalise_key(key, shape) -> tuple[tuple[slice, ...], tuple]:
    """Split an index into contiguous ranges to read plus a residual numpy index.

    Unit-step slices are read exactly; integers and integer arrays read the
    smallest covering range; anything else reads the whole axis. The residual
    index is then applied by numpy to what was read.
    """
    if not isinstance(key, tuple):
        key = (key,)
    key = key + (slice(None),) * (len(shape) - len(key))
    pairs = [_axis_read(k, n) for k, n in zip(key, shape)]
    return tuple(p[0] for p in pairs), tuple(p[1] for p in pairs)


class FilterbankArray:
    """Picklable array-like over a filterbank's data; each read opens a memmap.

    Indexing returns float32 and touches only the bytes of the requested
    rows and channel range, so it can back a dask array cheaply.
    """

    def __init__(self, path: str, offset: int, nsamples: int, nchans: int,
                 nbits: int, signed: bool = False) -> None:
        self.path, self.offset, self.nbits, self.signed = path, offset, nbits, signed
        self.shape = (nsamples, nchans)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def _raw_dtype(self) -> np.dtype:
        if self.nbits == 8:
            return np.dtype(np.int8 if self.signed else np.uint8)
        return np.dtype({16: "<u2", 32: "<f4"}.get(self.nbits, np.uint8))

    def _memmap(self) -> np.memmap:
        row = self.shape[1] * self.nbits // 8
        dt = self._raw_dtype()
        try:
            return np.memmap(self.path, dtype=dt, mode="r", offset=self.offset,
                             shape=(self.shape[0], row // dt.itemsize))
        except (OSError, ValueError) as exc:  # file removed or shrunk since it was opened
            raise InputFileError(self.path, f"cannot map data: {exc}") from None

    def _read(self, rows: slice, chans: slice) -> np.ndarray:
        if rows.stop <= rows.start or chans.stop <= chans.start:
            return np.empty((rows.stop - rows.start, chans.stop - chans.start), np.float32)
        mm = self._memmap()
        if self.nbits >= 8:
            return np.asarray(mm[rows, chans], dtype=np.float32)
        per_byte = 8 // self.nbits
        b0, b1 = chans.start // per_byte, -(-chans.stop // per_byte)
        vals = unpack_low_first(np.asarray(mm[rows, b0:b1]), self.nbits)
        first = chans.start - b0 * per_byte
        return vals[:, first:first + chans.stop - chans.start].astype(np.float32)

    def __getitem__(self, key) -> np.ndarray:
        reads, rest = normalise_key(key, self.shape)
        out = self._read(*reads)
        return out if all(r == slice(None) for r in rest) else out[rest]


def chunk_channels_for(nchans: int, nsamples: int, chunk_channels: int | None,
                       multiple: int = 1) -> int:
    """Channels per dask chunk, a multiple of ``multiple`` (or the whole band).

    The default is :data:`DEFAULT_CHUNK_CHANNELS`, reduced for long files so
    that a chunk holds at most :data:`DEFAULT_CHUNK_VALUES` values.
    """
    if chunk_channels is None:
        want = min(DEFAULT_CHUNK_CHANNELS, max(1, DEFAULT_CHUNK_VALUES // max(1, nsamples)))
    else:
        want = int(chunk_channels)
    if want < 1:
        raise ValueError(f"chunk_channels must be >= 1, got {chunk_channels}")
    want = max(multiple, (want // multiple) * multiple)
    return min(nchans, want)


def netcdf_safe(header: dict) -> dict:
    """Keep only str/int/float values, converted to plain Python types."""
    out = {}
    for key, val in header.items():
        if isinstance(val, (bytes, np.bytes_)):
            val = bytes(val).decode("utf-8", errors="replace").rstrip("\x00")
        elif isinstance(val, (bool, np.bool_)):
            val = int(val)
        elif isinstance(val, np.generic) and val.ndim == 0:
            val = val.item()
        if isinstance(val, (str, int, float)):
            out[key] = val
    return out


def to_dataarray(darr: da.Array, header: dict, fmt: str, path: str) -> xr.DataArray:
    """Wrap a lazy (time, freq) array with MJD/MHz coordinates and header attrs."""
    nsamples, nchans = darr.shape
    time = header["tstart"] + np.arange(nsamples, dtype=np.float64) * (header["tsamp"] / 86400.0)
    freq = header["fch1"] + np.arange(nchans, dtype=np.float64) * header["foff"]
    attrs = netcdf_safe(header)
    attrs.update(nsamples=int(nsamples), format=fmt, path=path)
    return xr.DataArray(darr, dims=("time", "freq"), coords={"time": time, "freq": freq},
                        name="power", attrs=attrs)


def open_filterbank(path: str | os.PathLike, *, chunk_channels: int | None = None) -> xr.DataArray:
    """Open a filterbank lazily as a ``power`` (time, freq) float32 DataArray.

    Parameters
    ----------
    path : str or PathLike
        The ``.fil`` file.
    chunk_channels : int, optional
        Channels per dask chunk (default ``2**20`` or the whole band).
    """
    path = os.fspath(path)
    header, offset = read_header_and_offset(path)
    nsamples, nchans, nbits = header["nsamples"], header["nchans"], header["nbits"]
    arr = FilterbankArray(path, offset, nsamples, nchans, nbits,
                          signed=bool(header.get("signed", 0)))
    cc = chunk_channels_for(nchans, nsamples, chunk_channels, multiple=max(1, 8 // nbits))
    st = os.stat(path)
    name = "power-fil-" + tokenize(path, st.st_size, st.st_mtime_ns, offset, nbits, cc)
    darr = da.from_array(arr, chunks=(nsamples, cc), name=name, asarray=False,
                         fancy=True, inline_array=True, meta=np.empty((0, 0), np.float32))
    logger.debug("opened %s: %d x %d, nbits=%d", path, nsamples, nchans, nbits)
    return to_dataarray(darr, header, "filterbank", path)


# ----------------------------------------------------------------------- writer


def _check_writer_header(header: dict) -> None:
    unknown = sorted(set(header) - KNOWN_KEYS - READER_KEYS)
    if unknown:
        raise ValueError(f"unknown sigproc header key(s) {unknown}")
    missing = [k for k in ("tstart", "tsamp", "fch1", "foff") if k not in header]
    if missing:
        raise ValueError(f"header lacks required key(s) {missing}")


def writer_header(header: dict, data_TxF: np.ndarray, nbits: int) -> dict:
    """Header as written: reader-only keys dropped; nchans/nifs/nbits/data_type set."""
    if data_TxF.ndim != 2 or 0 in data_TxF.shape:
        raise ValueError(f"data must be a non-empty (time, freq) array, got {data_TxF.shape}")
    _check_writer_header(header)
    nchans = data_TxF.shape[1]
    if header.get("nchans", nchans) != nchans:
        raise ValueError(f"header nchans={header['nchans']} but data have {nchans} channels")
    if header.get("nifs", 1) != 1:
        raise ValueError("only nifs=1 can be written")
    out = {k: v for k, v in header.items() if k not in READER_KEYS}
    out.update(nchans=nchans, nifs=1, nbits=nbits)
    out.setdefault("data_type", 1)
    return out


def _encode_key(key: str, value) -> bytes:
    name = struct.pack("<i", len(key)) + key.encode("ascii")
    if key in INT_KEYS:
        return name + struct.pack("<i", int(value))
    if key in DOUBLE_KEYS:
        return name + struct.pack("<d", float(value))
    if key in BYTE_KEYS:
        return name + struct.pack("<B", int(value))
    raw = (value.decode() if isinstance(value, bytes) else str(value)).encode("utf-8")
    return name + struct.pack("<i", len(raw)) + raw


def encode_header(header: dict) -> bytes:
    """Serialise a header dict (known keys only) in the standard key order."""
    keys = [k for k in WRITE_ORDER if k in header]
    keys += [k for k in header if k not in WRITE_ORDER]
    body = b"".join(_encode_key(k, header[k]) for k in keys)
    start = struct.pack("<i", 12) + b"HEADER_START"
    return start + body + struct.pack("<i", 10) + b"HEADER_END"


def encode_data(data_TxF: np.ndarray, nbits: int) -> np.ndarray:
    """Data as stored: float32, or rounded and clipped unsigned ints (packed below 8 bits)."""
    if nbits == 32:
        return np.ascontiguousarray(data_TxF, dtype="<f4")
    if not np.all(np.isfinite(data_TxF)):
        raise ValueError(f"non-finite values cannot be written as {nbits}-bit integers")
    top = (1 << nbits) - 1
    ints = np.clip(np.rint(data_TxF), 0, top)
    if nbits == 16:
        return ints.astype("<u2")
    if nbits == 8:
        return ints.astype(np.uint8)
    if (data_TxF.shape[1] * nbits) % 8:
        raise ValueError(f"{data_TxF.shape[1]} channels x {nbits} bits is not a whole byte")
    return pack_low_first(ints, nbits)


def atomic_write(path: str | os.PathLike, write) -> None:
    """Call ``write(tmp_path)`` on a temporary name beside ``path``, then rename.

    Readers never see a half-written file; on failure the temporary is removed.
    """
    target = Path(path)
    tmp = target.parent / f".{target.name}.{uuid.uuid4().hex}.tmp"
    try:
        write(str(tmp))
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_filterbank(path: str | os.PathLike, header: dict, data_TxF: np.ndarray) -> None:
    """Write a sigproc filterbank atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination ``.fil``; written to a temporary name beside it, then renamed.
    header : dict
        Sigproc keys (``tstart``, ``tsamp``, ``fch1``, ``foff`` required;
        ``nbits`` defaults to 32). ``nchans``/``nifs`` are taken from the data
        (a disagreeing ``nchans`` raises); ``nsamples``/``format``/``path``
        (added by the readers) are dropped; unknown keys raise ``ValueError``.
    data_TxF : ndarray
        ``(time, freq)`` values. For ``nbits`` < 32 they are rounded to the
        nearest integer and clipped to ``0 .. 2**nbits - 1`` (non-finite values
        raise); 1/2/4-bit values are packed low bits first.
    """
    data_TxF = np.asarray(data_TxF)
    nbits = int(header.get("nbits", 32))
    if nbits not in SUPPORTED_NBITS:
        raise ValueError(f"unsupported nbits={nbits}")
    if header.get("signed", 0):
        raise ValueError("the writer stores unsigned integers only (signed=1 given)")
    hdr = writer_header(header, data_TxF, nbits)
    head, body = encode_header(hdr), encode_data(data_TxF, nbits)

    def _write(tmp: str) -> None:
        with open(tmp, "wb") as fh:
            fh.write(head)
            fh.write(body.tobytes())

    atomic_write(path, _write)
    logger.debug("wrote %s: %s nbits=%d", path, data_TxF.shape, nbits)
