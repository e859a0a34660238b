"""The whole run SIGKILLed during ingest, during training and during scoring, then run again."""

from __future__ import annotations

import json

import pytest

from seti_auditor import catalog, scorestore, tilestore
from seti_auditor.archive import write_synthetic_archive
from seti_auditor.training import CHECKPOINTS
from tests.faults.support import (assert_same_arrays, assert_same_catalog, chunk_mtimes, finish, kill_when,
                                  read_every_chunk, start_driver)

CHUNK = 16  # tiles per Zarr chunk (--chunk-tiles of the driver)


def _markers(work):
    folder = work / "tiles.zarr.regions"
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.is_dir() else {}


def _finished_steps(work):
    return sorted(int(p.name) for p in (work / CHECKPOINTS).glob("*/steps/*") if p.name.isdigit())


@pytest.mark.slow
def test_run_killed_in_each_phase_resumes_to_the_clean_catalog(tmp_path, prefect_server):
    """Injects: SIGKILL of the whole run process (a) while ingest regions are being written, (b) after
    the first training checkpoint, (c) after two score regions; the run is started again after each.

    Must hold: (a) the rerun does not rewrite the regions completed before the kill (their chunk
    files keep their mtimes) and leaves no orphan tile counted twice; (b) training resumes from its
    last checkpoint (model.json records it) and ends with the weights of an uninterrupted run (same
    model version); (c) score regions completed before the kill are not rescored; finally the tile
    store, the score store and the catalog equal a clean run's, every chunk decodes, and no
    candidate appears twice.
    """
    archive = tmp_path / "archive"
    write_synthetic_archive(archive, cadences=1, seed=11)
    clean, work = tmp_path / "clean", tmp_path / "work"
    clean_summary = finish(start_driver(archive, clean, tmp_path / "clean.log"), tmp_path / "clean.log")

    # (a) ingest: killed once a few regions are written and before the manifest is committed
    log = tmp_path / "run.log"
    proc = start_driver(archive, work, log)
    kill_when(proc, log, lambda: len(_markers(work)) >= 3, "three ingest regions were written")
    assert not (work / "tiles.zarr" / "manifest" / "zarr.json").exists(), "killed too late: ingest had finished"
    done_regions = _markers(work)
    tile_chunks = chunk_mtimes(work / "tiles.zarr" / "tiles")
    kept_chunks = {k: v for k, v in tile_chunks.items()
                   if any(int(m.split("-")[0]) // CHUNK <= int(k.split("/")[0]) < int(m.split("-")[1]) // CHUNK
                          for m in done_regions)}
    assert kept_chunks

    # (b) training: killed after its first finished checkpoint, before the model is published
    proc = start_driver(archive, work, log)
    kill_when(proc, log, lambda: bool(_finished_steps(work)), "the first training checkpoint")
    assert not (work / "model").exists(), "killed too late: training had finished"
    step_at_kill = max(_finished_steps(work))
    manifest = tilestore.load_manifest(tilestore.store_path(work))
    assert (manifest.status == "ingested").sum() == 6
    after = _markers(work)
    assert all(after.get(name) == mtime for name, mtime in done_regions.items()), "completed regions were redone"
    now = chunk_mtimes(work / "tiles.zarr" / "tiles")
    assert all(now[k] == v for k, v in kept_chunks.items()), "tile chunks of completed regions were rewritten"

    # (c) scoring: killed after two regions are scored, before the catalog is written
    proc = start_driver(archive, work, log)
    scored_dir = work / "scores.zarr" / "scored"
    kill_when(proc, log, lambda: len(chunk_mtimes(scored_dir)) >= 4, "two score regions")
    assert not (work / "catalog.zarr").exists(), "killed too late: scoring had finished"
    meta = json.loads((work / "model" / "model.json").read_text())
    assert meta["extra"]["resumed_from"] is not None and meta["extra"]["resumed_from"] >= step_at_kill
    assert meta["model_version"] == clean_summary["model_version"], "resumed training changed the weights"
    assert not (work / CHECKPOINTS / meta["extra"]["train_state_key"]).exists()  # removed once published
    scored_before = {name: chunk_mtimes(work / "scores.zarr" / name) for name in ("scored", "score")}
    n_regions_done = len(scored_before["scored"])

    summary = finish(start_driver(archive, work, log), log)
    assert summary["trained"] is False and summary["ingested"] == [] and len(summary["unchanged"]) == 6
    for name, before in scored_before.items():
        now = chunk_mtimes(work / "scores.zarr" / name)
        assert all(now[k] == v for k, v in before.items()), f"{name}: regions scored before the kill were redone"
    assert len(chunk_mtimes(scored_dir)) > n_regions_done

    # the end state equals the clean run's, every chunk decodes, nothing is duplicated
    assert_same_arrays(read_every_chunk(work / "tiles.zarr"), read_every_chunk(clean / "tiles.zarr"))
    scores = read_every_chunk(scorestore.store_path(work))
    assert scores["scored"].all()
    assert_same_arrays(scores, read_every_chunk(scorestore.store_path(clean)))
    assert_same_catalog(work, clean)
    cands = catalog.open_catalog(work).to_dataframe()
    assert len(cands) == clean_summary["n_candidates"] > 0
    assert not cands.duplicated(["source_file", "tile_first", "tile_last", "peak_freq_mhz"]).any()
    assert catalog.list_versions(work) == [clean_summary["model_version"]]
