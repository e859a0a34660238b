"""Archive readers and writers: sigproc filterbank (``.fil``) and BL HDF5 (``.h5``).

:func:`open_observation` returns a lazily backed ``power`` DataArray with dims
``("time", "freq")``; :func:`read_header` validates a file without reading its
data. Every failure on an input file raises
:class:`~seti_auditor.errors.InputFileError` naming the file and the reason.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import xarray as xr

from seti_auditor.errors import InputFileError
from seti_auditor.formats import bl_h5, filterbank
from seti_auditor.formats.bl_h5 import write_bl_h5
from seti_auditor.formats.filterbank import write_filterbank

__all__ = [
    "SUPPORTED_SUFFIXES", "open_observation", "read_channels", "read_header", "write_bl_h5", "write_filterbank",
]

SUPPORTED_SUFFIXES = (".fil", ".h5")


def _module_for(path: str):
    """Pick the reader module by suffix, after sniffing the content."""
    suffix = Path(path).suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InputFileError(
            path, f"unsupported file suffix {suffix!r} (supported: {', '.join(SUPPORTED_SUFFIXES)})")
    if suffix == ".h5":
        return bl_h5
    return filterbank


def read_header(path: str | os.PathLike) -> dict:
    """Validated header of an observation, without reading its data.

    Parameters
    ----------
    path : str or PathLike
        A ``.fil`` or ``.h5`` file.

    Returns
    -------
    dict
        Sigproc header keys plus ``nsamples``, ``format`` (``"filterbank"`` or
        ``"bl_h5"``) and ``path``.
    """
    path = os.fspath(path)
    return _module_for(path).read_header(path)


def open_observation(path: str | os.PathLike, *, chunk_channels: int | None = None) -> xr.DataArray:
    """Open an observation lazily as a ``power`` (time, freq) float32 DataArray.

    Parameters
    ----------
    path : str or PathLike
        A ``.fil`` or ``.h5`` file.
    chunk_channels : int, optional
        Channels per dask chunk (default ``2**20`` or the whole band; for HDF5
        a multiple of the dataset's chunk width).

    Returns
    -------
    xarray.DataArray
        Coordinates ``time`` (MJD) and ``freq`` (MHz); attrs hold the header
        plus ``nsamples``, ``format`` and ``path``.
    """
    path = os.fspath(path)
    module = _module_for(path)
    if module is bl_h5:
        return bl_h5.open_bl_h5(path, chunk_channels=chunk_channels)
    return filterbank.open_filterbank(path, chunk_channels=chunk_channels)


def read_channels(path: str | os.PathLike, c0: int, c1: int) -> np.ndarray:
    """Power of channels ``[c0, c1)`` of every integration, float32 ``(time, freq)``.

    Reads only those bytes and builds no coordinates, so the cost and memory follow the
    channel range, not the file (the ingest path; :func:`open_observation` is for people).
    """
    path = os.fspath(path)
    module = _module_for(path)
    if module is bl_h5:
        header, _ = bl_h5.read_header_and_chunks(path)
        arr = bl_h5.BLH5Array(path, header["nsamples"], header["nchans"])
    else:
        header, offset = filterbank.read_header_and_offset(path)
        arr = filterbank.FilterbankArray(path, offset, header["nsamples"], header["nchans"], header["nbits"],
                                         signed=bool(header.get("signed", 0)))
    if not 0 <= c0 < c1 <= header["nchans"]:
        raise InputFileError(path, f"channel range [{c0}, {c1}) outside 0..{header['nchans']}")
    return arr[:, c0:c1]
