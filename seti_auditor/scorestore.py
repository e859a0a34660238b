"""The score store ``WORKDIR/scores.zarr`` (I/O): one row per tile of ``tiles.zarr``, by sub-band.

Rows align with the tile store (same ``tile`` index, same chunking), so a scoring task that
owns a chunk-aligned region of tiles writes exactly the same region here: retries and
reruns rewrite the same bytes and never duplicate. Scores of another model version live in
a store of their own (``scores.zarr`` is rewritten when the model changes).

Dims ``(tile, subband)``: the line search reports the best track in each of ``subband``
equal channel ranges of a tile, so one strong line cannot hide another in the same tile.

| variable | dims | dtype | meaning |
|---|---|---|---|
| `recon_error` | tile | float32 | the article's score: mean squared residual of the tile (model input units²) |
| `score` | tile, subband | float32 | the anomaly score used for decisions (higher = more anomalous) |
| `z_score` | tile, subband | float32 | (score - centre of the null) / scale of the null |
| `p_value` | tile, subband | float64 | calibrated p-value against held-out noise tiles (per frequency band) |
| `q_value` | tile, subband | float64 | Benjamini-Hochberg q-value over the whole archive (NaN where p > q_report) |
| `flagged` | tile, subband | bool | passes the configured threshold rule |
| `drift_chan` | tile, subband | float32 | drift of the best line track (channels per integration) |
| `peak_chan` | tile, subband | int32 | channel (in the tile) of the best track at the tile's middle integration |
| `scored` | tile | bool | the row's region was scored (padding rows too; their scores stay NaN) |
| `model_version` | tile | str | the model that produced the row |
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import dask.array as dsa
import numpy as np
import xarray as xr
import zarr

STORE_NAME = "scores.zarr"

SUBBAND_VARS = ("score", "z_score", "p_value", "q_value", "flagged", "drift_chan", "peak_chan")
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


def _dims(name: str) -> tuple[str, ...]:
    return ("tile", "subband") if name in SUBBAND_VARS else ("tile",)


def _lazy(shape: tuple[int, ...], dtype, fill):
    if dtype is object:
        return dsa.from_array(np.full(shape, fill, dtype=np.dtypes.StringDType()), chunks=-1)
    return dsa.full(shape, fill, dtype=dtype, chunks=-1)


def current_key(path: str | os.PathLike) -> str | None:
    """The (model version, score settings) key the store was made for; None when it does not exist."""
    if not (Path(path) / "zarr.json").exists():
        return None
    return zarr.open_group(str(path), mode="r").attrs.get("score_key")


def ensure_template(path: str | os.PathLike, n_tiles: int, chunk_tiles: int, subbands: int, model_version: str,
                    score_key: str, attrs: dict | None = None) -> bool:
    """Create (or grow) the store for ``n_tiles`` rows; recreate it for another model or settings.

    ``score_key`` identifies the model version and the scoring settings: rows scored under
    the same key are kept (a resumed run does not redo them), any other key starts afresh.
    Returns True when the store was (re)created, i.e. every region must be scored.
    """
    path = Path(path)
    if current_key(path) == score_key:
        group = zarr.open_group(str(path), mode="r+")
        for name in SCORE_VARS:
            arr = group[name]
            if arr.shape[0] < n_tiles:
                arr.resize((n_tiles, *arr.shape[1:]))
        return False
    shape = {"tile": n_tiles, "subband": subbands}
    data = {name: (_dims(name), _lazy(tuple(shape[d] for d in _dims(name)), dtype, fill))
            for name, (dtype, fill) in SCORE_VARS.items()}
    ds = xr.Dataset(data, attrs={**(attrs or {}), "model_version": model_version, "score_key": score_key})
    encoding = {name: {"chunks": (chunk_tiles, subbands)[: len(_dims(name))]} for name in SCORE_VARS}
    # written aside and swapped in: a run killed here leaves the old store or none, never a template
    # whose key is set but whose arrays are missing (the old one is derived data: none means rescore)
    tmp, old = (path.with_name(f".{path.name}.{kind}-{os.getpid()}") for kind in ("tmp", "old"))
    for stale in path.parent.glob(f".{path.name}.*-*"):  # left by killed runs (one writer: the workdir lock)
        shutil.rmtree(stale, ignore_errors=True)
    ds.to_zarr(str(tmp), mode="w", compute=False, consolidated=False, zarr_format=3, encoding=encoding)
    if path.exists():
        os.replace(path, old)
    os.replace(tmp, path)
    shutil.rmtree(old, ignore_errors=True)
    return True


def write_region(path: str | os.PathLike, start: int, values: dict[str, np.ndarray], chunk_tiles: int) -> None:
    """Write rows ``[start, start + N)`` (chunk-aligned) of some score variables."""
    n = len(next(iter(values.values())))
    if start % chunk_tiles or (n % chunk_tiles and start + n != n_rows(path)):
        raise ValueError(f"score region [{start}, {start + n}) is not aligned with chunks of {chunk_tiles}")
    unknown = set(values) - set(SCORE_VARS)
    if unknown:
        raise ValueError(f"not score variables: {sorted(unknown)}")
    ds = xr.Dataset({k: (_dims(k), np.asarray(v, dtype=SCORE_VARS[k][0])) for k, v in values.items()})
    region = {"tile": slice(start, start + n)}
    rest = [k for k in ds.data_vars if k != "scored"]
    if rest:
        ds[rest].to_zarr(str(path), region=region, mode="r+", consolidated=False)
    if "scored" in ds:  # the region's commit marker, written last: a killed write leaves it unscored
        ds[["scored"]].to_zarr(str(path), region=region, mode="r+", consolidated=False)


def n_rows(path: str | os.PathLike) -> int:
    return int(zarr.open_array(str(path), path="score", mode="r").shape[0])


def scored_region(path: str | os.PathLike, start: int, stop: int) -> bool:
    """True when every row of a region that should hold a score has one (for resuming)."""
    group = zarr.open_group(str(path), mode="r")
    return bool(np.all(group["scored"][start:stop]))


def open_scores(path: str | os.PathLike) -> xr.Dataset:
    return xr.open_zarr(str(path), consolidated=False)
