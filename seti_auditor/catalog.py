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
and the trash removed. A reader therefore sees the complete old store, the
complete new one, or, for the instant between the two renames, no store
(:func:`open_catalog` retries that briefly); never a half-written root. Writing
the same ``model_version`` again replaces that version's content exactly;
nothing is appended. One writer at a time is assumed (the flow's catalog step).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import time
import uuid

import numpy as np
import pandas as pd
import xarray as xr

logger = logging.getLogger(__name__)

STORE_NAME = "catalog.zarr"
DIM = "candidate"
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


def _write_version(root: str, group: str | None, frames: dict[str, pd.DataFrame], attrs: dict) -> None:
    """Write candidates at ``group`` and the diagnostics as its ``rfi``/``rejected`` children."""
    ds = frame_to_dataset(frames["candidates"], attrs)
    ds.to_zarr(root, group=group, mode="w", consolidated=False, zarr_format=3)
    for name in ("rfi", "rejected"):
        sub = f"{group}/{name}" if group else name
        frame_to_dataset(frames[name]).to_zarr(root, group=sub, mode="w", consolidated=False)


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
        with xr.open_zarr(path, consolidated=False) as ds:
            attrs = dict(ds.attrs)
    except (OSError, ValueError, KeyError):
        return []
    return list(decode_attrs(attrs).get("catalog_versions", []))


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
    if not _VERSION_RE.match(model_version):
        raise ValueError(f"model_version {model_version!r} must match {_VERSION_RE.pattern}")
    path = store_path(workdir_or_store_path).rstrip("/")
    versions = _existing_versions(path)
    if model_version not in versions:
        versions.append(model_version)
    full_attrs = {**attrs, "model_version": model_version, "current_version": model_version,
                  "catalog_versions": versions}  # fmt: skip
    frames = {"candidates": candidates_df, "rfi": rfi_df, "rejected": rejected_df}

    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    token = uuid.uuid4().hex[:12]
    tmp = os.path.join(parent, f".{os.path.basename(path)}.tmp-{token}")
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
    store = store_path(path)
    parts = ([f"versions/{version}"] if version else []) + ([group] if group else [])
    node = "/".join(parts) or None
    for attempt in range(20):  # the store is absent only between the two renames of a publish
        try:
            with xr.open_zarr(store, group=node, consolidated=False) as ds:
                loaded = ds.load()
            break
        except FileNotFoundError:
            if attempt == 19 or not os.path.exists(os.path.dirname(os.path.abspath(store))):
                raise
            time.sleep(0.05)
    loaded.attrs = decode_attrs(loaded.attrs)
    return loaded


def list_versions(path: str | os.PathLike) -> list[str]:
    """Version ids in the store, in first-write order."""
    return _existing_versions(store_path(path))
