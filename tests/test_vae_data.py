"""vae.data (selection, streaming from a tiles.zarr built here) and vae.calibrate."""

import threading

import numpy as np
import pytest
import xarray as xr

from vae.batches import ArrayBatches
from vae.calibrate import Calibration, calibrate_scores
from vae.data import ZarrBatches, select_training_tiles

T, F, CHUNK = 4, 8, 5


def make_store(path, n=40, seed=0):
    """A tiny tile store following docs/architecture.md (only the variables the VAE reads).

    Tiles carry their own row number in pixel [0, 0] so tests can check what was read.
    Rows 0-19: ON source, 20-39: OFF; row 3 and 23 bright; 36-39 invalid padding;
    rows 10-13 and 30-31 sit in 1420.0-1420.5 MHz.
    """
    rng = np.random.default_rng(seed)
    tiles = rng.standard_normal((n, T, F)).astype(np.float32)
    tiles[:, 0, 0] = np.arange(n)
    max_abs_z = np.full(n, 4.0, np.float32)
    max_abs_z[[3, 23]] = 500.0
    n_pre = np.zeros(n, np.int32)
    n_pre[[3, 23]] = 10
    fmin = 1300.0 + np.arange(n) * 1.0
    fmin[10:14] = fmin[30:32] = 1420.1
    ds = xr.Dataset(
        {
            "tiles": (("tile", "time", "freq"), tiles),
            "valid": ("tile", np.arange(n) < 36),
            "on_source": ("tile", np.arange(n) < 20),
            "freq_min_mhz": ("tile", fmin),
            "freq_max_mhz": ("tile", fmin + 0.3),
            "max_abs_z": ("tile", max_abs_z),
            "n_premasked": ("tile", n_pre),
        }
    )
    ds.to_zarr(path, mode="w", consolidated=False, encoding={"tiles": {"chunks": (CHUNK, T, F)}})
    return path


def test_selection_rule(tmp_path):
    store = make_store(str(tmp_path / "tiles.zarr"))
    train, hold = select_training_tiles(store, holdout_fraction=0.25, seed=1)
    both = np.union1d(train.indices, hold.indices)
    assert np.intersect1d(train.indices, hold.indices).size == 0
    # OFF tiles 20-35 (valid, bright 23 included: RFI is part of the null) + ordinary ON tiles (not 3)
    assert set(both) == set(range(36)) - {3}
    assert len(hold) == round(0.25 * 35) and train.rule["counts"]["selected"] == 35
    train2, _ = select_training_tiles(store, known_signals=[(1420.0, 1420.5)], holdout_fraction=0.0)
    assert set(train2.indices) == set(range(36)) - {3, 10, 11, 12, 13, 30, 31}
    assert train2.rule["known_signals_mhz"] == [[1420.0, 1420.5]]
    assert train2.to_dict()["digest"] != train.to_dict()["digest"]


def test_zarr_batches_stream_deterministically(tmp_path):
    store = make_store(str(tmp_path / "tiles.zarr"))
    idx = np.arange(36)
    src = ZarrBatches(store, idx, 4, shuffle_seed=3, window=2, prefetch=1)
    assert src.steps_per_epoch == 9 and src.tile_shape == (T, F)
    e0 = list(src.batches(0))
    for b in e0:  # each tile arrives with its own index
        np.testing.assert_array_equal(b.tiles_NxTxF[:, 0, 0], b.index_N)
    seen = np.concatenate([b.index_N for b in e0])
    assert sorted(seen) == list(idx)
    assert all(np.array_equal(a.index_N, b.index_N) for a, b in zip(e0, src.batches(0)))
    e1 = list(src.batches(1))
    assert not all(np.array_equal(a.index_N, b.index_N) for a, b in zip(e0, e1))
    tail = list(src.batches(1, start=5))  # resuming mid-epoch skips without changing the order
    assert all(np.array_equal(a.index_N, b.index_N) for a, b in zip(e1[5:], tail))
    # a shuffle window of 2 chunks: the first batch comes from at most 2 store chunks
    assert np.unique(e0[0].index_N // CHUNK).size <= 2
    assert src.max_cached_chunks <= 4  # at most two shuffle windows (2 chunks each) at a window boundary
    ordered = ZarrBatches(store, idx[:7], 3, shuffle_seed=None, drop_remainder=False)
    assert [b.index_N.tolist() for b in ordered.batches(0)] == [[0, 1, 2], [3, 4, 5], [6]]


def test_zarr_batches_stop_early_without_leaking_threads(tmp_path):
    store = make_store(str(tmp_path / "tiles.zarr"))
    src = ZarrBatches(store, np.arange(36), 2, prefetch=1)
    before = threading.active_count()
    it = src.batches(0)
    next(it)
    it.close()
    assert threading.active_count() == before
    with pytest.raises(IndexError):
        ZarrBatches(store, [99], 2)


def test_array_batches_and_plan():
    x = np.zeros((10, 2, 2), np.float32)
    src = ArrayBatches(x, 3, shuffle_seed=0)
    assert src.steps_per_epoch == 3 and sum(len(b.index_N) for b in src.batches(0)) == 9


def test_calibrate_scores():
    rng = np.random.default_rng(0)
    s = rng.normal(10.0, 2.0, 20000)
    cal = calibrate_scores(np.concatenate([s, [1e6]]))  # one RFI outlier
    assert cal.n == 20001 and cal.threshold_article == pytest.approx(cal.mean + 5 * cal.std)
    assert cal.median == pytest.approx(10.0, abs=0.1) and cal.mad_sigma == pytest.approx(2.0, rel=0.05)
    assert cal.threshold_robust == pytest.approx(20.0, rel=0.05)
    assert cal.threshold_robust < cal.threshold_article
    assert cal.threshold(0.99) == pytest.approx(np.quantile(np.concatenate([s, [1e6]]), 0.99))
    assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(FloatingPointError):
        calibrate_scores([1.0, np.nan, 2.0])


def test_fit_streams_from_store_and_records_selection(tmp_path):
    from vae import checkpoint, train
    from vae.calibrate import calibrate
    from vae.config import TrainConfig, preset

    store = make_store(str(tmp_path / "tiles.zarr"))
    train_sel, hold_sel = select_training_tiles(store, holdout_fraction=0.2)
    src = ZarrBatches(store, train_sel, 4, shuffle_seed=0)
    cfg = preset("default", (T, F), channels=(2, 2, 2), latent=2)
    seen = []
    res = train.fit(src, cfg, TrainConfig(batch_size=4, epochs=2, seed=0), checkpoint_dir=str(tmp_path / "ck"),
                    on_epoch=lambda e, m: seen.append((e, m["loss"])))
    assert [e for e, _ in seen] == [0, 1] and res.selection is train_sel
    assert res.steps == 2 * (len(train_sel) // 4)
    cal = calibrate(res.model, cfg, ZarrBatches(store, hold_sel, 4, shuffle_seed=None, drop_remainder=False))
    assert cal.n == len(hold_sel)
    version = checkpoint.save_model(tmp_path / "model", res.model, cfg, selection=train_sel, calibration=cal)
    _, _, meta = checkpoint.load_model(tmp_path / "model")
    assert meta["model_version"] == version and meta["selection"]["digest"] == train_sel.digest
    np.testing.assert_array_equal(meta["selection"]["indices"], train_sel.indices)
    assert meta["selection"]["rule"]["counts"]["train"] == len(train_sel)
