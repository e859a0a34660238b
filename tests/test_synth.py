"""Properties of the synthetic survey (seti_auditor.synth) and its archive on disk."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from seti_auditor import synth
from seti_auditor.synth import (
    EtiGrid, ObsConfig, RfiConfig, SignalSpec, SynthConfig, make_cadence, signal_grid,
    track_freq_mhz,
)

SIGMA = math.sqrt(2.0 / 102)  # noise std of one bandpass-normalised pixel
QUIET = SynthConfig(eti=(), rfi=RfiConfig.none())


def _cadence(config: SynthConfig, seed: int, index: int = 0) -> synth.Cadence:
    return make_cadence(config, np.random.default_rng(seed), index=index)


def _normalised(cad: synth.Cadence) -> list[np.ndarray]:
    """Each scan divided by the bandpass: noise mean 1, std SIGMA."""
    return [scan.data_TxF.astype(np.float64) / cad.bandpass_F for scan in cad.scans]


def _track_windows(rec: dict, cad: synth.Cadence, s: int, obs: ObsConfig) -> np.ndarray:
    """Inclusive channel range ``(lo, hi)`` per integration that the track covers in scan s.

    Recomputed from the truth parameters and the header start times (not from the truth's
    per-scan bands), so it also checks that the truth describes a continuous track.
    """
    h0, h = cad.scans[0].header, cad.scans[s].header
    t_int0 = (h["tstart"] - h0["tstart"]) * 86400.0 + np.arange(obs.n_ints) * obs.tsamp_s
    t_IxK = t_int0[:, None] + np.linspace(0.0, obs.tsamp_s, 33)[None, :]
    f = track_freq_mhz(rec["f_start_mhz"], rec["drift_hz_s"], rec["chirp_hz_s2"], t_IxK)
    c = (f - h["fch1"]) / h["foff"]
    half = max(rec["width_hz"], abs(obs.foff_hz)) / abs(obs.foff_hz) + 1.0
    return np.stack([np.floor(c.min(axis=1) - half), np.ceil(c.max(axis=1) + half)],
                    axis=1).astype(int)


def _impulse_rows(cad: synth.Cadence, s: int) -> set[int]:
    rows: set[int] = set()
    for ev in cad.rfi:
        for sc in ev["scans"]:
            if ev["kind"] == "impulse" and sc["scan_index"] == s:
                rows.update(range(sc["int_start"], sc["int_stop"]))
    return rows


def _excess(x_TxF: np.ndarray, windows: np.ndarray, skip_rows=(), guard=4, side=24):
    """Power in the track windows above the neighbouring channels.

    Returns the summed excess, its z-score and the noise std estimated from the neighbours.
    """
    total, var_units, neigh_all = 0.0, 0.0, []
    nchans = x_TxF.shape[1]
    for i, (lo, hi) in enumerate(windows):
        if i in skip_rows:
            continue
        lo, hi = max(lo, 0), min(hi, nchans - 1)
        band = x_TxF[i, lo:hi + 1]
        neigh = np.concatenate([x_TxF[i, max(lo - guard - side, 0):max(lo - guard, 0)],
                                x_TxF[i, hi + guard + 1:hi + guard + side + 1]])
        total += band.sum() - band.size * neigh.mean()
        var_units += band.size + band.size ** 2 / neigh.size
        neigh_all.append(neigh - neigh.mean())
    sigma = np.concatenate(neigh_all).std()
    return total, total / (sigma * math.sqrt(var_units)), sigma


# --------------------------------------------------------------------------- noise


def test_noise_is_chi_squared_with_102_dof():
    cad = _cadence(QUIET, seed=1)
    x = np.stack(_normalised(cad))
    mean, var = x.mean(), x.var()
    assert mean == pytest.approx(1.0, abs=2e-3)
    assert 2.0 * mean**2 / var == pytest.approx(102, rel=0.03)  # dof from mean/variance
    skew = ((x - mean) ** 3).mean() / var**1.5
    assert skew == pytest.approx(math.sqrt(8.0 / 102), rel=0.15)  # chi-squared, not Gaussian


def test_bandpass_rolls_off_at_coarse_edges_with_dc_spikes():
    cad = _cadence(QUIET, seed=2)
    obs, noise = QUIET.obs, QUIET.noise
    level_F = np.median(np.vstack([s.data_TxF for s in cad.scans]), axis=0)
    for k in range(obs.n_coarse):
        coarse = level_F[k * obs.nfpc:(k + 1) * obs.nfpc]
        top = np.median(coarse[obs.nfpc // 4:3 * obs.nfpc // 4])
        assert top == pytest.approx(noise.mean_level, rel=0.2)
        assert coarse[obs.nfpc // 2] > 3.0 * top  # DC spike at the centre channel
        others = np.delete(coarse, obs.nfpc // 2)
        assert np.argmax(others) != obs.nfpc // 2 - 1 or others.max() < 1.5 * top
        assert coarse[:5].mean() < 0.6 * top and coarse[-5:].mean() < 0.6 * top  # roll-off
        assert 0.9 * top < coarse[obs.nfpc // 8] < 1.1 * top  # flat inside the roll-off


# --------------------------------------------------------------------------- signals


def test_eti_signals_present_in_on_scans_only():
    cad = _cadence(SynthConfig(), seed=3)
    xs = _normalised(cad)
    assert {r["kind"] for r in cad.signals} == set(synth.KINDS)
    for rec in cad.signals:
        for s in range(synth.N_SCANS):
            windows = _track_windows(rec, cad, s, QUIET.obs)
            if windows.min() < 0 or windows.max() >= QUIET.obs.nchans:
                continue  # the extrapolated track left the band during an OFF scan
            _, z, _ = _excess(xs[s], windows, skip_rows=_impulse_rows(cad, s))
            if s in synth.ON_SCANS:
                assert rec["scans"][s]["present"] and z > 6.0, (rec["id"], s, z)
            else:
                assert not rec["scans"][s]["present"] and abs(z) < 4.0, (rec["id"], s, z)


def test_track_is_continuous_through_gaps_and_off_scans():
    config = SynthConfig(rfi=RfiConfig.none(), eti=(
        SignalSpec(kind="linear", snr=400.0, drift_hz_s=0.4, width_hz=1.4),
        SignalSpec(kind="chirped", snr=400.0, drift_hz_s=-0.8, chirp_hz_s2=5e-4, width_hz=2.0),
    ))
    cad = _cadence(config, seed=4)
    obs = config.obs
    xs = _normalised(cad)
    t0 = cad.scans[0].header["tstart"]
    for rec in cad.signals:
        times, freqs = [], []
        for s in synth.ON_SCANS:
            h = cad.scans[s].header
            t_scan = (h["tstart"] - t0) * 86400.0
            assert rec["scans"][s]["f_scan_start_mhz"] == pytest.approx(track_freq_mhz(
                rec["f_start_mhz"], rec["drift_hz_s"], rec["chirp_hz_s2"], t_scan), abs=1e-9)
            for i in range(obs.n_ints):  # centroid of the excess power of each integration
                t_mid = t_scan + (i + 0.5) * obs.tsamp_s
                f_model = track_freq_mhz(rec["f_start_mhz"], rec["drift_hz_s"],
                                         rec["chirp_hz_s2"], t_mid)
                c_model = (f_model - h["fch1"]) / h["foff"]
                cols = np.arange(round(c_model) - 8, round(c_model) + 9)
                excess = xs[s][i, cols] - 1.0
                c_meas = (cols * excess).sum() / excess.sum()
                assert c_meas == pytest.approx(c_model, abs=0.5)
                times.append(t_mid)
                freqs.append(h["fch1"] + c_meas * h["foff"])
        # one polynomial through all three ON scans recovers the drift model
        coef = np.polyfit(np.array(times), (np.array(freqs) - rec["f_start_mhz"]) * 1e6, 2)
        assert coef[1] == pytest.approx(rec["drift_hz_s"], abs=0.01)
        assert 2 * coef[0] == pytest.approx(rec["chirp_hz_s2"], abs=2e-5)


@pytest.mark.parametrize("drift_hz_s, width_hz", [(0.2, 1.4), (3.0, 2.8)],
                         ids=["slow", "fast-smeared"])
def test_measured_integrated_snr_matches_request(drift_hz_s, width_hz):
    spec = SignalSpec(kind="linear", snr=100.0, drift_hz_s=drift_hz_s, width_hz=width_hz)
    config = SynthConfig(eti=(spec,), rfi=RfiConfig.none())
    cad, bare = _cadence(config, seed=5), _cadence(QUIET, seed=5)  # same noise, no signal
    obs = config.obs
    rec = cad.signals[0]
    smear_ch = abs(drift_hz_s) * obs.tsamp_s / abs(obs.foff_hz)
    for s in synth.ON_SCANS:
        x = cad.scans[s].data_TxF.astype(np.float64) / cad.bandpass_F
        windows = _track_windows(rec, cad, s, obs)
        assert (windows[:, 1] - windows[:, 0]).min() >= smear_ch  # smeared across channels
        total, _, sigma = _excess(x, windows)
        assert sigma == pytest.approx(SIGMA, rel=0.1)
        assert total / (sigma * math.sqrt(obs.n_ints)) == pytest.approx(100.0, rel=0.2)
        # exactly, from the injected power alone (definition in the synth docstring)
        injected = (cad.scans[s].data_TxF.astype(np.float64)
                    - bare.scans[s].data_TxF) / cad.bandpass_F
        exact = injected.sum() / (SIGMA * math.sqrt(obs.n_ints))
        assert exact == pytest.approx(100.0, rel=0.01)
        assert rec["scans"][s]["snr_scan"] == pytest.approx(100.0, rel=0.01)


def test_pulsed_signal_is_on_in_a_subset_of_integrations():
    spec = SignalSpec(kind="pulsed", snr=300.0, drift_hz_s=0.1, width_hz=2.0,
                      pulse_period_s=4 * synth.BL_TSAMP_S, pulse_duty=0.5)
    config = SynthConfig(eti=(spec,), rfi=RfiConfig.none())
    cad, bare = _cadence(config, seed=6), _cadence(QUIET, seed=6)
    for s in synth.ON_SCANS:
        per_int = ((cad.scans[s].data_TxF.astype(np.float64) - bare.scans[s].data_TxF)
                   / cad.bandpass_F).sum(axis=1)
        continuous = 300.0 * SIGMA / 4.0  # channel-integrated power per integration if not pulsed
        assert (per_int < 0.05 * continuous).sum() >= 4  # off integrations
        assert per_int.max() > 1.5 * continuous  # on-state power is divided by the duty
        assert per_int.sum() / (SIGMA * 4.0) == pytest.approx(300.0, rel=0.01)


@pytest.mark.parametrize("kind, drift_hz_s", [("linear", 0.2), ("linear", 2.0), ("pulsed", 2.0)],
                         ids=["slow", "fast-smeared", "fast-pulsed"])
def test_matched_snr_is_the_injected_signals_norm(kind, drift_hz_s):
    """The clairvoyant S/N equals |signal| / sigma of what the generator injected, and scales as physics says."""
    spec = SignalSpec(kind=kind, snr=40.0, drift_hz_s=drift_hz_s, width_hz=1.4)
    config = SynthConfig(eti=(spec,), rfi=RfiConfig.none())
    cad, bare = _cadence(config, seed=8), _cadence(QUIET, seed=8)
    obs, rec = config.obs, cad.signals[0]
    placed = dataclasses.replace(spec, f_start_mhz=rec["f_start_mhz"])
    for s in synth.ON_SCANS:
        a = (cad.scans[s].data_TxF.astype(np.float64) - bare.scans[s].data_TxF) / cad.bandpass_F / SIGMA
        t0, fch1 = rec["scans"][s]["t_offset_s"], cad.scans[s].header["fch1"]
        rho = synth.matched_snr(placed, t0, obs, fch1)
        assert rho == pytest.approx(float(np.sqrt(np.sum(a * a))), rel=0.01)  # float32 data: 1 %
        smear = abs(drift_hz_s) * obs.tsamp_s / abs(obs.foff_hz)  # channels crossed per integration
        if drift_hz_s > 1.0:  # smeared evenly over ~smear channels: snr / sqrt(smear), a little less (profile, edges)
            continuous = 40.0 / math.sqrt(smear)
            assert 0.85 * continuous < synth.matched_snr(placed, t0, obs, fch1, pulses_known=False) <= 1.001 * continuous
            if kind == "pulsed":  # knowing the pulses (duty 0.5) gains about sqrt(2)
                assert rho == pytest.approx(math.sqrt(2.0) * continuous, rel=0.15)
        else:  # barely smeared: nearly the whole snr
            assert 0.5 * 40.0 < rho <= 40.0


# --------------------------------------------------------------------------- RFI


def test_rfi_present_in_all_six_scans():
    cad = _cadence(SynthConfig(), seed=7)
    xs = _normalised(cad)
    kinds = [ev["kind"] for ev in cad.rfi]
    assert {"zero_drift", "drifting", "impulse"} <= set(kinds)
    for ev in cad.rfi:
        if ev["kind"] == "impulse":
            (sc,) = ev["scans"]
            rows = slice(sc["int_start"], sc["int_stop"])
            band = slice(sc["chan_min"], sc["chan_max"] + 1)
            lift = np.median(xs[sc["scan_index"]][rows, band]) - 1.0
            assert lift == pytest.approx(ev["level"], abs=0.05)
            continue
        assert len(ev["scans"]) == synth.N_SCANS
        for s in range(synth.N_SCANS):
            assert ev["scans"][s]["present"]
            windows = _track_windows(ev, cad, s, QUIET.obs)
            _, z, _ = _excess(xs[s], windows, skip_rows=_impulse_rows(cad, s))
            assert z > 5.0, (ev["id"], s, z)
    for s in range(synth.N_SCANS):
        assert kinds.count("impulse") == synth.N_SCANS  # one impulse per file by default
        assert any(sc["scan_index"] == s for ev in cad.rfi for sc in ev["scans"]
                   if ev["kind"] == "impulse")


def test_lines_never_overlap_and_eti_avoid_edges_and_dc():
    config = SynthConfig(obs=ObsConfig(n_coarse=8),
                         eti=signal_grid(EtiGrid(drifts_hz_s=(0.2, 4.0)), cadences=4))
    obs, margin_ch = config.obs, config.margin_hz / abs(config.obs.foff_hz)
    for k, cad in enumerate(synth.iter_cadences(config, seed=8, cadences=4)):
        assert len(cad.signals) == 36 // 4
        lines = [r for r in cad.signals + cad.rfi if r["kind"] != "impulse"]
        for s in range(synth.N_SCANS):
            bands = sorted((r["scans"][s]["freq_min_mhz"], r["scans"][s]["freq_max_mhz"])
                           for r in lines)
            for (_, hi), (lo, _) in zip(bands[:-1], bands[1:]):
                assert lo - hi >= 0.99 * config.margin_hz * 1e-6
        for rec in cad.signals:
            for s in synth.ON_SCANS:
                sc = rec["scans"][s]
                pos = np.arange(sc["chan_min"], sc["chan_max"] + 1) % obs.nfpc
                assert np.abs(pos - obs.nfpc // 2).min() >= margin_ch - 1
                edge = obs.nfpc * config.noise.rolloff_frac
                assert pos.min() >= edge and pos.max() <= obs.nfpc - edge


def test_pinned_start_frequency_is_used_and_checked():
    pinned = SignalSpec(kind="linear", snr=50.0, drift_hz_s=0.3, f_start_mhz=1099.98, cadence=0)
    cad = _cadence(SynthConfig(eti=(pinned,)), seed=9)
    assert cad.signals[0]["f_start_mhz"] == 1099.98
    everywhere = dataclasses.replace(pinned, cadence=None)
    with pytest.raises(ValueError, match="outside the band"):
        _cadence(SynthConfig(eti=(everywhere,)), seed=9, index=1)  # cadence 1 is at 1101 MHz


def test_overcrowded_band_raises():
    fast = SignalSpec(kind="linear", snr=20.0, drift_hz_s=4.0)
    config = SynthConfig(obs=ObsConfig(n_coarse=1), eti=(fast,) * 6, max_tries=50)
    with pytest.raises(RuntimeError, match="could not place"):
        _cadence(config, seed=0)


# --------------------------------------------------------------------------- determinism


def test_same_seed_same_cadence_different_seed_differs():
    a, b, c = (_cadence(SynthConfig(), seed) for seed in (11, 11, 12))
    for sa, sb, sc in zip(a.scans, b.scans, c.scans):
        np.testing.assert_array_equal(sa.data_TxF, sb.data_TxF)
        assert sa.header == sb.header
        assert not np.array_equal(sa.data_TxF, sc.data_TxF)
    assert a.signals == b.signals and a.rfi == b.rfi
    assert a.signals != c.signals


def test_cadence_does_not_depend_on_survey_length():
    one = next(synth.iter_cadences(SynthConfig(), seed=13, cadences=1))
    first_of_three = next(synth.iter_cadences(SynthConfig(), seed=13, cadences=3))
    np.testing.assert_array_equal(one.scans[3].data_TxF, first_of_three.scans[3].data_TxF)


def test_signal_grid_covers_every_combination():
    grid = EtiGrid(snrs=(8, 40), kinds=synth.KINDS, drifts_hz_s=(0.2, 2.0), widths_hz=(1.4,))
    specs = signal_grid(grid, cadences=3)
    assert len(specs) == 12
    assert {(s.snr, s.kind, abs(s.drift_hz_s)) for s in specs} == {
        (snr, kind, d) for snr in (8, 40) for kind in synth.KINDS for d in (0.2, 2.0)}
    assert sorted({s.cadence for s in specs}) == [0, 1, 2]
    assert {math.copysign(1, s.drift_hz_s) for s in specs} == {-1.0, 1.0}
    assert all((s.chirp_hz_s2 != 0) == (s.kind == "chirped") for s in specs)


def test_invalid_specs_are_rejected():
    with pytest.raises(ValueError):
        SignalSpec(kind="chirped", chirp_hz_s2=0.0)
    with pytest.raises(ValueError):
        SignalSpec(kind="sinusoidal")
    with pytest.raises(ValueError):
        ObsConfig(band_step_mhz=0.01)  # bands of successive cadences would overlap


# --------------------------------------------------------------------------- archive


def test_archive_round_trips_through_the_project_readers(tmp_path):
    from seti_auditor.archive import write_synthetic_archive
    from seti_auditor.formats import open_observation

    truth_path = write_synthetic_archive(tmp_path / "a", cadences=2, seed=21)
    truth = json.loads(truth_path.read_text())
    assert truth["seed"] == 21 and len(truth["files"]) == 12
    assert [f["format"] for f in truth["files"]] == ["fil"] * 6 + ["h5"] * 6
    cadences = list(synth.iter_cadences(SynthConfig(), seed=21, cadences=2))
    for entry in truth["files"]:
        cad = cadences[int(entry["cadence_id"][3:])]
        scan = cad.scans[entry["scan_index"]]
        obs = open_observation(tmp_path / "a" / entry["name"])
        np.testing.assert_array_equal(obs.values, scan.data_TxF)
        assert obs.attrs["source_name"] == scan.header["source_name"] == entry["source_name"]
        assert obs.attrs["nfpc"] == SynthConfig().obs.nfpc
        assert obs.attrs["fch1"] == pytest.approx(entry["fch1"])
        assert entry["on_source"] == (entry["scan_index"] in synth.ON_SCANS)
    names = {f["name"] for f in truth["files"]}
    for rec in truth["signals"] + truth["rfi"]:
        assert {sc["file"] for sc in rec["scans"]} <= names
    assert len(truth["signals"]) == 2 * len(synth.DEFAULT_ETI)


def test_source_names_come_from_headers_not_file_names(tmp_path):
    from seti_auditor.archive import write_synthetic_archive
    from seti_auditor.formats import read_header

    truth = json.loads(write_synthetic_archive(tmp_path, cadences=2, seed=22).read_text())
    for cad in truth["cadence_list"]:
        names = [read_header(tmp_path / f)["source_name"] for f in cad["files"]]
        assert names[0] == names[2] == names[4] == cad["target"]
        assert len({names[1], names[3], names[5], cad["target"]}) == 4
        for f in cad["files"]:
            assert not any(n in f for n in names)
            assert "on" not in f.lower().split(".")[0].split("_")
            assert "off" not in f.lower()
    bands = {f["fch1"] for f in truth["files"]}
    assert len(bands) == 2  # distinct band per cadence


def test_archive_is_byte_identical_for_a_seed(tmp_path):
    from seti_auditor.archive import write_synthetic_archive

    paths = [write_synthetic_archive(tmp_path / d, cadences=2, seed=s, formats="mixed")
             for d, s in (("a", 5), ("b", 5), ("c", 6))]
    a, b, c = (sorted(p.parent.iterdir()) for p in paths)
    assert [p.name for p in a] == [p.name for p in b]
    for pa, pb, pc in zip(a, b, c):
        assert pa.read_bytes() == pb.read_bytes()
        if pa.suffix != ".json":
            assert pa.read_bytes() != pc.read_bytes()


def test_archive_rejects_bad_arguments(tmp_path):
    from seti_auditor.archive import write_synthetic_archive

    with pytest.raises(ValueError):
        write_synthetic_archive(tmp_path, formats="zarr")
    pinned = SynthConfig(eti=(SignalSpec(cadence=5),))
    with pytest.raises(ValueError):
        write_synthetic_archive(tmp_path, cadences=2, config=pinned)
