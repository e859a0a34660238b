"""What a rerun after a killed ingest relies on, checked without Prefect (the kills themselves:
test_run_killed.py, slow)."""

from __future__ import annotations

import types

import numpy as np

from seti_auditor import formats, ingest, tilestore
from seti_auditor.tiling import TilingConfig
from tests.faults.support import chunk_mtimes

CFG = TilingConfig(tile_time=16, tile_freq=256, chunk_tiles=8, channels_per_task=2048)  # 2 regions per file


def _archive(root, n):
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(n):
        hdr = {"source_name": f"S{i}", "tstart": 60000.0 + i, "tsamp": 18.253611008, "fch1": 1100.0,
               "foff": -2.7939677238464355e-06, "nbits": 32, "nfpc": 1024}
        formats.write_filterbank(root / f"f{i}.fil", hdr, (rng.chisquare(64, (16, 4096)) / 64).astype(np.float32))
    return [ingest.inspect_file(p, CFG) for p in ingest.find_inputs(root)]


def _plan(store, rows):
    return ingest.plan_ingest(rows, tilestore.load_manifest(store), CFG, tilestore.n_tiles(store))


def _run(store, plan, regions):
    tilestore.ensure_capacity(store, plan.capacity, CFG)
    for start, stop in plan.superseded_ranges:
        tilestore.write_coords(store, start, {"valid": [False] * (stop - start)}, CFG)
    for r in regions:  # the row as the tile-region task gets it
        row = types.SimpleNamespace(**{k: (v.item() if hasattr(v, "item") else v)
                                       for k, v in plan.manifest.loc[r.file_id].items()})
        ingest.ingest_region(store, row, r, CFG)


def test_rerun_takes_the_same_ranges_and_skips_completed_regions(tmp_path):
    """Injects: an ingest that wrote 3 of its 6 regions and never committed its manifest (as when killed).

    Must hold: the rerun plans the very same tile ranges, does not rewrite the 3 completed regions
    (their chunk files keep their mtimes), writes the others, and ends with each file's tiles once.
    """
    rows = _archive(tmp_path / "a", 3)
    store = tmp_path / "tiles.zarr"
    first = _plan(store, rows)
    _run(store, first, first.regions[:3])  # killed here: no save_manifest
    before = chunk_mtimes(store / "tiles")
    second = _plan(store, rows)
    assert second.regions == first.regions and second.capacity == first.capacity
    assert second.superseded_ranges == []
    _run(store, second, second.regions)
    after = chunk_mtimes(store / "tiles")
    assert all(after[k] == v for k, v in before.items())  # completed regions not rewritten
    assert len(after) > len(before)
    tilestore.save_manifest(store, second.manifest)
    ds = tilestore.open_tiles(store).load()
    names, counts = np.unique(ds.source_file.values[ds.valid.values], return_counts=True)
    assert list(names) == ["f0.fil", "f1.fil", "f2.fil"] and (counts == 16).all()


def test_orphans_beyond_the_rerun_are_invalidated_and_invalidated_regions_redone(tmp_path):
    """Injects: a killed ingest of 3 files (all regions written, manifest not committed); then the third
    file is removed from the archive before the rerun.

    Must hold: the rerun invalidates the third file's orphan tiles (no tile counted without a manifest
    row), and a completed region invalidated since its marker was written is written again.
    """
    rows = _archive(tmp_path / "a", 3)
    store = tmp_path / "tiles.zarr"
    first = _plan(store, rows)
    _run(store, first, first.regions)
    second = _plan(store, rows[:2])
    assert second.superseded_ranges == [(second.capacity, first.capacity)]
    tilestore.write_coords(store, 0, {"valid": [False] * CFG.chunk_tiles}, CFG)  # e.g. a failed file's range
    before = chunk_mtimes(store / "tiles")
    _run(store, second, second.regions)
    after = chunk_mtimes(store / "tiles")
    assert after["0/0/0"] != before["0/0/0"] and after["1/0/0"] == before["1/0/0"]
    tilestore.save_manifest(store, second.manifest)
    ds = tilestore.open_tiles(store).load()
    names, counts = np.unique(ds.source_file.values[ds.valid.values], return_counts=True)
    assert list(names) == ["f0.fil", "f1.fil"] and (counts == 16).all()


def test_training_checkpoints_are_keyed_by_what_determines_the_weights(tmp_path):
    """Must hold: the same model, training configuration and selection share a checkpoint directory
    (a rerun resumes); a different seed, epoch count or selection gets another one (starts afresh)."""
    from seti_auditor.training import CHECKPOINTS, checkpoint_dir
    from vae.config import TrainConfig, preset
    from vae.data import TileSelection

    cfg, train = preset("default", (16, 256)), TrainConfig(epochs=3, seed=0)
    sel = TileSelection("s", np.arange(10), {})
    a = checkpoint_dir(tmp_path, cfg, train, sel)
    assert a == checkpoint_dir(tmp_path, cfg, TrainConfig(epochs=3, seed=0), TileSelection("s", np.arange(10), {}))
    assert a.parent == tmp_path / CHECKPOINTS
    others = {checkpoint_dir(tmp_path, cfg, TrainConfig(epochs=3, seed=1), sel),
              checkpoint_dir(tmp_path, cfg, TrainConfig(epochs=4, seed=0), sel),
              checkpoint_dir(tmp_path, cfg, train, TileSelection("s", np.arange(11), {}))}
    assert a not in others and len(others) == 3
