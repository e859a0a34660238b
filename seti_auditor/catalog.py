"""The candidate catalog store ``WORKDIR/catalog.zarr`` (versioned, published atomically).

Layout (Zarr v3)::

    catalog.zarr/                 root = the CURRENT version's candidates (dim ``candidate``)
    catalog.zarr/rfi              RFI events of the current version (dim ``candidate``)
    catalog.zarr/rejected         rejected events of the current version
    catalog.zarr/versions/<v>/    every version ever written (same three nodes), readable

so ``xarray.open_zarr("WORKDIR/catalog.zarr", consolidated=False)`` opens the
current catalog, and ``open_catalog(path, version=v)`` any older one. A version
id is the ``model_version`` of the scoring run (letters, digits, ``._-``).

Strings are stored as variable-length strings (``numpy.dtypes.StringDType``);
attributes hold the provenance given by the caller, with nested dicts and lists
JSON-encoded into strings (their keys listed in the attribute ``json_attrs``;
:func:`open_catalog` decodes them), plus ``model_version``,
``current_version`` and ``catalog_versions`` (JSON list, in first-write order).

Publishing: the whole new store is built aside in a sibling temporary directory
(new version under ``versions/<v>``, the same content at its root, older
versions hard-linked from the current store, files never rewritten in place),
then swapped in with two ``os.rename`` calls (current -> trash, new -> current)
and the trash removed. A published store is never modified, only replaced, so
:func:`open_catalog` reads one store whole: it loads eagerly and retries when the
store directory was swapped while it read (its inode changed), and during the
instant between the two renames it waits, then falls back to the trash (the
previous complete store). A writer killed at any point leaves either the old
store or the new one current: the next :func:`write_catalog` removes half-built
temporaries and, when killed between the two renames, restores the old store
(the new version is then absent, and the rerun writes it again). Writing the
same ``model_version`` again replaces that version's content exactly; nothing is
appended by :func:`write_catalog`. One writer at a time is assumed (the flow's
catalog step, under the workdir lock).

Chunks: every array is chunked along ``candidate`` in blocks of :data:`ROW_CHUNK` rows from its
first write on, whatever that write's length, so that later appends fill the last chunk
instead of adding a chunk per append (a one-row version grown by one row a night stays one
chunk file per column for 4096 nights).

Appending (incremental runs): :func:`append_rows` adds rows at the end of the
``candidate`` dimension of the *current* version (its root and ``versions/<v>``
nodes alike) and replaces the version's attributes. It publishes the same way:
the new store is the current one hard-linked file by file, the files the append
must change (array and group metadata, and the last, partly filled chunk of each
array) are copied before they are written, and the new rows are written beyond
the old length; the swap is the commit. Chunks holding only earlier rows stay the
very same files (same inodes); the one partly filled chunk of an array is copied
and completed, its earlier rows carried over unchanged. A reader sees the old row
count or the new one, never a mix. The caller records each append (its row ranges)
in the version's attributes (``batches``).
"""

from __future__ import annotations

import glob
import json
import logging
import os
import re
import shutil
import time
import uuid
from typing import NamedTuple

import numpy as np
import pandas as pd
import xarray as xr
import zarr

logger = logging.getLogger(__name__)

STORE_NAME = "catalog.zarr"
_OPEN_TRIES = 40  # attempts of open_catalog, 50 ms apart, while a publish swaps the store
DIM = "candidate"
# rows per chunk of every catalog array, fixed at its first write: appends fill the last chunk. A chunk of
# 4096 float64 rows is 32 KiB before compression; the whole catalog of a survey is a few chunks per column.
ROW_CHUNK = 4096
_VERSION_RE = re.compile(r"^[A-Za-z0-9._-]+$")
_STRING = np.dtypes.StringDType()
_SCALAR_ATTR = (str, int, float, bool, np.integer, np.floating, np.bool_)
# columns that are strings even when a frame is empty (pandas then guesses float64)
STRING_COLUMNS = frozenset(
    {"source_file", "source_name", "cadence_id", "tiles", "cadence_test", "reason", "calibration", "model_version"}
)


def store_path(workdir_or_store_path: str | os.PathLike) -> str:
    """``X`` when it ends in ``.zarr``, else ``X/catalog.zarr``."""
    path = os.fspath(workdir_or_store_path)
    return path if path.rstrip("/").endswith(".zarr") else os.path.join(path, STORE_NAME)


# --------------------------------------------------------------------------- conversion


def _column_array(series: pd.Series) -> np.ndarray:
    """A numpy array for one column: strings as StringDType, the rest as they are."""
    if (
        series.name in STRING_COLUMNS
        or series.dtype == object
        or pd.api.types.is_string_dtype(series.dtype)
    ):
        return np.array([str(v) for v in series], dtype=_STRING)
    return series.to_numpy()


def frame_to_dataset(df: pd.DataFrame, attrs: dict | None = None) -> xr.Dataset:
    """One variable per column along dimension ``candidate`` (zero rows allowed)."""
    data_vars = {str(c): (DIM, _column_array(df[c])) for c in df.columns}
    ds = xr.Dataset(data_vars)
    if DIM not in ds.sizes:  # a frame with no columns still has its length
        ds = ds.expand_dims({DIM: len(df)}) if len(df) else ds
    ds.attrs = encode_attrs(attrs or {})
    return ds


def encode_attrs(attrs: dict) -> dict:
    """Scalars as they are; anything else JSON-encoded (keys listed in ``json_attrs``)."""
    out, encoded = {}, []
    for key, value in attrs.items():
        if isinstance(value, _SCALAR_ATTR):
            out[key] = value.item() if isinstance(value, np.generic) else value
        else:
            out[key] = json.dumps(value, sort_keys=True, default=str)
            encoded.append(key)
    if encoded:
        out["json_attrs"] = json.dumps(sorted(encoded))
    return out


def decode_attrs(attrs: dict) -> dict:
    """Inverse of :func:`encode_attrs`."""
    out = dict(attrs)
    for key in json.loads(out.pop("json_attrs", "[]")):
        out[key] = json.loads(out[key])
    return out


# --------------------------------------------------------------------------- writing


def _to_zarr(ds: xr.Dataset, root: str, group: str | None, mode: str) -> None:
    """Write ``ds`` at ``group`` with every array chunked in :data:`ROW_CHUNK` rows."""
    encoding = {name: {"chunks": (ROW_CHUNK,)} for name in ds.variables if ds[name].dims == (DIM,)}
    ds.to_zarr(root, group=group, mode=mode, consolidated=False, zarr_format=3, encoding=encoding)


def _write_version(root: str, group: str | None, frames: dict[str, pd.DataFrame], attrs: dict) -> None:
    """Write candidates at ``group`` and the diagnostics as its ``rfi``/``rejected`` children."""
    _to_zarr(frame_to_dataset(frames["candidates"], attrs), root, group, "w")
    for name in ("rfi", "rejected"):
        _to_zarr(frame_to_dataset(frames[name]), root, f"{group}/{name}" if group else name, "w")


def _link_tree(src: str, dst: str) -> None:
    """Hard-link a directory tree (copy where links are not possible)."""
    shutil.copytree(src, dst, copy_function=_link_or_copy)


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _existing_versions(path: str) -> list[str]:
    if not os.path.isdir(path):
        return []
    try:
        with xr.open_zarr(path, consolidated=False, zarr_format=3, chunks=None) as ds:
            attrs = dict(ds.attrs)
    except (OSError, ValueError, KeyError):
        return []
    return list(decode_attrs(attrs).get("catalog_versions", []))


class _Publication(NamedTuple):
    """A catalog write in the making: the store, its versions, the new rows and the sibling it is built in."""

    path: str  # the store (catalog.zarr)
    versions: list[str]  # version ids in the store now, in first-write order
    frames: dict[str, pd.DataFrame]  # "candidates", "rfi", "rejected": the rows to write
    token: str  # names the temporary and the trash directory of this write
    tmp: str  # the sibling directory the new store is built in


def _begin(workdir_or_store_path: str | os.PathLike, candidates_df: pd.DataFrame, rfi_df: pd.DataFrame,
           rejected_df: pd.DataFrame, model_version: str) -> _Publication:
    """The first steps of :func:`write_catalog` and :func:`append_rows`: check the version id, undo
    what a killed writer left, read the versions, name the temporary store."""
    if not _VERSION_RE.match(model_version):
        raise ValueError(f"model_version {model_version!r} must match {_VERSION_RE.pattern}")
    path = store_path(workdir_or_store_path).rstrip("/")
    _recover(path)
    token = uuid.uuid4().hex[:12]
    tmp = os.path.join(os.path.dirname(os.path.abspath(path)), f".{os.path.basename(path)}.tmp-{token}")
    return _Publication(path, _existing_versions(path),
                        {"candidates": candidates_df, "rfi": rfi_df, "rejected": rejected_df}, token, tmp)


def write_catalog(
    workdir_or_store_path: str | os.PathLike,
    candidates_df: pd.DataFrame,
    rfi_df: pd.DataFrame,
    rejected_df: pd.DataFrame,
    *,
    attrs: dict,
    model_version: str,
) -> str:
    """Write (or rewrite) one catalog version and make it current.

    Parameters
    ----------
    workdir_or_store_path : path
        The work directory (the store is ``catalog.zarr`` in it) or the store.
    candidates_df, rfi_df, rejected_df : pandas.DataFrame
        Events from :func:`seti_auditor.cadence_test.cadence_test` (zero rows allowed).
    attrs : dict
        Provenance: thresholds, calibration, config, code version, inputs, run id;
        nested values are JSON-encoded.
    model_version : str
        The version id (``[A-Za-z0-9._-]+``); rewriting it replaces its content.

    Returns
    -------
    str
        The version id now current.
    """
    path, versions, frames, token, tmp = _begin(workdir_or_store_path, candidates_df, rfi_df, rejected_df,
                                                model_version)
    if model_version not in versions:
        versions.append(model_version)
    full_attrs = {**attrs, "model_version": model_version, "current_version": model_version,
                  "catalog_versions": versions}  # fmt: skip
    os.makedirs(os.path.dirname(tmp), exist_ok=True)
    try:
        _write_version(tmp, None, frames, full_attrs)
        _write_version(tmp, f"versions/{model_version}", frames, {**attrs, "model_version": model_version})
        for old in versions:
            src = os.path.join(path, "versions", old)
            if old != model_version and os.path.isdir(src):
                _link_tree(src, os.path.join(tmp, "versions", old))
        _publish(tmp, path, token)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("catalog %s: version %s current (%d candidates)", path, model_version, len(candidates_df))
    return model_version


def _publish(tmp: str, path: str, token: str) -> None:
    """Swap the fully written ``tmp`` store in for ``path``."""
    if not os.path.exists(path):
        os.rename(tmp, path)
        return
    trash = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.old-{token}")
    os.rename(path, trash)
    os.rename(tmp, path)
    shutil.rmtree(trash, ignore_errors=True)


def _siblings(path: str, kind: str) -> list[str]:
    """Temporary (``kind="tmp"``) or trash (``"old"``) directories of ``path``, oldest first."""
    pattern = os.path.join(glob.escape(os.path.dirname(path)), f".{glob.escape(os.path.basename(path))}.{kind}-*")
    found = []
    for p in glob.glob(pattern):
        try:
            found.append((os.stat(p).st_mtime_ns, p))
        except FileNotFoundError:
            continue
    return [p for _, p in sorted(found)]


def _recover(path: str) -> None:
    """Undo what a killed writer left behind (called by the single writer before it writes).

    Killed between the two renames of :func:`_publish`: no store, a complete trash; the
    trash (the old store) is put back. Killed while building or after the swap: stale
    temporaries or trash beside a complete store; they are removed.
    """
    trash = _siblings(path, "old")
    if not os.path.exists(path) and trash:
        os.rename(trash.pop(), path)
        logger.warning("catalog %s: restored the previous store after an interrupted publish", path)
    for stale in trash + _siblings(path, "tmp"):
        shutil.rmtree(stale, ignore_errors=True)


# --------------------------------------------------------------------------- reading


def open_catalog(
    path: str | os.PathLike, version: str | None = None, *, group: str | None = None
) -> xr.Dataset:
    """Open the current catalog, or ``version``; ``group="rfi"`` / ``"rejected"`` for diagnostics.

    Parameters
    ----------
    path : path
        Work directory or store.
    version : str, optional
        A version id; None opens the root (the current version).
    group : {None, "rfi", "rejected"}
        Which node of that version.

    Returns
    -------
    xarray.Dataset
        Loaded into memory, with JSON attributes decoded.
    """
    store = store_path(path).rstrip("/")
    parts = ([f"versions/{version}"] if version else []) + ([group] if group else [])
    node = "/".join(parts) or None
    for attempt in range(_OPEN_TRIES):
        # absent only between the two renames of a publish; after that, a killed writer's trash
        source = store if os.path.exists(store) or attempt < _OPEN_TRIES // 2 else next(
            reversed(_siblings(store, "old")), store)
        before = _inode(source)
        try:
            # chunks=None: read with numpy, not as dask graphs on whatever cluster the caller runs in
            with xr.open_zarr(source, group=node, consolidated=False, zarr_format=3, chunks=None) as ds:
                loaded = ds.load()
        except Exception:  # noqa: BLE001 - a store swapped while read mixes two versions: read again
            if before is not None and _inode(source) == before or attempt == _OPEN_TRIES - 1 or not os.path.exists(
                    os.path.dirname(os.path.abspath(store))):
                raise
        else:
            if before is not None and _inode(source) == before:  # no swap while reading: one store, whole
                break
        time.sleep(0.05)
    else:
        raise RuntimeError(f"{store}: the catalog kept changing while it was read")
    loaded.attrs = decode_attrs(loaded.attrs)
    return loaded


def _inode(path: str) -> int | None:
    try:
        return os.stat(path).st_ino
    except FileNotFoundError:
        return None


def list_versions(path: str | os.PathLike) -> list[str]:
    """Version ids in the store, in first-write order."""
    return _existing_versions(store_path(path))


# --------------------------------------------------------------------------- appending (incremental runs)

GROUPS = ("candidates", "rfi", "rejected")  # the three tables of a version; "candidates" is the node itself


def version_attrs(path: str | os.PathLike, version: str | None = None) -> dict | None:
    """Decoded attributes of ``version`` (None: the current one), or None when absent; no rows are read."""
    store = store_path(path).rstrip("/")
    node = f"versions/{version}" if version else ""
    try:
        group = zarr.open_group(store, path=node, mode="r", zarr_format=3)
    except (FileNotFoundError, ValueError, KeyError, zarr.errors.GroupNotFoundError):
        return None
    return decode_attrs(dict(group.attrs))


def current_version(path: str | os.PathLike) -> str | None:
    """The version the store's root holds; None when there is no catalog."""
    attrs = version_attrs(path)
    return None if attrs is None else attrs.get("current_version", attrs.get("model_version"))


def _node(base: str | None, table: str) -> str:
    parts = [p for p in (base, None if table == "candidates" else table) if p]
    return "/".join(parts)


def _fill(dtype: np.dtype, n: int) -> np.ndarray:
    """Values of a column a row does not have: NaN, -1, False or ""."""
    if dtype.kind in "OTUS":
        return np.array([""] * n, dtype=_STRING)
    if dtype.kind == "f":
        return np.full(n, np.nan, dtype)
    if dtype.kind == "b":
        return np.zeros(n, bool)
    return np.full(n, -1, dtype)


def _as_dtype(name: str, values: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """``values`` in the stored column's dtype; refuses a cast that would change a value."""
    if dtype.kind in "OTUS":
        return np.array([str(v) for v in values], dtype=_STRING)
    if values.dtype.kind == "f" and dtype.kind in "iub":
        finite = np.isfinite(values)
        if not (finite.all() and np.array_equal(values, np.round(values))):
            raise ValueError(f"catalog column {name!r}: cannot append non-integer values to a {dtype} column")
    return values.astype(dtype)


def _unshare(path: str) -> None:
    """Give a hard-linked file its own copy, so that writing it leaves the published store untouched."""
    if os.path.isfile(path) and os.stat(path).st_nlink > 1:
        tmp = f"{path}.unshare-{uuid.uuid4().hex[:8]}"
        shutil.copy2(path, tmp)
        os.replace(tmp, path)


def _unshare_metadata(node_dir: str, skip: str | None) -> None:
    """Unshare every ``zarr.json`` of a node and its children (``skip``: a child folder left alone)."""
    for folder, dirs, files in os.walk(node_dir):
        if folder == node_dir and skip in dirs:
            dirs.remove(skip)
        if "zarr.json" in files:
            _unshare(os.path.join(folder, "zarr.json"))


def _append_node(root: str, node: str, frame: pd.DataFrame) -> tuple[int, int]:
    """Append ``frame`` to the arrays of one node of the (private, hard-linked) store at ``root``.

    Returns the ``[start, stop)`` rows it added. Columns the node lacks are added (earlier rows
    get the fill value); columns the frame lacks get the fill value in the new rows.
    """
    group = zarr.open_group(root, path=node, mode="r+", zarr_format=3)
    arrays = dict(group.arrays())
    lengths = {int(a.shape[0]) for a in arrays.values()}
    if len(lengths) > 1:
        raise ValueError(f"{root}/{node}: arrays of different lengths {sorted(lengths)}; the catalog is damaged")
    n_old, m = (lengths.pop() if lengths else 0), len(frame)
    if m == 0:
        return n_old, n_old
    columns = {str(c): _column_array(frame[c]) for c in frame.columns}
    node_dir = os.path.join(root, node)
    if n_old == 0:  # no earlier rows: write the node's arrays afresh (their dtypes from these rows)
        for name, arr in arrays.items():
            columns.setdefault(name, _fill(arr.dtype, m))
            del group[name]
        _to_zarr(xr.Dataset({k: (DIM, v) for k, v in columns.items()}), root, node or None, "a")
        return 0, m
    for name, arr in arrays.items():
        values = _as_dtype(name, columns.pop(name, _fill(arr.dtype, m)), arr.dtype)
        chunk = int(arr.chunks[0])
        _unshare(os.path.join(node_dir, name, "zarr.json"))
        for k in range(n_old // chunk, -(-(n_old + m) // chunk)):  # chunks the new rows fall in
            _unshare(os.path.join(node_dir, name, "c", str(k)))
        arr.resize((n_old + m,))
        arr[n_old:] = values
    if columns:  # new columns: whole arrays of their own (fill values for the earlier rows)
        extra = {k: (DIM, np.concatenate([_fill(v.dtype, n_old).astype(v.dtype), v])) for k, v in columns.items()}
        _to_zarr(xr.Dataset(extra), root, node or None, "a")
    return n_old, n_old + m


def append_rows(
    workdir_or_store_path: str | os.PathLike,
    candidates_df: pd.DataFrame,
    rfi_df: pd.DataFrame,
    rejected_df: pd.DataFrame,
    *,
    attrs: dict,
    model_version: str,
) -> dict[str, tuple[int, int]]:
    """Append rows to the current catalog version, without rewriting its earlier rows.

    Parameters
    ----------
    workdir_or_store_path : path
        The work directory or the store.
    candidates_df, rfi_df, rejected_df : pandas.DataFrame
        The new rows of the three tables (zero rows allowed); the caller removes duplicates.
    attrs : dict
        The version's attributes after the append (they replace the earlier ones; the
        bookkeeping ``model_version``, ``current_version``, ``catalog_versions`` is kept).
    model_version : str
        Must be the current version: appends go to the current version only.

    Returns
    -------
    dict
        ``{"candidates": (start, stop), "rfi": ..., "rejected": ...}``: the rows added to each table.
    """
    path, versions, frames, token, tmp = _begin(workdir_or_store_path, candidates_df, rfi_df, rejected_df,
                                                model_version)
    current = current_version(path)
    if current != model_version:
        raise ValueError(f"{path}: appends go to the current catalog version ({current}), not {model_version!r}")
    added: dict[str, dict[str, tuple[int, int]]] = {}
    try:
        _link_tree(path, tmp)
        for base in (None, f"versions/{model_version}"):
            _unshare_metadata(os.path.join(tmp, base or ""), skip="versions" if base is None else None)
        for base, node_attrs in ((None, {**attrs, "model_version": model_version, "current_version": model_version,
                                          "catalog_versions": versions}),
                                 (f"versions/{model_version}", {**attrs, "model_version": model_version})):
            added[base or ""] = {t: _append_node(tmp, _node(base, t), frames[t]) for t in GROUPS}
            zarr.open_group(tmp, path=base or "", mode="r+", zarr_format=3).attrs.put(encode_attrs(node_attrs))
        if added[""] != added[f"versions/{model_version}"]:
            raise RuntimeError(f"{path}: the root and versions/{model_version} differ in length: damaged")
        _publish(tmp, path, token)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)
    rows = added[""]
    logger.info("catalog %s: version %s, appended %s", path, model_version,
                {t: b - a for t, (a, b) in rows.items()})
    return rows


def version_frames(path: str | os.PathLike, version: str | None = None) -> dict[str, pd.DataFrame]:
    """The three tables of a version as DataFrames (rows in stored order)."""
    return {t: open_catalog(path, version, group=None if t == "candidates" else t).to_dataframe().reset_index(drop=True)
            for t in GROUPS}
