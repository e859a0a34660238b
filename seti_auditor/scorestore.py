"""The score store ``WORKDIR/scores.zarr`` (I/O): one row per tile of ``tiles.zarr``.

Rows align with the tile store (same ``tile`` index, same chunking), so a scoring task that
owns a chunk-aligned region of tiles writes exactly the same region here: retries and
reruns rewrite the same bytes and never duplicate. Scores of another model version live in
a store of their own (``scores.zarr`` is rewritten when the model changes).

| variable | dtype | meaning |
|---|---|---|
| `recon_error` | float32 | the article's score: mean squared residual of the tile (model input units²) |
| `score` | float32 | the anomaly score used for decisions (higher = more anomalous) |
| `z_score` | float32 | (score - median of the null) / robust sigma of the null |
| `p_value` | float64 | calibrated p-value of the score against held-out noise tiles (per band) |
| `q_value` | float64 | Benjamini-Hochberg q-value over every valid tile of the archive |
| `flagged` | bool | the tile passes the configured threshold rule |
| `drift_chan` | float32 | drift of the best line track (channels per integration) |
| `peak_chan` | int32 | channel offset within the tile where the best track starts |
| `scored` | bool | a score was written (false for padding and invalid tiles) |
| `model_version` | str | the model that produced the row |
"""

from __future__ import annotations

import os
from pathlib import Path

import dask.array as dsa
import numpy as np
import xarray as xr
import zarr

STORE_NAME = "scores.zarr"

SCORE_VARS: dict[str, tuple[object, object]] = {
    "recon_error": (np.float32, np.nan),
    "score": (np.float32, np.nan),
    "z_score": (np.float32, np.nan),
    "p_value": (np.float64, np.nan),
    "q_value": (np.float64, np.nan),
    "flagged": (bool, False),
    "drift_chan": (np.float32, np.nan),
    "peak_chan": (np.int32, -1),
    "scored": (bool, False),
    "model_version": (object, ""),
}


def store_path(workdir: str | os.PathLike) -> Path:
    return Path(workdir) / STORE_NAME


def _lazy(n: int, dtype, fill, chunk: int):
    if dtype is object:
        return dsa.from_array(np.full(n, fill, dtype=np.dtypes.StringDType()), chunks=chunk)
    return dsa.full((n,), fill, dtype=dtype, chunks=chunk)


def current_version(path: str | os.PathLike) -> str | None:
    """Model version the store was made for (None when it does not exist)."""
    if not (Path(path) / "zarr.json").exists():
        return None
    return zarr.open_group(str(path), mode="r").attrs.get("model_version")


def ensure_template(path: str | os.PathLike, n_tiles: int, chunk_tiles: int, model_version: str,
                    attrs: dict | None = None) -> bool:
    """Create (or grow) the store for ``n_tiles`` rows; recreate it for a new model version.

    Returns True when the store was (re)created, i.e. every region must be scored.
    """
    path = Path(path)
    if current_version(path) == model_version:
        group = zarr.open_group(str(path), mode="r+")
        for name in SCORE_VARS:
            arr = group[name]
            if arr.shape[0] < n_tiles:
                arr.resize((n_tiles,))
        return False
    data = {name: ("tile", _lazy(n_tiles, dtype, fill, chunk_tiles)) for name, (dtype, fill) in SCORE_VARS.items()}
    ds = xr.Dataset(data, attrs={**(attrs or {}), "model_version": model_version})
    ds.to_zarr(str(path), mode="w", compute=False, consolidated=False, zarr_format=3,
               encoding={name: {"chunks": (chunk_tiles,)} for name in SCORE_VARS})
    return True


def write_region(path: str | os.PathLike, start: int, values: dict[str, np.ndarray], chunk_tiles: int) -> None:
    """Write rows ``[start, start + N)`` (chunk-aligned) of some score variables."""
    n = len(next(iter(values.values())))
    if start % chunk_tiles or (n % chunk_tiles and start + n != n_rows(path)):
        raise ValueError(f"score region [{start}, {start + n}) is not aligned with chunks of {chunk_tiles}")
    unknown = set(values) - set(SCORE_VARS)
    if unknown:
        raise ValueError(f"not score variables: {sorted(unknown)}")
    ds = xr.Dataset({k: ("tile", np.asarray(v, dtype=SCORE_VARS[k][0])) for k, v in values.items()})
    ds.to_zarr(str(path), region={"tile": slice(start, start + n)}, mode="r+", consolidated=False)


def n_rows(path: str | os.PathLike) -> int:
    return int(zarr.open_array(str(path), path="score", mode="r").shape[0])


def scored_region(path: str | os.PathLike, start: int, stop: int) -> bool:
    """True when every row of a region that should hold a score has one (for resuming)."""
    group = zarr.open_group(str(path), mode="r")
    return bool(np.all(group["scored"][start:stop]))


def open_scores(path: str | os.PathLike) -> xr.Dataset:
    return xr.open_zarr(str(path), consolidated=False)
