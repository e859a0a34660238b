"""The whole pipeline (ingest -> train -> score -> catalog) on a small synthetic archive,
through a real Dask cluster inside the Prefect test harness."""

from __future__ import annotations

import json

import numpy as np
import pytest
import xarray as xr

from seti_auditor import catalog, scorestore, tilestore
from seti_auditor.archive import write_synthetic_archive
from seti_auditor.score_archive import ScoreJob, tile_table
from seti_auditor.training import TrainJob

TOL_MHZ = 0.0003  # about one 256-channel tile of 2.79 Hz channels


@pytest.fixture(scope="module")
def demo(tmp_path_factory, prefect_harness):
    """Run the parent flow once on a two-cadence archive; later tests inspect its outputs."""
    from flows.run import run_flow
    from infra.runtime import ClusterConfig, dask_cluster, task_runner

    root = tmp_path_factory.mktemp("pipeline")
    archive, work = root / "archive", root / "work"
    truth = json.loads(write_synthetic_archive(archive, cadences=2, seed=3).read_text())
    with dask_cluster(ClusterConfig(workers=2, processes=False)) as address:
        result = run_flow.with_options(task_runner=task_runner(address))(
            str(archive), str(work), train=TrainJob(epochs=8), dask_address=address)
    return {"truth": truth, "work": work, "archive": archive, "result": result, "address": address}


def _overlaps(row, band):
    return band["freq_max_mhz"] >= row.freq_min_mhz - TOL_MHZ and band["freq_min_mhz"] <= row.freq_max_mhz + TOL_MHZ


def test_strong_signals_are_found_at_their_frequencies(demo):
    cands = xr.open_zarr(str(demo["work"] / "catalog.zarr"), consolidated=False).load().to_dataframe()
    assert len(cands) > 0
    strong = [s for s in demo["truth"]["signals"] if s["snr"] >= 30]
    assert strong
    for sig in strong:
        for scan in (sc for sc in sig["scans"] if sc["present"]):
            rows = cands[cands.source_file == scan["file"]]
            assert any(_overlaps(r, scan) for r in rows.itertuples()), f"{sig['id']} missed in scan {scan['scan_index']}"
    # a candidate's peak lies inside the signal band it matches
    matched = 0
    for r in cands.itertuples():
        for sig in demo["truth"]["signals"]:
            for scan in sig["scans"]:
                if scan["present"] and scan["file"] == r.source_file and _overlaps(r, scan):
                    matched += 1
                    assert scan["freq_min_mhz"] - TOL_MHZ <= r.peak_freq_mhz <= scan["freq_max_mhz"] + TOL_MHZ
    assert matched >= len(cands) - 1  # at most one candidate is not an injected signal


def test_rfi_is_not_a_candidate(demo):
    cands = xr.open_zarr(str(demo["work"] / "catalog.zarr"), consolidated=False).load().to_dataframe()
    for event in demo["truth"]["rfi"]:
        for scan in event["scans"]:
            rows = cands[cands.source_file == scan["file"]]
            hits = [r for r in rows.itertuples() if scan["freq_max_mhz"] >= r.freq_min_mhz
                    and scan["freq_min_mhz"] <= r.freq_max_mhz and event["kind"] != "impulse"]
            assert not hits, f"RFI {event['id']} ({event['kind']}) leaked into the catalog"
    rfi = catalog.open_catalog(demo["work"], group="rfi")
    assert rfi.sizes["candidate"] > 0  # recorded as RFI instead


def test_noise_pvalues_are_uniform(demo):
    from scipy import stats as sps

    table = tile_table(str(demo["work"]))
    clean = np.ones(len(table), bool)
    for item in demo["truth"]["signals"] + demo["truth"]["rfi"]:
        for scan in item["scans"]:
            hit = (table.source_file == scan["file"]) & (table.freq_max_mhz >= scan["freq_min_mhz"] - TOL_MHZ) & \
                  (table.freq_min_mhz <= scan["freq_max_mhz"] + TOL_MHZ)
            if item["kind"] != "impulse":
                clean &= ~hit.to_numpy()
    p = table.p[clean].to_numpy()
    assert p.size > 200
    assert sps.kstest(p[p > 0.05], sps.uniform(0.05, 0.95).cdf).pvalue > 1e-3
    assert (p < 0.01).mean() < 0.03


def test_outputs_carry_provenance(demo):
    result = demo["result"]
    cat = catalog.open_catalog(demo["work"])
    assert cat.attrs["model_version"] == result.score.model_version
    assert {"run_id", "code_version", "score_job", "calibration", "inputs"} <= set(cat.attrs)
    assert len(cat.attrs["inputs"]) == 12
    scores = scorestore.open_scores(scorestore.store_path(demo["work"]))
    assert scores.attrs["model_version"] == result.score.model_version
    assert set(np.unique(scores.model_version.values[scores.scored.values])) == {result.score.model_version}
    assert result.train is not None and result.train.history[-1]["loss"] < result.train.history[0]["loss"]
    cands = xr.open_zarr(str(demo["work"] / "catalog.zarr"), consolidated=False)
    assert set(cands.model_version.values) <= {result.score.model_version}
    meta = json.loads((demo["work"] / "model" / "model.json").read_text())
    assert meta["model_version"] == result.score.model_version and meta["calibration"]["n"] > 20
    assert meta["selection"]["n"] == result.train.n_train


def test_flow_runs_and_artifacts_are_recorded(demo):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    with get_client(sync_client=True) as client:  # the session's server is shared: this module's runs only
        runs = [r for r in client.read_flow_runs() if r.parameters.get("workdir") == str(demo["work"])]
        keys = {a.key for a in client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs])))}
    assert {"ingest-summary", "train-loss", "train-loss-curve", "train-summary", "candidates", "score-summary",
            "candidate-plot-0"} <= keys
    names = {r.name for r in runs}
    assert any(n.startswith("run ") for n in names) and any(n.startswith("score ") for n in names)
    assert all(r.state.is_completed() for r in runs if r.name.startswith(("run ", "ingest ", "train ", "score ")))


def test_rerun_changes_nothing(demo):
    from flows.run import run_flow
    from infra.runtime import task_runner

    before = catalog.open_catalog(demo["work"])
    n_tiles = tilestore.n_tiles(tilestore.store_path(demo["work"]))
    again = run_flow.with_options(task_runner=task_runner(None))(str(demo["archive"]), str(demo["work"]))
    assert again.train is None and again.ingest.ingested == []
    assert tilestore.n_tiles(tilestore.store_path(demo["work"])) == n_tiles
    after = catalog.open_catalog(demo["work"])
    xr.testing.assert_identical(before.drop_attrs(), after.drop_attrs())
    assert catalog.list_versions(demo["work"]) == [again.score.model_version]


def test_line_search_adds_only_lines_of_injected_signals(demo, thread_runner):
    """The cadence line search (on by default, so in the demo's catalog), through the score flow's
    per-cadence tasks: every line row it adds lies in an ON scan on an injected signal, and the
    candidates of the tile-level test alone (a rescore without it) are all still there.

    Runs last in the module: it leaves the tile-level catalog behind."""
    from flows.score import score_flow
    from seti_auditor.cadence_search import LineSearchConfig

    ds = xr.open_zarr(str(demo["work"] / "catalog.zarr"), consolidated=False).load()
    after = ds.to_dataframe()
    stats = json.loads(ds.attrs["line_search"]) if isinstance(ds.attrs["line_search"], str) else ds.attrs["line_search"]
    assert stats["seeds"] >= 1 and stats["m"] > 0
    summary = score_flow.with_options(task_runner=thread_runner())(
        str(demo["work"]), ScoreJob(lines=LineSearchConfig(enabled=False)))
    before = xr.open_zarr(str(demo["work"] / "catalog.zarr"), consolidated=False).load().to_dataframe()
    assert summary.n_candidates == len(before) <= len(after) and (before.method == "tile").all()
    assert set(before.source_file + before.peak_freq_mhz.round(6).astype(str)) <= set(
        after.source_file + after.peak_freq_mhz.round(6).astype(str))
    lines = after[after.method == "cadence_line"]
    assert lines.on_source.all() and (lines.n_on_scans >= 2).all() and (lines.q_value <= 0.01).all()
    bands = [sc for s in demo["truth"]["signals"] for sc in s["scans"] if sc["present"]]
    for r in lines.itertuples():
        assert any(sc["file"] == r.source_file and _overlaps(r, sc) for sc in bands), f"false line {r}"
