"""The ingest flow: archive files -> ``WORKDIR/tiles.zarr``.

Reads like a ``main``: find the files, inspect them in batches on the workers, plan the
run against the store's manifest (new, changed, unchanged), write the template once,
tile every region on the workers, then record the outcome of every file in the manifest.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from flows.progress import progress_reporter
from seti_auditor import ingest, tilestore, workdir as wd
from seti_auditor.cadence import parse_cadence_table
from seti_auditor.configs import from_json
from seti_auditor.tiling import TilingConfig
from tasks.ingest import inspect_files, tile_regions


@dataclasses.dataclass(frozen=True)
class IngestSummary:
    """What an ingest run did."""

    store: str  # path of tiles.zarr
    n_inputs: int  # observation files found in the archive
    ingested: list[str]  # files tiled by this run
    unchanged: list[str]  # files already in the store with the same content
    rejected: dict[str, str]  # file name -> reason
    n_tiles: int  # valid tiles in the store after the run

    @property
    def ok(self) -> bool:
        """False only when the archive held files and none is in the store."""
        return self.n_inputs == 0 or bool(self.ingested or self.unchanged)


def _native(row) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def _run_name() -> str:
    """``ingest ARCHIVE into WORKDIR``: the run's name in the UI."""
    params = flow_run.parameters
    return f"ingest {Path(params['archive_dir']).name} into {Path(params['workdir']).name}"


@flow(name="ingest", flow_run_name=_run_name, validate_parameters=False)
def ingest_flow(archive_dir: str, workdir: str, tiling: TilingConfig | None = None,
                cadence_table: str | None = None, batch_size: int = 16) -> IngestSummary:
    """Tile every new or changed observation of ``archive_dir`` into ``workdir/tiles.zarr``."""
    tiling = from_json(TilingConfig, tiling, "tiling")  # JSON from a deployment, or a config
    with wd.locked(workdir):
        return _ingest(archive_dir, workdir, tiling, cadence_table, batch_size)


def _ingest(archive_dir: str, workdir: str, tiling: TilingConfig, cadence_table: str | None,
            batch_size: int) -> IngestSummary:
    logger = get_run_logger()
    store = tilestore.store_path(workdir)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in ingest.find_inputs(archive_dir)]
    logger.info("found %d observation files under %s", len(paths), archive_dir)

    batches = [paths[i : i + batch_size] for i in range(0, len(paths), batch_size)]
    inspected = [row for fut in [inspect_files.submit(b, tiling) for b in batches]
                 for row in fut.result()]
    table = parse_cadence_table(Path(cadence_table).read_text(), cadence_table) if cadence_table else None
    manifest = tilestore.load_manifest(store)
    plan = ingest.plan_ingest(inspected, manifest, tiling, tilestore.n_tiles(store), cadence_table=table)
    manifest = plan.manifest

    tilestore.ensure_capacity(store, plan.capacity, tiling)
    for start, stop in plan.superseded_ranges:
        tilestore.write_coords(store, start, {"valid": [False] * (stop - start)}, tiling)
    for i in plan.cadence_updates:
        tilestore.write_coords(store, int(manifest.loc[i, "tile_start"]), ingest.cadence_coords(manifest.loc[i]), tiling)

    batches = ingest.batch_regions(plan.regions, tiling)
    futures = []
    for batch in batches:
        ids = sorted({r.file_id for r in batch})
        futures.append(tile_regions.submit(str(store), {i: _native(manifest.loc[i]) for i in ids}, batch, tiling,
                                           n_files=len(ids)))
    failed: dict[int, str] = {}
    progress = progress_reporter("ingest-progress", "regions tiled", len(plan.regions))
    done = 0
    for batch, fut in zip(batches, futures):
        results = fut.result(raise_on_failure=False)
        done += len(batch)
        progress(done)
        if isinstance(results, BaseException):
            for region in batch:
                failed.setdefault(region.file_id, f"{ingest.TRANSIENT}tiling failed after retries: {results}")
            continue
        for result in results:
            if not result["ok"]:
                failed.setdefault(result["file_id"], result["reason"])
    for i, reason in failed.items():
        start, stop = int(manifest.loc[i, "tile_start"]), int(manifest.loc[i, "tile_stop"])
        tilestore.write_coords(store, start, {"valid": [False] * (stop - start)}, tiling)
        manifest.loc[i, ["status", "reason"]] = [ingest.REJECTED, reason]

    tilestore.save_manifest(store, manifest, {"archive_dir": str(Path(archive_dir).resolve())})
    new = manifest.loc[plan.new_files]
    current = {r["name"] for r in inspected}
    rejected = {r.name: r.reason for r in manifest.itertuples() if r.status == ingest.REJECTED and r.name in current}
    summary = IngestSummary(
        store=str(store),
        n_inputs=len(paths),
        ingested=sorted(new.loc[new.status == ingest.INGESTED, "name"]),
        unchanged=sorted(plan.unchanged),
        rejected=dict(sorted(rejected.items())),
        n_tiles=int(manifest.loc[manifest.status == ingest.INGESTED, "n_tiles"].sum()),
    )
    _report(summary)
    return summary


def _report(summary: IngestSummary) -> None:
    lines = [
        "# Ingest",
        f"* store: `{summary.store}`",
        f"* files found: {summary.n_inputs}; tiled now: {len(summary.ingested)}; "
        f"unchanged: {len(summary.unchanged)}; rejected: {len(summary.rejected)}",
        f"* valid tiles in the store: {summary.n_tiles}",
    ]
    create_markdown_artifact("\n".join(lines), key="ingest-summary", description="ingest summary")
    if summary.rejected:
        create_table_artifact(
            [{"file": k, "reason": v} for k, v in summary.rejected.items()],
            key="ingest-rejected", description="files rejected with their reason",
        )
