"""Prefect tasks of the ingest flow: thin wrappers of :mod:`seti_auditor.ingest`.

Tasks take and return paths, regions and small manifest rows, never arrays. A bad input
file is not an error of the task (retrying cannot fix it): it comes back as a rejection
with its reason. Anything else (a lost worker, a full disk) raises and is retried.
"""

from __future__ import annotations

import types

from prefect import get_run_logger, task

from seti_auditor import ingest
from seti_auditor.errors import InputFileError
from seti_auditor.tiling import TilingConfig


@task(name="inspect-files", retries=2, retry_delay_seconds=2,
      task_run_name="inspect {paths[0]} (+{n_more} more)")
def inspect_files(paths: list[str], tiling: TilingConfig, n_more: int = 0) -> list[dict]:
    """Validate, hash and plan a batch of files (one task per batch keeps the graph small)."""
    rows = [ingest.inspect_file(path, tiling) for path in paths]
    logger = get_run_logger()
    for row in rows:
        if row["status"] == ingest.REJECTED:
            logger.warning("rejected %s: %s", row["name"], row["reason"])
    return rows


@task(name="tile-region", retries=2, retry_delay_seconds=2,
      task_run_name="tile {name} tiles {region.f0}-{region.f1}")
def tile_region(store: str, row: dict, region: ingest.Region, tiling: TilingConfig, name: str = "") -> dict:
    """Tile one channel region of one file into its chunk-aligned region of the store."""
    try:
        n = ingest.ingest_region(store, types.SimpleNamespace(**row), region, tiling)
    except InputFileError as exc:
        get_run_logger().warning("rejected %s: %s", row["name"], exc.reason)
        return {"file_id": region.file_id, "ok": False, "reason": exc.reason, "n_tiles": 0}
    return {"file_id": region.file_id, "ok": True, "reason": "", "n_tiles": n}
