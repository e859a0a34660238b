"""Breakthrough Listen HDF5 (``.h5``): validated header, lazy reader and writer.

Layout: root attributes ``CLASS="FILTERBANK"``, ``VERSION="1.0"``; dataset
``data`` of shape ``(nints, nifs, nchans)`` (nifs must be 1), usually float32
and bitshuffle/LZ4 compressed (HDF5 filter 32008, provided by ``hdf5plugin``);
the sigproc header as attributes of ``data``.
"""

from __future__ import annotations

import logging
import math
import os

import dask.array as da
import h5py
import hdf5plugin
import numpy as np
import xarray as xr
from dask.base import tokenize

from seti_auditor.errors import InputFileError
from seti_auditor.formats.filterbank import (
    atomic_write,
    chunk_channels_for,
    netcdf_safe,
    normalise_key,
    stat_size,
    to_dataarray,
    validate_values,
    writer_header,
)

logger = logging.getLogger(__name__)

BITSHUFFLE_FILTER_ID = 32008  # HDF5 filter id of bitshuffle (hdf5plugin)
WRITE_CHUNK_TIME = 16  # integrations per HDF5 chunk written by write_bl_h5
WRITE_CHUNK_CHANNELS = 2**16  # channels per HDF5 chunk written by write_bl_h5
NUMERIC_KEYS = ("fch1", "foff", "tstart", "tsamp", "nchans", "nifs", "nbits")
_INT_KEYS = ("nchans", "nifs", "nbits")


def is_hdf5(path: str | os.PathLike) -> bool:
    """True when ``path`` carries an HDF5 signature (at 0, 512, 1024, ...)."""
    try:
        return bool(h5py.is_hdf5(os.fspath(path)))
    except (OSError, ValueError):
        return False


def _attr_header(path: str, attrs) -> dict:
    """Dataset attributes as a header dict; numeric keys coerced and checked."""
    header = netcdf_safe({k: attrs[k] for k in attrs.keys()})
    for key in NUMERIC_KEYS:
        if key not in header:
            continue
        val = header[key]
        if isinstance(val, str) or not isinstance(val, (int, float)):
            raise InputFileError(path, f"header attribute {key}={val!r} is not a number")
        if key in _INT_KEYS:
            if not (math.isfinite(val) and float(val).is_integer()):
                raise InputFileError(path, f"header attribute {key}={val!r} is not an integer")
            header[key] = int(val)
        else:
            header[key] = float(val)
    return header


def _check_filters(path: str, dset: h5py.Dataset) -> None:
    """Every HDF5 filter the dataset needs must be available."""
    plist = dset.id.get_create_plist()
    for i in range(plist.get_nfilters()):
        fid = plist.get_filter(i)[0]
        if not h5py.h5z.filter_avail(fid):
            raise InputFileError(path, f"dataset 'data' needs unavailable HDF5 filter {fid}")


def _header_from_file(path: str, fh: h5py.File) -> tuple[dict, tuple[int, ...] | None]:
    """Validate the BL layout of an open file; return (header, HDF5 chunk shape)."""
    cls = fh.attrs.get("CLASS")
    if isinstance(cls, bytes):
        cls = cls.decode("utf-8", errors="replace")
    if cls is not None and cls != "FILTERBANK":
        raise InputFileError(path, f"root CLASS={cls!r}, expected 'FILTERBANK'")
    dset = fh.get("data")
    if not isinstance(dset, h5py.Dataset):
        raise InputFileError(path, "no dataset 'data' (not a Breakthrough Listen HDF5 file)")
    if dset.ndim != 3:
        raise InputFileError(path, f"dataset 'data' has shape {dset.shape}; "
                             "expected (nints, nifs, nchans)")
    if dset.dtype.kind not in "fiu":
        raise InputFileError(path, f"dataset 'data' has non-numeric dtype {dset.dtype}")
    nints, nifs, nchans = dset.shape
    header = _attr_header(path, dset.attrs)
    for key, actual in (("nchans", nchans), ("nifs", nifs)):
        if header.setdefault(key, actual) != actual:
            raise InputFileError(path, f"attribute {key}={header[key]} disagrees with "
                                 f"dataset shape {dset.shape}")
    validate_values(path, header)
    if nints == 0:
        raise InputFileError(path, "dataset 'data' holds zero spectra")
    _check_filters(path, dset)
    header["nsamples"] = int(nints)
    return header, dset.chunks


def _open(path: str) -> h5py.File:
    try:
        return h5py.File(path, "r")
    except (OSError, ValueError, RuntimeError) as exc:
        raise InputFileError(path, f"cannot open as HDF5: {exc}") from None


def read_header_and_chunks(path: str | os.PathLike) -> tuple[dict, tuple[int, ...] | None]:
    """Validated header (plus ``nsamples``) and the HDF5 chunk shape of ``data``."""
    path = os.fspath(path)
    if stat_size(path) == 0:
        raise InputFileError(path, "empty file (0 bytes)")
    if not is_hdf5(path):
        raise InputFileError(path, "not an HDF5 file (no HDF5 signature)")
    with _open(path) as fh:
        try:
            return _header_from_file(path, fh)
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            if isinstance(exc, InputFileError):
                raise
            raise InputFileError(path, f"unreadable BL HDF5 layout: {exc}") from None


def read_header(path: str | os.PathLike) -> dict:
    """Validated header of a BL HDF5 file plus ``nsamples``, ``format``, ``path``."""
    header, _ = read_header_and_chunks(path)
    return {**header, "format": "bl_h5", "path": os.fspath(path)}


class BLH5Array:
    """Picklable (time, freq) float32 view of ``data[:, 0, :]``; each read opens the file.

    No handle stays open between reads, so the array survives pickling to
    Dask workers and the file can be replaced or removed between computations.
    """

    def __init__(self, path: str, nints: int, nchans: int) -> None:
        self.path = path
        self.shape = (nints, nchans)
        self.dtype = np.dtype(np.float32)
        self.ndim = 2

    def __getitem__(self, key) -> np.ndarray:
        (rows, chans), rest = normalise_key(key, self.shape)
        if rows.stop <= rows.start or chans.stop <= chans.start:
            out = np.empty((rows.stop - rows.start, chans.stop - chans.start), np.float32)
        else:
            try:
                with h5py.File(self.path, "r") as fh:
                    out = np.asarray(fh["data"][rows, 0, chans], dtype=np.float32)
            except (OSError, KeyError, ValueError) as exc:
                raise InputFileError(self.path, f"cannot read data: {exc}") from None
        return out if all(r == slice(None) for r in rest) else out[rest]


def open_bl_h5(path: str | os.PathLike, *, chunk_channels: int | None = None) -> xr.DataArray:
    """Open a BL HDF5 file lazily as a ``power`` (time, freq) float32 DataArray.

    Parameters
    ----------
    path : str or PathLike
        The ``.h5`` file.
    chunk_channels : int, optional
        Channels per dask chunk (default ``2**20`` or the whole band), rounded
        down to a multiple of the dataset's HDF5 chunk width when it is chunked.
    """
    path = os.fspath(path)
    header, h5chunks = read_header_and_chunks(path)
    nints, nchans = header["nsamples"], header["nchans"]
    multiple = h5chunks[2] if h5chunks else 1
    cc = chunk_channels_for(nchans, nints, chunk_channels, multiple=multiple)
    st = os.stat(path)
    name = "power-h5-" + tokenize(path, st.st_size, st.st_mtime_ns, cc)
    darr = da.from_array(BLH5Array(path, nints, nchans), chunks=(nints, cc), name=name,
                         asarray=False, fancy=True, lock=True,
                         meta=np.empty((0, 0), np.float32))
    logger.debug("opened %s: %d x %d", path, nints, nchans)
    return to_dataarray(darr, header, "bl_h5", path)


def _compression_kwargs(compression: str | None) -> dict:
    if compression is None:
        return {}
    if compression == "bitshuffle":
        return dict(hdf5plugin.Bitshuffle(cname="lz4"))
    raise ValueError(f"unsupported compression {compression!r} (use 'bitshuffle' or None)")


def write_bl_h5(path: str | os.PathLike, header: dict, data_TxF: np.ndarray, *,
                compression: str | None = "bitshuffle") -> None:
    """Write a Breakthrough Listen HDF5 file atomically.

    Parameters
    ----------
    path : str or PathLike
        Destination ``.h5``; written to a temporary name beside it, then renamed.
    header : dict
        Sigproc keys as for :func:`~seti_auditor.formats.write_filterbank`; they
        become attributes of ``data``. Data are always stored as float32, so
        ``nbits`` is written as 32 whatever the header says.
    data_TxF : ndarray
        ``(time, freq)`` values, stored as ``data`` of shape ``(time, 1, freq)``.
    compression : {"bitshuffle", None}
        Bitshuffle/LZ4 (HDF5 filter 32008 via ``hdf5plugin``) or none.
    """
    data_TxF = np.asarray(data_TxF)
    hdr = writer_header(header, data_TxF, nbits=32)
    kwargs = _compression_kwargs(compression)
    nints, nchans = data_TxF.shape
    chunks = (min(nints, WRITE_CHUNK_TIME), 1, min(nchans, WRITE_CHUNK_CHANNELS))

    def _write(tmp: str) -> None:
        with h5py.File(tmp, "w") as fh:
            fh.attrs["CLASS"] = "FILTERBANK"
            fh.attrs["VERSION"] = "1.0"
            dset = fh.create_dataset("data", data=data_TxF.astype(np.float32)[:, None, :],
                                     chunks=chunks, **kwargs)
            dset.attrs["DIMENSION_LABELS"] = np.array(
                ["time", "feed_id", "frequency"], dtype=h5py.string_dtype())
            for key, val in hdr.items():
                dset.attrs[key] = val.decode() if isinstance(val, bytes) else val

    atomic_write(path, _write)
    logger.debug("wrote %s: %s compression=%s", path, data_TxF.shape, compression)
