"""Ingest: archive files -> tile store (I/O; the Prefect tasks are thin wrappers of these).

Three steps, each a plain function:

* :func:`inspect_file` validates a file's header, hashes its bytes and plans its tiles;
* :func:`plan_ingest` compares the inspected files with the store's manifest, decides what
  is new, changed or unchanged, groups cadences and allocates chunk-aligned tile ranges;
* :func:`ingest_region` reads one channel region of one file, normalises and tiles it and
  writes its chunk-aligned region of the store.

Interrupted runs. The manifest is committed at the end of an ingest run, so a run killed
half-way leaves tiles in the store that no manifest row owns. The next run allocates its
files from the end of the last committed range (the same ranges again when the archive is
the same) and invalidates whatever lies beyond, so no orphan tile is ever counted twice.
A region whose write completed is recorded by an empty marker file in
``<store>.regions/`` (named by its tile range and a digest of the file's content, its
manifest row and the tiling); a rerun that plans the same region skips it when the store
still holds it (its coordinates match), so completed regions are not redone.

Files that change on disk: every row records ``stat_key`` (device, inode, size and
modification time) when the file is hashed; a file whose key changes during hashing,
before its data are read or while they are read is rejected with a transient reason, and
the next run takes it again.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import types
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

from seti_auditor import formats, tilestore
from seti_auditor.cadence import CadenceSlot, GroupingConfig, ScanInfo, UNASSIGNED, group_cadences
from seti_auditor.errors import InputFileError
from seti_auditor.tiling import FilePlan, TilingConfig, UnusableDataError, plan_tiles, tile_stats, tiles_for_region

log = logging.getLogger(__name__)

INGESTED, REJECTED, SUPERSEDED = "ingested", "rejected", "superseded"
TRANSIENT = "transient: "  # prefix of a rejection reason that a rerun should retry (lost worker, full disk)


def find_inputs(archive_dir: str | os.PathLike) -> list[Path]:
    """Every observation file under ``archive_dir`` (recursively), in a stable order."""
    root = Path(archive_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: archive directory does not exist")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in formats.SUPPORTED_SUFFIXES)


def inspect_file(path: str | os.PathLike, cfg: TilingConfig) -> dict:
    """A manifest row for one file: size, content hash, header summary, or the rejection reason."""
    path = Path(path)
    row = {name: _default(dtype) for name, dtype in tilestore.MANIFEST_COLUMNS.items()}
    row.update(path=str(path.resolve()), name=path.name, status=INGESTED)
    try:
        before = stat_key(path)
        row["size_bytes"] = path.stat().st_size
        row["content_hash"] = tilestore.content_hash(path)
        header = formats.read_header(path)
        if stat_key(path) != before:
            raise InputFileError(path, f"{TRANSIENT}file changed while it was being inspected")
        row["stat_key"] = before
        plan = plan_tiles(cfg, header)
        if plan.n_tiles == 0:
            raise InputFileError(
                path, f"{plan.nints} integrations x {plan.nchans} channels hold no whole "
                f"{cfg.tile_time} x {cfg.tile_freq} tile")
    except (InputFileError, OSError) as exc:
        row.update(status=REJECTED, reason=_reason(exc))
        return row
    nints, tsamp = int(header["nsamples"]), float(header["tsamp"])
    row.update(
        source_name=str(header.get("source_name", "")),
        tstart_mjd=float(header["tstart"]),
        tstop_mjd=float(header["tstart"]) + nints * tsamp / 86400.0,
        fch1_mhz=float(header["fch1"]),
        foff_mhz=float(header["foff"]),
        nchans=int(header["nchans"]),
        nints=nints,
        tsamp_s=tsamp,
        n_tiles=plan.n_tiles,
        coarse_width=plan.coarse,
    )
    return row


def stat_key(path: str | os.PathLike) -> str:
    """``device:inode:size:mtime_ns`` of a file: changes when it is rewritten or replaced."""
    st = os.stat(path)
    return f"{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"


def _default(dtype):
    if dtype is object:
        return ""
    if dtype is bool:
        return False
    if np.issubdtype(dtype, np.floating):
        return np.nan
    return -1


def _reason(exc: BaseException) -> str:
    return exc.reason if isinstance(exc, InputFileError) else f"{type(exc).__name__}: {exc}"


@dataclasses.dataclass(frozen=True)
class Region:
    """One unit of ingest work: frequency tiles ``[f0, f1)`` of one file."""

    file_id: int  # manifest row
    path: str  # the input file
    f0: int  # first frequency tile
    f1: int  # one past the last frequency tile
    tile_start: int  # store index of the region's first tile (a chunk boundary)


@dataclasses.dataclass(frozen=True)
class IngestPlan:
    """What one ingest run does."""

    manifest: pd.DataFrame  # the manifest after this run (new rows provisionally 'ingested')
    regions: list[Region]  # regions to tile and write
    capacity: int  # tile-dimension length the store needs
    new_files: list[int]  # manifest rows ingested by this run
    unchanged: list[str]  # names of files already ingested with the same content
    superseded_ranges: list[tuple[int, int]]  # store ranges of replaced files, to invalidate
    cadence_updates: list[int]  # earlier rows whose cadence slot changed


def plan_ingest(inspected: list[dict], manifest: pd.DataFrame, cfg: TilingConfig, capacity: int,
                cadence_cfg: GroupingConfig = GroupingConfig(),
                cadence_table: dict[str, CadenceSlot] | None = None) -> IngestPlan:
    """Decide new/changed/unchanged files, group cadences and allocate tile ranges.

    Idempotent: a file whose path and content hash already appear as ingested, or as
    rejected for a reason in its content, is skipped; a file whose content changed
    supersedes its earlier row; files rejected for a transient reason are retried (their row
    is replaced). An observation is ingested once, whatever its path: a file whose content is
    already ingested from a path that is not among ``inspected`` (the archive moved, or the
    file came again in another archive) counts as unchanged; a second copy within the inputs
    is rejected as a copy of the first.

    New ranges follow the last range the manifest records, on chunk boundaries; tiles between
    there and ``capacity`` (the store's length) were written by an interrupted run that never
    committed its manifest: the new files take their place (the same ranges when the archive
    is the same), and the rest is returned in ``superseded_ranges`` to be invalidated.
    """
    manifest = manifest.copy().reset_index(drop=True)
    current = {(r.path, r.content_hash): i for i, r in manifest.iterrows() if r.status == INGESTED}
    known_bad = {(r.path, r.content_hash) for r in manifest.itertuples()
                 if r.status == REJECTED and r.content_hash and not r.reason.startswith(TRANSIENT)}
    live_by_path = {r.path: i for i, r in manifest.iterrows() if r.status == INGESTED}
    by_content = {r.content_hash: r for r in manifest.itertuples() if r.status == INGESTED}
    inputs = {row["path"] for row in inspected}
    unchanged, superseded, new_rows = [], [], []
    for row in inspected:
        key = (row["path"], row["content_hash"])
        if key in current:
            unchanged.append(row["name"])
            continue
        if key in known_bad:
            continue
        same = by_content.get(row["content_hash"]) if row["status"] == INGESTED else None
        if same is not None and same.path not in inputs:  # moved, or met again in another archive
            unchanged.append(row["name"])
            continue
        if same is not None:  # two copies of one observation among the inputs
            row = {**row, "status": REJECTED, "reason": f"same content as {same.name} (a copy; ingested once)"}
        elif row["status"] == INGESTED:
            by_content[row["content_hash"]] = types.SimpleNamespace(path=row["path"], name=row["name"])
        if row["status"] == INGESTED and row["path"] in live_by_path:
            old = live_by_path[row["path"]]
            manifest.loc[old, ["status", "reason"]] = [SUPERSEDED, f"content changed to {row['content_hash']}"]
            superseded.append((int(manifest.loc[old, "tile_start"]), int(manifest.loc[old, "tile_stop"])))
        manifest = manifest[~((manifest.path == row["path"]) & (manifest.status == REJECTED))]
        new_rows.append(row)
    manifest = manifest.reset_index(drop=True)
    store_length = capacity
    stops = manifest["tile_stop"].to_numpy()
    capacity = int(max(0, stops.max())) if stops.size else 0  # end of the ranges the manifest owns
    first_new = len(manifest)
    manifest = pd.concat([manifest, pd.DataFrame(new_rows, columns=manifest.columns)], ignore_index=True) \
        if new_rows else manifest
    manifest = manifest.astype({k: v for k, v in tilestore.MANIFEST_COLUMNS.items() if v is not object})

    before = manifest[["cadence_id", "scan_index", "on_source"]].copy()
    _assign_cadences(manifest, cadence_cfg, cadence_table or {})
    changed = (manifest[["cadence_id", "scan_index", "on_source"]] != before).any(axis=1)
    cadence_updates = [i for i in range(first_new) if changed[i] and manifest.loc[i, "status"] == INGESTED]

    regions, new_files = [], []
    chunk = cfg.chunk_tiles
    for i in range(first_new, len(manifest)):
        row = manifest.loc[i]
        if row.status != INGESTED:
            continue
        plan = plan_from_row(row, cfg)
        padded = -(-plan.n_tiles // chunk) * chunk
        manifest.loc[i, ["tile_start", "tile_stop"]] = [capacity, capacity + padded]
        for f0, f1 in plan.regions():
            regions.append(Region(i, row.path, f0, f1, capacity + f0 * plan.n_time_tiles))
        capacity += padded
        new_files.append(i)
    if store_length > capacity:  # orphans of an interrupted run beyond the new ranges
        superseded.append((capacity, store_length))
    return IngestPlan(manifest, regions, capacity, new_files, unchanged, superseded, cadence_updates)


def batch_regions(regions: list[Region], cfg: TilingConfig) -> list[list[Region]]:
    """Consecutive regions grouped into ingest tasks of at most ``task_channels`` channels each.

    A large file's regions already hold about that many channels and stay one per task; the
    regions of small files (a few coarse channels each) share a task, so that an archive of
    many small files does not pay a task's bookkeeping per file. Grouping changes only who
    writes a region, never where: every region is still written (and marked done) on its own.
    """
    budget = cfg.channels_per_task or (1 << 20)
    batches: list[list[Region]] = []
    used = budget
    for region in regions:
        channels = (region.f1 - region.f0) * cfg.step_freq
        if used + channels > budget:
            batches.append([])
            used = 0
        batches[-1].append(region)
        used += channels
    return batches


def plan_from_row(row, cfg: TilingConfig) -> FilePlan:
    """The tile plan of a file from its manifest row (no file access)."""
    header = {"nchans": int(row.nchans), "nsamples": int(row.nints), "foff": float(row.foff_mhz),
              "nfpc": int(row.coarse_width)}
    return plan_tiles(cfg, header)


def _assign_cadences(manifest: pd.DataFrame, cfg: GroupingConfig, table: dict[str, CadenceSlot]) -> None:
    live = manifest[manifest.status == INGESTED]
    scans = [
        ScanInfo(r.name, r.source_name, r.tstart_mjd, r.tstop_mjd,
                 min(r.fch1_mhz, r.fch1_mhz + (r.nchans - 1) * r.foff_mhz),
                 max(r.fch1_mhz, r.fch1_mhz + (r.nchans - 1) * r.foff_mhz))
        for r in live.itertuples()
    ]
    slots = group_cadences(scans, cfg)
    slots.update({k: v for k, v in table.items() if k in slots})
    for i in manifest.index:
        slot = slots.get(manifest.at[i, "name"], UNASSIGNED) if manifest.at[i, "status"] == INGESTED else UNASSIGNED
        manifest.loc[i, ["cadence_id", "scan_index", "on_source"]] = [slot.cadence_id, slot.scan_index, slot.on_source]


def region_coords(row, plan: FilePlan, f0: int, f1: int, file_id: int, n_premasked, max_abs_z) -> dict:
    """Per-tile coordinates of frequency tiles ``[f0, f1)`` of a file (all time tiles)."""
    cfg = plan.cfg
    nt = plan.n_time_tiles
    f_idx = np.repeat(np.arange(f0, f1), nt)
    t_idx = np.tile(np.arange(nt), f1 - f0)
    chan_start = f_idx.astype(np.int64) * cfg.step_freq
    edge_a = row.fch1_mhz + chan_start * row.foff_mhz
    edge_b = row.fch1_mhz + (chan_start + cfg.tile_freq - 1) * row.foff_mhz
    time_start = (t_idx * cfg.step_time).astype(np.int32)
    n = f_idx.size
    return {
        "valid": np.ones(n, bool),
        "file_id": np.full(n, file_id, np.int32),
        "source_file": np.full(n, row.name, object),
        "source_name": np.full(n, row.source_name, object),
        "cadence_id": np.full(n, row.cadence_id, object),
        "scan_index": np.full(n, row.scan_index, np.int8),
        "on_source": np.full(n, bool(row.on_source), bool),
        "freq_min_mhz": np.minimum(edge_a, edge_b),
        "freq_max_mhz": np.maximum(edge_a, edge_b),
        "tstart_mjd": row.tstart_mjd + time_start * row.tsamp_s / 86400.0,
        "chan_start": chan_start,
        "time_start": time_start,
        "n_premasked": n_premasked,
        "max_abs_z": max_abs_z,
    }


def ingest_region(store: str | os.PathLike, row, region: Region, cfg: TilingConfig) -> int:
    """Tile one region of one file into the store; returns the number of tiles in it.

    A region this store already holds from an interrupted run (same file content, manifest
    row and tiling; see the module docstring) is not read or written again.
    Raises :class:`InputFileError` naming the file when its data cannot be read or
    normalised (all non-finite, constant, changed on disk since inspection or while read).
    """
    path = Path(region.path)
    digest = region_digest(row, region, cfg)
    planned = plan_from_row(row, cfg)
    n_real = (region.f1 - region.f0) * planned.n_time_tiles
    stop = region.tile_start + -(-n_real // cfg.chunk_tiles) * cfg.chunk_tiles
    if _region_done(store, region, stop, digest, row, planned):
        log.info("%s: tiles %d-%d already in the store, not redone", path.name, region.tile_start, stop)
        return n_real
    try:
        before = stat_key(path)
        if getattr(row, "stat_key", "") and before != row.stat_key:
            raise InputFileError(path, f"{TRANSIENT}file changed on disk since it was inspected")
        header = formats.read_header(path)
        if int(header["nchans"]) != int(row.nchans) or int(header["nsamples"]) != int(row.nints):
            raise InputFileError(path, "file changed on disk since it was inspected (shape differs)")
        plan = plan_tiles(cfg, header)
        c0, c1 = plan.channel_span(region.f0, region.f1)
        data_TxF = formats.read_channels(path, c0, c1)
        if stat_key(path) != before:
            raise InputFileError(path, f"{TRANSIENT}file changed while it was being read")
        tiles_NxTxF = tiles_for_region(data_TxF, c0, plan, region.f0, region.f1)
    except UnusableDataError as exc:
        raise InputFileError(path, str(exc)) from None
    except OSError as exc:
        raise InputFileError(path, f"read failed: {exc}") from None
    n_masked, max_abs = tile_stats(tiles_NxTxF, cfg.premask_sigma)
    coords = region_coords(row, plan, region.f0, region.f1, region.file_id, n_masked, max_abs)
    tiles_NxTxF, coords = tilestore.pad_region(tiles_NxTxF, coords, cfg)
    _drop_markers(store, region.tile_start, region.tile_start + tiles_NxTxF.shape[0])
    tilestore.write_region(store, region.tile_start, tiles_NxTxF, coords, cfg)
    _markers_dir(store).mkdir(exist_ok=True)
    (_markers_dir(store) / f"{region.tile_start}-{region.tile_start + tiles_NxTxF.shape[0]}-{digest}").touch()
    return int(n_masked.size)


# ------------------------------------------------------------------------ completed regions


def _markers_dir(store: str | os.PathLike) -> Path:
    return Path(f"{os.fspath(store).rstrip('/')}.regions")


def region_digest(row, region: Region, cfg: TilingConfig) -> str:
    """What a region's tiles depend on: the file's content, its manifest row, the region, the tiling."""
    fields = {name: getattr(row, name) for name in tilestore.MANIFEST_COLUMNS if name not in ("status", "reason")}
    what = {"row": fields, "region": dataclasses.asdict(region), "tiling": dataclasses.asdict(cfg)}
    text = json.dumps(what, sort_keys=True, default=lambda v: v.item() if hasattr(v, "item") else str(v))
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _drop_markers(store: str | os.PathLike, start: int, stop: int) -> None:
    """Forget completed regions overlapping tiles ``[start, stop)`` (about to be overwritten)."""
    folder = _markers_dir(store)
    if not folder.is_dir():
        return
    for marker in folder.iterdir():
        a, b, _ = marker.name.split("-", 2)
        if int(a) < stop and start < int(b):
            marker.unlink(missing_ok=True)


def _region_done(store, region: Region, stop: int, digest: str, row, plan: FilePlan) -> bool:
    """A marker for exactly this region and digest, and the store still holds it (not invalidated since)."""
    if not (_markers_dir(store) / f"{region.tile_start}-{stop}-{digest}").exists():
        return False
    g = zarr.open_group(os.fspath(store), mode="r")
    sl = slice(region.tile_start, stop)
    n_real = (region.f1 - region.f0) * plan.n_time_tiles
    expect = region_coords(row, plan, region.f0, region.f1, region.file_id, None, None)
    valid = np.asarray(g["valid"][sl])
    return bool(valid[:n_real].all() and not valid[n_real:].any()
                and np.array_equal(np.asarray(g["file_id"][sl])[:n_real], expect["file_id"])
                and np.array_equal(np.asarray(g["chan_start"][sl])[:n_real], expect["chan_start"])
                and np.array_equal(np.asarray(g["time_start"][sl])[:n_real], expect["time_start"])
                and list(map(str, np.asarray(g["source_file"][sl])[:n_real])) == list(map(str, expect["source_file"])))


def cadence_coords(row) -> dict[str, np.ndarray]:
    """Cadence coordinates over a file's padded tile range (padding tiles get the fill values)."""
    n = int(row.tile_stop) - int(row.tile_start)
    real = np.arange(n) < int(row.n_tiles)
    return {
        "cadence_id": np.where(real, row.cadence_id, "").astype(object),
        "scan_index": np.where(real, row.scan_index, -1).astype(np.int8),
        "on_source": real & bool(row.on_source),
    }
