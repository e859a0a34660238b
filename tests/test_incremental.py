"""Incremental reprocessing: new files are scored and appended; a new model gets a new catalog version.

One module-scoped scenario on a small synthetic archive (two cadences, 12 files), through the
real parent flow on a real Dask cluster (thread workers) reporting to the session's Prefect server:

1. the archive holds cadence 0 and the first three scans of cadence 1; ``auto`` trains (no model);
2. the last three scans of cadence 1 arrive; ``auto`` keeps the model (no drift), scores only the
   new files and appends their rows (cadence 1 mixes old and new files: decided anew, no duplicates);
3. nothing new: nothing is scored or written, and the inspection of the files comes from the cache;
4. ``retrain``: a new model rescores everything into a new catalog version; the old one still opens.

Plus unit tests of the pieces (catalog append, planning, de-duplication, the drift rule).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from seti_auditor import catalog, score_archive, scorestore, tilestore
from seti_auditor.archive import write_synthetic_archive
from seti_auditor.cadence_search import LineSearchConfig
from seti_auditor.drift import DriftConfig, noise_drift
from seti_auditor.score_archive import ScoreJob
from seti_auditor.training import TrainJob

EPOCHS = 3  # the model only has to exist; detection quality is test_pipeline's business
JOB = ScoreJob(n_plots=1)  # the default scoring, one plot (each costs about a second)
# the rescore after retraining: no cadence line search (its part in a full run is test_pipeline's)
JOB_RETRAIN = ScoreJob(n_plots=1, lines=LineSearchConfig(enabled=False))


def _files_state(root: Path, under: str = "") -> dict[str, tuple[int, int, int]]:
    """(inode, mtime_ns, size) of every file of a store: a rewritten file changes its inode (zarr writes aside)."""
    out = {}
    for folder, _, files in os.walk(root / under):
        for name in files:
            st = os.stat(Path(folder) / name)
            out[str((Path(folder) / name).relative_to(root))] = (st.st_ino, st.st_mtime_ns, st.st_size)
    return out


def _score_rows(work: Path, stop: int) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(scorestore.store_path(work)), mode="r")
    return {name: np.asarray(g[name][:stop]) for name in scorestore.SCORE_VARS}


def _flow_runs(work: Path, prefix: str) -> list:
    """This module's flow runs named ``prefix...`` (the session's server is shared), oldest first."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterName
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(like_=prefix)),
                                     sort=FlowRunSort.START_TIME_DESC, limit=200)
    mine = [r for r in runs if r.parameters.get("workdir") == str(work) and r.name.startswith(prefix)]
    return sorted(mine, key=lambda r: r.start_time)


def _inspect_states(flow_run_id) -> list[str]:
    """States of the ``inspect-files`` task runs of one flow run."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return [r.state.name for r in runs if r.name.startswith("inspect ")]


@pytest.fixture(scope="module")
def scenario(tmp_path_factory, prefect_harness):
    from flows.run import run_flow
    from infra.runtime import ClusterConfig, dask_cluster, task_runner

    root = tmp_path_factory.mktemp("incremental")
    source, archive, work = root / "source", root / "archive", root / "work"
    truth = json.loads(write_synthetic_archive(source, cadences=2, seed=11).read_text())
    cad0, cad1 = (c["files"] for c in truth["cadence_list"])
    first, later = cad0 + cad1[:3], cad1[3:]
    archive.mkdir()
    for name in first:
        shutil.copy2(source / name, archive / name)
    out = {"work": work, "first": first, "later": later}
    with dask_cluster(ClusterConfig(workers=2, processes=False)) as address:
        def run(policy, train=TrainJob(epochs=EPOCHS), job=JOB):
            return run_flow.with_options(task_runner=task_runner(address))(
                str(archive), str(work), train=train, score=job, model_policy=policy, dask_address=address)

        out["r1"] = run("auto")
        n1 = tilestore.n_tiles(tilestore.store_path(work))
        out["n1"] = n1
        out["scores1"] = _score_rows(work, n1)
        out["score_files1"] = _files_state(scorestore.store_path(work))
        out["cat1"] = catalog.version_frames(work, out["r1"].score.model_version)
        out["attrs1"] = catalog.version_attrs(work)

        for name in later:
            shutil.copy2(source / name, archive / name)
        out["r2"] = run("auto")
        out["scores2"] = _score_rows(work, n1)
        out["scored2"] = _score_rows(work, tilestore.n_tiles(tilestore.store_path(work)))["scored"]
        out["cat2"] = catalog.version_frames(work, out["r2"].score.model_version)
        out["catalog_files2"] = _files_state(Path(catalog.store_path(work)))
        out["score_files2"] = _files_state(scorestore.store_path(work))
        out["open2"] = catalog.open_catalog(work)

        out["r3"] = run("auto")
        out["catalog_files3"] = _files_state(Path(catalog.store_path(work)))
        out["score_files3"] = _files_state(scorestore.store_path(work))

        out["r4"] = run("retrain", TrainJob(epochs=EPOCHS, seed=1), JOB_RETRAIN)
    return out


# --------------------------------------------------------------------------- the scenario


def test_first_run_trains_and_writes_a_full_version(scenario):
    r1 = scenario["r1"]
    assert r1.model_decision["train"] and r1.model_decision["reason"] == "no model yet"
    assert r1.train is not None and r1.score.mode == "full"
    attrs = scenario["attrs1"]
    assert {c["name"] for c in attrs["covered"]} == set(scenario["first"])
    assert len(attrs["batches"]) == 1 and attrs["batches"][0]["mode"] == "full"
    assert attrs["batches"][0]["m"] == r1.score.n_tiles * 4  # every valid tile x sub-band: one family


def test_second_run_ingests_and_scores_only_the_new_files(scenario):
    r2, n1 = scenario["r2"], scenario["n1"]
    assert r2.ingest.ingested == sorted(scenario["later"])
    assert sorted(r2.ingest.unchanged) == sorted(scenario["first"])
    assert r2.train is None and not r2.model_decision["train"]
    drift = r2.model_decision["drift"]  # auto: the new OFF tiles checked against the model's calibration
    assert drift["n_new"] >= DriftConfig().min_tiles and abs(drift["shift_sigma"]) < DriftConfig().max_shift_sigma
    assert r2.score.mode == "append" and r2.score.model_version == scenario["r1"].score.model_version
    # the new files' tiles, and only those, were tested (their own family)
    manifest = tilestore.load_manifest(tilestore.store_path(scenario["work"]))
    new = manifest[manifest.name.isin(scenario["later"])]
    assert r2.score.n_tiles == int(new.n_tiles.sum())
    assert int(new.tile_start.min()) >= n1
    # the old rows of scores.zarr: same values, and their chunk files never rewritten
    after = scenario["scores2"]
    for name, values in scenario["scores1"].items():
        np.testing.assert_array_equal(after[name], values, err_msg=name)
    old_chunks = {k: v for k, v in scenario["score_files1"].items() if "/c/" in k}
    assert old_chunks and all(scenario["score_files2"].get(k) == v for k, v in old_chunks.items())
    assert bool(np.all(scenario["scored2"]))


def test_second_run_appends_to_the_same_version_without_duplicates(scenario):
    version = scenario["r1"].score.model_version
    assert scenario["open2"].attrs["catalog_versions"] == [version]  # the same version, still the only one
    before, after = scenario["cat1"], scenario["cat2"]
    attrs = scenario["open2"].attrs
    batch = attrs["batches"][-1]
    assert len(attrs["batches"]) == 2 and batch["mode"] == "append"
    assert {f["name"] for f in batch["files"]} == set(scenario["later"])
    assert {c["name"] for c in attrs["covered"]} == set(scenario["first"] + scenario["later"])
    assert batch["m"] == scenario["r2"].score.n_tiles * 4 and batch["q"] == 0.05
    for table in catalog.GROUPS:
        old = before[table]
        # earlier rows identical, new rows appended after them
        pd.testing.assert_frame_equal(after[table].iloc[: len(old)][list(old.columns)], old, check_dtype=False)
        assert batch["rows"][table] == [len(old), len(after[table])]
    assert sum(len(after[t]) for t in catalog.GROUPS) > sum(len(before[t]) for t in catalog.GROUPS)
    new_rows = {t: after[t].iloc[len(before[t]):] for t in catalog.GROUPS}
    # the ON scan that arrived (scan 4 of cadence 1) was decided: the cadence's signal shows in it
    assert set(new_rows["candidates"].source_file) <= set(scenario["first"] + scenario["later"])
    assert (new_rows["candidates"].source_file == scenario["later"][1]).any()
    # no duplicates: no new row overlaps an earlier row of the same file, in any table
    old_all = pd.concat([before[t] for t in catalog.GROUPS], ignore_index=True)
    for t, rows in new_rows.items():
        for r in rows.itertuples():
            same = old_all[old_all.source_file == r.source_file]
            hit = (same.tstart_mjd < r.tstop_mjd) & (r.tstart_mjd < same.tstop_mjd) & \
                  (same.freq_min_mhz <= r.freq_max_mhz) & (r.freq_min_mhz <= same.freq_max_mhz)
            assert not hit.any(), f"{t} row on {r.source_file} at {r.freq_min_mhz:.6f} MHz duplicates a catalog row"
    # the root (what plain xarray opens) is the same version with the appended rows
    assert scenario["open2"].sizes["candidate"] == len(after["candidates"])
    assert str(scenario["open2"].attrs["model_version"]) == version


def test_a_run_with_nothing_new_changes_nothing(scenario):
    r3 = scenario["r3"]
    assert r3.ingest.ingested == [] and r3.train is None
    assert not r3.model_decision["train"] and "no new files" in r3.model_decision["reason"]
    assert r3.score.mode == "unchanged" and r3.score.batch is None and r3.score.n_tiles == 0
    assert r3.score.n_candidates == len(scenario["cat2"]["candidates"])
    assert scenario["catalog_files3"] == scenario["catalog_files2"]  # not a file of the catalog rewritten
    assert scenario["score_files3"] == scenario["score_files2"]


def test_inspection_of_unchanged_files_comes_from_the_cache(scenario):
    ingests = _flow_runs(scenario["work"], "ingest ")
    assert len(ingests) == 4
    states = [_inspect_states(r.id) for r in ingests]
    assert states[1] == ["Completed"]  # the batch changed (three new files): inspected
    assert states[2] == ["Cached"]  # the same files, untouched: their rows come from the cache
    assert states[3] == ["Cached"]


def test_retrain_writes_a_new_version_and_the_old_one_still_opens(scenario):
    r4, v1 = scenario["r4"], scenario["r1"].score.model_version
    assert r4.train is not None and r4.model_decision["reason"].startswith("asked")
    v2 = r4.score.model_version
    assert v2 != v1 and r4.score.mode == "full" and "no catalog version for this model" in r4.score.batch["reason"]
    assert catalog.list_versions(scenario["work"]) == [v1, v2]
    assert catalog.current_version(scenario["work"]) == v2
    old = catalog.open_catalog(scenario["work"], v1)
    xr.testing.assert_identical(old.drop_attrs(), scenario["open2"].drop_attrs())
    assert old.attrs["batches"] == scenario["open2"].attrs["batches"]
    new = catalog.version_attrs(scenario["work"], v2)
    assert len(new["batches"]) == 1 and {c["name"] for c in new["covered"]} == \
        set(scenario["first"] + scenario["later"])
    g = zarr.open_group(str(scorestore.store_path(scenario["work"])), mode="r")
    assert g.attrs["model_version"] == v2  # everything rescored with the new model
    assert set(np.unique(np.asarray(g["model_version"][:]))) == {v2}


# --------------------------------------------------------------------------- units


def _events(n: int, files: list[str], t0: float = 60000.0, f0: float = 1400.0, reason: bool = False) -> pd.DataFrame:
    df = pd.DataFrame({
        "source_file": [files[i % len(files)] for i in range(n)],
        "tstart_mjd": t0 + np.arange(n) * 0.01, "tstop_mjd": t0 + np.arange(n) * 0.01 + 0.005,
        "freq_min_mhz": f0 + np.arange(n), "freq_max_mhz": f0 + np.arange(n) + 0.001,
        "score": np.linspace(10, 5, n), "n_tiles": np.ones(n, np.int64), "on_source": np.ones(n, bool),
    })
    if reason:
        df["reason"] = ["in_off"] * n
    return df


def test_append_rows_keeps_earlier_rows_and_their_files(tmp_path, monkeypatch):
    monkeypatch.setattr(catalog, "ROW_CHUNK", 2)  # 3 rows: chunk 0 full (kept), chunk 1 partly filled (copied)
    catalog.write_catalog(tmp_path, _events(3, ["a"]), _events(0, ["a"], reason=True),
                          _events(1, ["a"], reason=True), attrs={"batches": [1]}, model_version="v1")
    before = catalog.open_catalog(tmp_path)
    files = _files_state(Path(catalog.store_path(tmp_path)))
    chunk0 = {k: v for k, v in files.items() if k.endswith("/c/0") and not k.startswith(("versions", "rfi"))}
    rows = catalog.append_rows(tmp_path, _events(2, ["b"], t0=60001), _events(2, ["b"], reason=True),
                               _events(0, ["b"], reason=True).assign(extra=1.0), attrs={"batches": [1, 2]},
                               model_version="v1")
    assert rows == {"candidates": (3, 5), "rfi": (0, 2), "rejected": (1, 1)}
    after = catalog.open_catalog(tmp_path)
    xr.testing.assert_identical(after.isel(candidate=slice(0, 3)).drop_attrs(), before.drop_attrs())
    assert list(after.source_file.values[3:]) == ["b", "b"] and after.attrs["batches"] == [1, 2]
    assert catalog.open_catalog(tmp_path, "v1").sizes["candidate"] == 5
    assert catalog.open_catalog(tmp_path, group="rfi").sizes["candidate"] == 2
    now = _files_state(Path(catalog.store_path(tmp_path)))
    assert chunk0 and all(now[k][0] == v[0] for k, v in chunk0.items())  # the same inodes: never rewritten
    assert sorted(os.listdir(tmp_path)) == ["catalog.zarr"]  # no temporaries left


def test_append_rows_refuses_what_it_cannot_append_and_leaves_the_store(tmp_path):
    catalog.write_catalog(tmp_path, _events(2, ["a"]), _events(0, ["a"], reason=True),
                          _events(0, ["a"], reason=True), attrs={}, model_version="v1")
    catalog.write_catalog(tmp_path, _events(1, ["a"]), _events(0, ["a"], reason=True),
                          _events(0, ["a"], reason=True), attrs={}, model_version="v2")
    with pytest.raises(ValueError, match="current catalog version"):
        catalog.append_rows(tmp_path, _events(1, ["b"]), _events(0, ["b"], reason=True),
                            _events(0, ["b"], reason=True), attrs={}, model_version="v1")
    files = _files_state(Path(catalog.store_path(tmp_path)))
    bad = _events(1, ["b"]).assign(n_tiles=0.5)  # a fraction into an integer column
    with pytest.raises(ValueError, match="n_tiles"):
        catalog.append_rows(tmp_path, bad, _events(0, ["b"], reason=True), _events(0, ["b"], reason=True),
                            attrs={}, model_version="v2")
    assert _files_state(Path(catalog.store_path(tmp_path))) == files
    assert sorted(os.listdir(tmp_path)) == ["catalog.zarr"]


def test_drop_known_removes_overlapping_events_of_the_same_file():
    known = {"candidates": _events(2, ["a"]), "rfi": _events(1, ["c"], f0=1500, reason=True),
             "rejected": _events(0, ["a"], reason=True)}
    new = pd.concat([_events(2, ["a"]),  # the same two events again
                     _events(1, ["b"]),  # same time and frequency, another file
                     _events(1, ["a"], f0=1410)], ignore_index=True)  # same file, another frequency
    rfi = _events(1, ["c"], f0=1500, reason=True)
    out, dropped = score_archive.drop_known({"candidates": new, "rfi": rfi, "rejected": known["rejected"]}, known)
    assert dropped == 3
    assert list(out["candidates"].source_file) == ["b", "a"] and out["rfi"].empty


def test_unscored_regions_cover_only_unscored_chunks(tmp_path):
    path = tmp_path / "scores.zarr"
    scorestore.ensure_template(path, 1024, 256, 4, "v", "k")
    g = zarr.open_group(str(path), mode="r+")
    g["scored"][:512] = True
    g["scored"][768:1000] = True  # one unscored row makes its chunk due
    assert score_archive.unscored_regions(path, 1024, 256, 4096) == [(512, 1024)]
    assert score_archive.unscored_regions(path, 1024, 256, 256) == [(512, 768), (768, 1024)]
    g["scored"][:] = True
    assert score_archive.unscored_regions(path, 1024, 256, 4096) == []


def test_plan_increment_modes():
    manifest = pd.DataFrame({"name": ["a", "b", "c", "d"], "content_hash": ["1", "2", "3", "4"],
                             "status": ["ingested", "ingested", "ingested", "superseded"],
                             "cadence_id": ["", "", "", ""]})
    prior = {"score_key": "k", "covered": [{"name": "a", "content_hash": "1", "cadence_id": ""}]}
    plan = score_archive.plan_increment(manifest, prior, "k", False, True)
    assert plan.mode == "append" and plan.new_files == [1, 2]
    assert score_archive.plan_increment(manifest, None, "k", False, True).mode == "full"
    assert score_archive.plan_increment(manifest, prior, "other", False, True).mode == "full"
    assert score_archive.plan_increment(manifest, prior, "k", True, True).mode == "full"
    assert score_archive.plan_increment(manifest, prior, "k", False, False).mode == "full"
    changed = {**prior, "covered": [{"name": "a", "content_hash": "0"}]}  # a's content changed since
    assert score_archive.plan_increment(manifest, changed, "k", False, True).mode == "full"
    every = {**prior, "covered": [{"name": n, "content_hash": h, "cadence_id": ""}
                                  for n, h in (("a", "1"), ("b", "2"), ("c", "3"))]}
    assert score_archive.plan_increment(manifest, every, "k", False, True).mode == "unchanged"
    # a covered file regrouped into a cadence: decided again with it if the cadence has a new file, else all
    grouped = manifest.assign(cadence_id=["C", "C", "", ""])
    assert score_archive.plan_increment(grouped, prior, "k", False, True).mode == "append"  # b is new, in C
    plan = score_archive.plan_increment(grouped, every, "k", False, True)
    assert plan.mode == "full" and "changed cadence" in plan.reason


def test_drift_rule_on_synthetic_statistics():
    rng = np.random.default_rng(0)
    null = rng.normal(1.0, 0.02, 800)
    cfg = DriftConfig(max_shift_sigma=3.0, min_tiles=32)
    same = noise_drift(null, rng.normal(1.0, 0.02, 300), cfg)
    assert not same.drifted and abs(same.shift_sigma) < 0.5
    moved = noise_drift(null, rng.normal(1.1, 0.02, 300), cfg)  # the noise moved 5 sigma
    assert moved.drifted and 4.0 < moved.shift_sigma < 6.0 and "beyond" in moved.reason
    assert noise_drift(null, rng.normal(0.9, 0.02, 300), cfg).drifted  # either direction
    few = noise_drift(null, rng.normal(1.5, 0.02, 10), cfg)  # too few to judge: the model is kept
    assert not few.drifted and np.isnan(few.shift_sigma) and "too few" in few.reason
    # an effect size, not a significance test: 0.3 sigma over 20,000 tiles is real (KS sees it) but small
    from scipy import stats as sps

    sample = rng.normal(1.006, 0.02, 20_000)
    big = noise_drift(null, sample, cfg)
    assert sps.ks_2samp(sample, null).pvalue < 0.05
    assert not big.drifted and 0.1 < big.shift_sigma < 0.6
    # robust: 10 % of wild tiles (RFI that slipped through) move neither the null's centre nor its sigma
    dirty = np.concatenate([null, rng.normal(3.0, 1.0, 80)])
    assert not noise_drift(dirty, rng.normal(1.0, 0.02, 300), cfg).drifted
    with pytest.raises(ValueError):
        noise_drift(np.array([1.0]), rng.normal(1.0, 0.02, 300), cfg)
