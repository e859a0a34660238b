"""The tile store ``WORKDIR/tiles.zarr`` (I/O).

Layout (see ``docs/architecture.md``): dims ``(tile, time, freq)``, the normalised
``tiles`` and per-tile coordinates; a ``manifest`` group with one row per input file.

Writes are two-phase, as in pangeo-forge: :func:`ensure_capacity` writes (or grows) the
template once from the flow, then every task writes its own chunk-aligned region with
:func:`write_region`. A file's tiles start on a chunk boundary and its last region is padded
to the end of its last chunk, so no two tasks ever touch one chunk and a retried task
rewrites exactly the same bytes. The manifest is replaced atomically (write aside, rename).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import dask.array as dsa
import numpy as np
import pandas as pd
import xarray as xr
import zarr
from zarr.codecs import BloscCodec

from seti_auditor import __version__
from seti_auditor.tiling import TilingConfig

log = logging.getLogger(__name__)

STORE_NAME = "tiles.zarr"
MANIFEST_GROUP = "manifest"

# per-tile coordinates: name -> (dtype, value of a padding tile)
TILE_COORDS: dict[str, tuple[object, object]] = {
    "valid": (bool, False),
    "file_id": (np.int32, -1),
    "source_file": (object, ""),
    "source_name": (object, ""),
    "cadence_id": (object, ""),
    "scan_index": (np.int8, -1),
    "on_source": (bool, False),
    "freq_min_mhz": (np.float64, np.nan),
    "freq_max_mhz": (np.float64, np.nan),
    "tstart_mjd": (np.float64, np.nan),
    "chan_start": (np.int64, -1),
    "time_start": (np.int32, -1),
    "n_premasked": (np.int32, 0),
    "max_abs_z": (np.float32, 0.0),
}

MANIFEST_COLUMNS: dict[str, object] = {
    "path": object,
    "name": object,
    "size_bytes": np.int64,
    "content_hash": object,
    "status": object,  # ingested | rejected | superseded
    "reason": object,
    "tile_start": np.int64,
    "tile_stop": np.int64,  # end of the file's padded tile range (a chunk boundary)
    "n_tiles": np.int64,  # real tiles of the file (tile_start + n_tiles <= tile_stop)
    "source_name": object,
    "tstart_mjd": np.float64,
    "tstop_mjd": np.float64,
    "fch1_mhz": np.float64,
    "foff_mhz": np.float64,
    "nchans": np.int64,
    "nints": np.int64,
    "coarse_width": np.int64,  # fine channels per coarse channel used for normalisation
    "tsamp_s": np.float64,
    "cadence_id": object,
    "scan_index": np.int64,
    "on_source": bool,
    "stat_key": object,  # "device:inode:size:mtime_ns" when inspected: a file replaced later is detected
}


def store_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / STORE_NAME


def content_hash(path: str | os.PathLike, block: int = 1 << 23) -> str:
    """BLAKE2b (128-bit) of a file's bytes, read in blocks of ``block`` bytes."""
    digest = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as fh:
        while chunk := fh.read(block):
            digest.update(chunk)
    return digest.hexdigest()


# ----------------------------------------------------------------------------- template


def _template(n_tiles: int, cfg: TilingConfig) -> xr.Dataset:
    # one dask chunk per variable: the template is never computed, and a graph of one task per
    # Zarr chunk made creating a large store slow; the Zarr chunks come from the encoding
    tiles = dsa.zeros((n_tiles, cfg.tile_time, cfg.tile_freq), dtype=np.float32, chunks=-1)
    coords = {name: ("tile", _lazy_full(n_tiles, fill, dtype)) for name, (dtype, fill) in TILE_COORDS.items()}
    ds = xr.Dataset({"tiles": (("tile", "time", "freq"), tiles)}, coords=coords)
    ds["tiles"].attrs.update(units="robust sigma", long_name="bandpass-removed, standardised power")
    ds["freq_min_mhz"].attrs["units"] = "MHz"
    ds["freq_max_mhz"].attrs["units"] = "MHz"
    ds["tstart_mjd"].attrs["units"] = "MJD"
    ds.attrs.update(
        tiling_config=json.dumps(dataclasses.asdict(cfg)),
        code_version=__version__,
        title="seti-auditor tile store",
    )
    return ds


def _lazy_full(n: int, fill, dtype):
    if dtype is object:  # variable-length strings (Zarr v3 has no fixed-width unicode)
        return dsa.from_array(np.full(n, fill, dtype=np.dtypes.StringDType()), chunks=-1)
    return dsa.full((n,), fill, dtype=dtype, chunks=-1)


def _encoding(cfg: TilingConfig) -> dict:
    blosc = BloscCodec(cname="lz4", clevel=5, shuffle="shuffle")
    enc = {"tiles": {"chunks": (cfg.chunk_tiles, cfg.tile_time, cfg.tile_freq), "compressors": (blosc,)}}
    for name in TILE_COORDS:
        enc[name] = {"chunks": (cfg.chunk_tiles,)}
    return enc


def read_tiling_config(path: str | os.PathLike) -> TilingConfig:
    """The tiling configuration a store was created with."""
    attrs = zarr.open_group(str(path), mode="r").attrs
    return TilingConfig(**json.loads(attrs["tiling_config"]))


def n_tiles(path: str | os.PathLike) -> int:
    """Current length of the tile dimension (0 when the store does not exist)."""
    if not Path(path).exists():
        return 0
    return int(zarr.open_array(str(path), path="tiles", mode="r").shape[0])


def ensure_capacity(path: str | os.PathLike, total: int, cfg: TilingConfig) -> None:
    """Phase one: create the template, or grow the tile dimension to ``total`` tiles.

    Growing resizes every per-tile array in place; existing tiles are untouched. A store
    created with another tiling configuration is refused (its tiles would not be comparable).
    """
    path = Path(path)
    if total % cfg.chunk_tiles:
        raise ValueError(f"capacity {total} is not a multiple of chunk_tiles={cfg.chunk_tiles}")
    if not (path / "zarr.json").exists():  # written aside, then renamed: never a half-made template
        if path.exists() and any(path.iterdir()):
            raise ValueError(f"{path}: exists but is not a tile store (no zarr.json); move it away")
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        for stale in path.parent.glob(f".{path.name}.tmp-*"):  # left by killed runs (one writer: the workdir lock)
            shutil.rmtree(stale, ignore_errors=True)
        _template(total, cfg).to_zarr(
            str(tmp), mode="w", compute=False, encoding=_encoding(cfg), consolidated=False, zarr_format=3
        )
        os.replace(tmp, path)  # an empty directory at path is replaced too
        return
    existing = read_tiling_config(path)
    if existing != cfg:
        raise ValueError(f"{path}: tile store was made with {existing}, not {cfg}; use a new workdir")
    group = zarr.open_group(str(path), mode="r+")
    for name in ["tiles", *TILE_COORDS]:
        arr = group[name]
        if arr.shape[0] < total:
            arr.resize((total, *arr.shape[1:]))


def write_region(path: str | os.PathLike, start: int, tiles_NxTxF: np.ndarray, coords: dict[str, np.ndarray],
                 cfg: TilingConfig) -> None:
    """Phase two: write tiles ``[start, start + N)`` with their per-tile coordinates.

    ``start`` must be on a chunk boundary and ``N`` a whole number of chunks: callers pad a
    file's last region with padding tiles (see :func:`pad_region`). Missing coordinates are
    an error, so a region never leaves stale values behind.
    """
    n = tiles_NxTxF.shape[0]
    if start % cfg.chunk_tiles or n % cfg.chunk_tiles:
        raise ValueError(f"region [{start}, {start + n}) is not aligned with chunks of {cfg.chunk_tiles} tiles")
    missing = set(TILE_COORDS) - set(coords)
    if missing:
        raise ValueError(f"region write lacks coordinates {sorted(missing)}")
    data = {"tiles": (("tile", "time", "freq"), tiles_NxTxF.astype(np.float32, copy=False))}
    cvars = {name: ("tile", np.asarray(coords[name], dtype=TILE_COORDS[name][0])) for name in TILE_COORDS}
    ds = xr.Dataset(data, coords=cvars)
    ds.to_zarr(str(path), region={"tile": slice(start, start + n)}, mode="r+", consolidated=False)


def write_coords(path: str | os.PathLike, start: int, coords: dict[str, np.ndarray], cfg: TilingConfig) -> None:
    """Rewrite some per-tile coordinates over a chunk-aligned range (e.g. ``valid`` of a superseded file)."""
    n = len(next(iter(coords.values())))
    if start % cfg.chunk_tiles or n % cfg.chunk_tiles:
        raise ValueError(f"range [{start}, {start + n}) is not aligned with chunks of {cfg.chunk_tiles} tiles")
    unknown = set(coords) - set(TILE_COORDS)
    if unknown:
        raise ValueError(f"not per-tile coordinates: {sorted(unknown)}")
    ds = xr.Dataset(coords={k: ("tile", np.asarray(v, dtype=TILE_COORDS[k][0])) for k, v in coords.items()})
    ds.to_zarr(str(path), region={"tile": slice(start, start + n)}, mode="r+", consolidated=False)


def pad_region(tiles_NxTxF: np.ndarray, coords: dict[str, np.ndarray], cfg: TilingConfig) -> tuple[np.ndarray, dict]:
    """Pad a region to a whole number of chunks with padding tiles (``valid`` false)."""
    n = tiles_NxTxF.shape[0]
    pad = (-n) % cfg.chunk_tiles
    if pad == 0:
        return tiles_NxTxF, coords
    tiles = np.concatenate([tiles_NxTxF, np.zeros((pad, *tiles_NxTxF.shape[1:]), dtype=np.float32)])
    padded = {}
    for name, (dtype, fill) in TILE_COORDS.items():
        padded[name] = np.concatenate([np.asarray(coords[name], dtype=dtype), np.full(pad, fill, dtype=dtype)])
    return tiles, padded


def open_tiles(path: str | os.PathLike) -> xr.Dataset:
    """Open the tile store lazily."""
    return xr.open_zarr(str(path), consolidated=False)


# ----------------------------------------------------------------------------- manifest


def empty_manifest() -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype=dtype) for name, dtype in MANIFEST_COLUMNS.items()})


def load_manifest(path: str | os.PathLike) -> pd.DataFrame:
    """The manifest as a DataFrame (one row per input file); empty when there is none yet."""
    group_dir = Path(path) / MANIFEST_GROUP
    if not (group_dir / "zarr.json").exists():
        backup = Path(path) / f"{MANIFEST_GROUP}.old"
        if (backup / "zarr.json").exists():  # a swap was interrupted between its two renames
            os.replace(backup, group_dir)
        else:
            return empty_manifest()
    # chunks=None: numpy, not dask; inside a task on a Dask worker, a dask read would send one tiny
    # graph per column through the cluster's scheduler (hundreds of tasks per flow)
    ds = xr.open_zarr(str(path), group=MANIFEST_GROUP, consolidated=False, chunks=None).load()
    df = ds.to_dataframe().reset_index(drop=True)
    for name, dtype in MANIFEST_COLUMNS.items():
        if name not in df:  # a store written before the column existed
            df[name] = pd.Series([_MISSING.get(name, "")] * len(df), dtype=dtype)
    return df[list(MANIFEST_COLUMNS)]


_MISSING = {"stat_key": ""}  # value of a manifest column absent from an older store


def save_manifest(path: str | os.PathLike, manifest: pd.DataFrame, attrs: dict | None = None) -> None:
    """Replace the manifest atomically: write it aside, then swap directories."""
    path = Path(path)
    frame = manifest.reset_index(drop=True)
    data = {}
    for name, dtype in MANIFEST_COLUMNS.items():
        values = frame[name].to_numpy()
        data[name] = ("file", values.astype(object) if dtype is object else values.astype(dtype))
    ds = xr.Dataset(data)
    ds.attrs.update({"code_version": __version__, **(attrs or {})})
    tmp = path / f"{MANIFEST_GROUP}.tmp"
    old = path / f"{MANIFEST_GROUP}.old"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        ds.to_zarr(str(path), group=f"{MANIFEST_GROUP}.tmp", mode="w", consolidated=False, zarr_format=3)
    except BaseException:  # e.g. a full disk: leave the old manifest and nothing else
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    target = path / MANIFEST_GROUP
    if target.exists():
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    shutil.rmtree(old, ignore_errors=True)
