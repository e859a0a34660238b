"""Prefect tasks of the ingest flow: thin wrappers of :mod:`seti_auditor.ingest`.

Tasks take and return paths, regions and small manifest rows, never arrays. A bad input
file is not an error of the task (retrying cannot fix it): it comes back as a rejection
with its reason. Anything else (a lost worker, a full disk) raises and is retried.

Caching. ``inspect-files`` hashes every byte of its files; a scheduled run over an archive
that barely changes would re-read the whole archive each time. Its result is therefore
cached (persisted in Prefect's result storage, ``PREFECT_LOCAL_STORAGE_PATH``) under a key
of what the rows depend on, read from ``stat`` without opening the files: each file's
resolved path, device, inode, size, modification and change times (ns), the tiling, and a
digest of the code that builds the rows. A file rewritten, replaced, touched or re-permitted
changes its key and is inspected again; the cache expires after ``INSPECT_CACHE_DAYS`` so
that every file is re-hashed now and then. ``tile-regions`` is not cached: its result is its
Zarr region, written idempotently and recorded by a marker (see :mod:`seti_auditor.ingest`).
"""

from __future__ import annotations

import dataclasses
import datetime
import functools
import hashlib
import json
import os
import types
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from seti_auditor import ingest
from seti_auditor.errors import InputFileError
from seti_auditor.tiling import TilingConfig
from tasks.retries import retry_unless_disk_refuses


def _inspect_name(parameters: dict) -> str:
    """``inspect FILE (+N more)``: the task run's name in the UI."""
    return f"inspect {Path(parameters['paths'][0]).name} (+{len(parameters['paths']) - 1} more)"


INSPECT_CACHE_DAYS = 30  # a cached inspection is trusted this long, then the files are hashed again
_ROW_CODE = ("seti_auditor/ingest.py", "seti_auditor/tilestore.py", "seti_auditor/tiling.py", "seti_auditor/formats")


@functools.lru_cache(maxsize=1)
def _row_code_digest() -> str:
    """Digest of the sources that turn a file into its manifest row (a change invalidates the cache)."""
    root = Path(ingest.__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for rel in _ROW_CODE:
        for path in sorted((root / rel).rglob("*.py")) if (root / rel).is_dir() else [root / rel]:
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def inspect_cache_key(context, parameters: dict) -> str | None:
    """The cache key of one batch (module docstring); None (no caching) when a file cannot be stat'ed."""
    try:
        files = []
        for p in parameters["paths"]:
            st = os.stat(p)
            files.append([str(Path(p).resolve()), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    except OSError:
        return None
    what = {"code": _row_code_digest(), "tiling": dataclasses.asdict(parameters["tiling"]), "files": files}
    return "inspect-files-" + hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:32]


@task(name="inspect-files", retries=2, retry_delay_seconds=2, task_run_name=_inspect_name,
      cache_key_fn=inspect_cache_key, cache_expiration=datetime.timedelta(days=INSPECT_CACHE_DAYS))
def inspect_files(paths: list[str], tiling: TilingConfig) -> list[dict]:
    """Validate, hash and plan a batch of files (one task per batch keeps the graph small)."""
    rows = [ingest.inspect_file(path, tiling) for path in paths]
    logger = get_run_logger()
    for row in rows:
        if row["status"] == ingest.REJECTED:
            logger.warning("rejected %s: %s", row["name"], row["reason"])
    return rows


def _tile_name(parameters: dict) -> str:
    """``tile FILE frequency tiles a-b (+N more regions)``: the task run's name in the UI."""
    first, n = parameters["regions"][0], len(parameters["regions"])
    files = parameters["n_files"]
    more = f" (+{n - 1} more region{'s' if n > 2 else ''} of {files} file{'s' if files > 1 else ''})" if n > 1 else ""
    return f"tile {Path(first.path).name} frequency tiles {first.f0}-{first.f1}{more}"


@task(name="tile-regions", retries=2, retry_delay_seconds=2, cache_policy=NO_CACHE, task_run_name=_tile_name,
      retry_condition_fn=retry_unless_disk_refuses)
def tile_regions(store: str, rows: dict[int, dict], regions: list[ingest.Region], tiling: TilingConfig,
                 n_files: int = 1) -> list[dict]:
    """Tile a batch of channel regions (:func:`seti_auditor.ingest.batch_regions`), each into its
    chunk-aligned region of the store; ``rows``: manifest rows by file id, ``n_files``: for the name.

    A bad file rejects its own regions and the batch goes on; anything else raises and the
    batch is retried, skipping the regions it already wrote (their completion markers).
    """
    return [_tile_one(store, rows[r.file_id], r, tiling) for r in regions]


def _tile_one(store: str, row: dict, region: ingest.Region, tiling: TilingConfig) -> dict:
    try:
        n = ingest.ingest_region(store, types.SimpleNamespace(**row), region, tiling)
    except InputFileError as exc:
        get_run_logger().warning("rejected %s: %s", row["name"], exc.reason)
        return {"file_id": region.file_id, "ok": False, "reason": exc.reason, "n_tiles": 0}
    return {"file_id": region.file_id, "ok": True, "reason": "", "n_tiles": n}
