"""The cadence line search: follow a weak line through every scan of its cadence (pure).

The tile-level test (:mod:`seti_auditor.cadence_test`) needs a line to pass the archive-wide
threshold in one scan by itself. A signal whose power is smeared over many channels (a fast
drift) or that is simply faint may not, although its three ON scans together carry
``sqrt(3)`` times the evidence of one. This search asks the cadence as a whole:

1. **Seeds**: every (tile, sub-band) row of an ON scan in a cadence with a calibrated p-value
   ``p <= seed_p`` (the tile's searched statistic) and not part of a broadband impulse.
2. **Following** (:func:`next_targets`, in rounds): first the seed's own block is searched
   in a small window (its position and drift refined), then the other time blocks of the
   cadence, nearest in time first, each predicted from the nearest block that shows the line
   (``f + drift * dt``), so a chirping line is followed scan by scan. The window around the
   prediction is ``freq_tol_hz + drift_unc * |dt| + chirp * dt^2 / 2`` in frequency and
   ``drift_unc + chirp * |dt|`` in drift (:func:`seti_auditor.scoring.window_stat`, on the
   normal scores of the residual); its best track gets a Bonferroni p-value over the tracks
   searched (:func:`seti_auditor.scoring.window_pvalue`, conservative). Lines drifting 4 or
   more channels per integration are searched with boxcars of their smear only
   (:func:`widths_for`).
3. **Decision** (:func:`decide_lines`): the ON scans' p-values (the seed's own, and the window
   p-values of the other ON scans) are combined by Fisher's method; Benjamini-Hochberg at
   ``q`` runs over the combined p-values with ``m`` = every ON row of every cadence (each row
   could have been a seed; a row that was not is counted with p = 1). Lines are taken in
   order of combined p and later seeds on an accepted line dropped. A line is reported when
   its q-value is at most ``q``, at least ``min_on_scans`` ON scans show it (the seed's, and
   any whose window ``p <= show_p`` with a best track that continues the seed's,
   :func:`coherent`), the seed's own track holds up in its standardised window
   (``p <= show_p``), and no OFF scan shows it (window ``p <= veto_p``: RFI); each ON scan
   that shows it becomes a catalog row.

The screen (``seed_p``) makes the combined test slightly liberal (a line is looked for only
where one scan already looks unusual); the OFF veto, ``min_on_scans`` and a small ``q`` keep
false candidates rare, which the detection benchmark measures.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
from scipy import stats as sps

from seti_auditor.joint_search import SLOW_JOINT, JointSearchConfig
from seti_auditor.stats import bh_qvalues

_SECONDS_PER_DAY = 86400.0

# the columns of a target (:func:`next_targets`' output; the measurement adds the window's result)
TARGET_COLUMNS = (
    "seed", "cadence_id", "scan_index", "on_source", "file_id", "tile", "own", "dt_s", "freq_mhz", "chan0",
    "drift0_chan", "half_chan", "half_drift_chan", "drift_step_chan", "foff_mhz", "tsamp_s", "tile_freq0_mhz",
    "tstart_mjd", "tstop_mjd", "source_file", "source_name",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class LineSearchConfig:
    """The cadence line search (see the module docstring)."""

    enabled: bool = True  # run it after the tile-level cadence test (on by default since 0 false candidates on ~1 GB; docs/statistics.md)
    seed_p: float = 0.002  # ON rows with a calibrated p <= this seed a line
    max_seeds: int = 5000  # at most this many seeds per run (smallest p first): bounds the cost
    freq_tol_hz: float = 20.0  # window half-width around the carried line, fixed part (Hz)
    drift_unc_hz_s: float = 0.03  # drift uncertainty of a seed found by the full-resolution search (Hz/s)
    fast_drift_unc_hz_s: float = 0.1  # ... by the binned fast search (|drift| > max_drift channels/integration)
    chirp_hz_s2: float = 3e-4  # largest |d drift / dt| followed (Hz/s^2): widens windows with the time gap
    show_p: float = 0.01  # another ON scan shows the line when its window p <= this
    veto_p: float = 0.005  # an OFF scan shows it (RFI) when its window p <= this
    q: float = 0.01  # Benjamini-Hochberg level of the combined (cadence-level) p-values
    min_on_scans: int = 2  # ON scans (seed included) that must show a line
    # the cadence-coherent joint search for fast lines (seti_auditor.joint_search), run after this search
    # when both are enabled (so --no-line-search and the article's --score mse never run it)
    joint: JointSearchConfig = JointSearchConfig()
    # ... and for slow lines (full resolution, |drift| <= 0.6 Hz/s), with its own trials and level
    joint_slow: JointSearchConfig = SLOW_JOINT

    def __post_init__(self) -> None:
        if not 0 < self.seed_p <= 1 or not 0 < self.q < 1:
            raise ValueError(f"invalid LineSearchConfig {self}")
        if self.min_on_scans < 1:
            raise ValueError("min_on_scans must be >= 1")


def widths_for(drift_chan: float) -> tuple[int, ...]:
    """Boxcar widths searched for a line drifting ``drift_chan`` channels per integration.

    A line drifting ``k`` channels per integration is smeared over about ``k`` channels in each
    integration (the spectrometer integrates while it moves), so for ``k >= 4`` a boxcar of 1-3
    channels holds at most 3/k of its power per integration: only ``k // 2``, ``k`` and ``k + 2``
    are searched. Narrow boxcars there added tracks (a larger Bonferroni factor) that matched
    noise, not lines (docs/statistics.md). Slower lines: 1, 2, 3 (and ``k``, ``k + 2``).
    """
    k = int(round(abs(drift_chan)))
    if k >= 4:
        return tuple(sorted({k // 2, k, k + 2}))
    return tuple(sorted({1, 2, 3} | ({k, k + 2} if k >= 2 else set())))


# --------------------------------------------------------------------------- planning


def seeds(table: pd.DataFrame, broadband: pd.Series, cfg: LineSearchConfig) -> pd.DataFrame:
    """ON rows of cadences that seed a line (smallest p first, at most ``max_seeds``)."""
    mask = (table["on_source"].astype(bool) & (table["cadence_id"].astype(str) != "") & (table["scan_index"] >= 0)
            & (table["p"] <= cfg.seed_p) & ~broadband.reindex(table.index, fill_value=False))
    out = table[mask].sort_values(["p", "tile", "subband"], kind="mergesort").head(cfg.max_seeds)
    return out.assign(seed=np.arange(len(out)))


def blocks(rows: pd.DataFrame) -> list[tuple]:
    """Time blocks of one cadence's rows: ``(scan, tstart, tstop, freq_min, freq_max, rows)``."""
    out = []
    for (scan, _), grp in rows.groupby(["scan_index", rows["tstart_mjd"].round(9)], sort=True):
        out.append((int(scan), float(grp["tstart_mjd"].iloc[0]), float(grp["tstop_mjd"].iloc[0]),
                    grp["freq_min_mhz"].to_numpy(), grp["freq_max_mhz"].to_numpy(), grp))
    return out


def _mid(t0: float, t1: float) -> float:
    return 0.5 * (t0 + t1)


def _target(seed, ref: dict, block: tuple, own: bool, cfg: LineSearchConfig, tile_time: int) -> dict | None:
    """Where to search ``block`` for the line of ``seed``, carried from the reference position ``ref``."""
    scan, t0, t1, fmin, fmax, grp = block
    dt = (_mid(t0, t1) - ref["t_mjd"]) * _SECONDS_PER_DAY
    freq = ref["freq_mhz"] + ref["drift_hz_s"] * dt / 1e6
    hits = np.flatnonzero((fmin <= freq) & (fmax >= freq))
    if hits.size == 0:
        return None
    hit = grp.iloc[int(hits[0])]
    foff_hz = abs(hit.foff_mhz) * 1e6
    to_chan = hit.tsamp_s / (hit.foff_mhz * 1e6)  # Hz/s -> channels per integration (signed)
    unc = ref["unc_hz_s"]
    half_hz = 0.0 if own else cfg.freq_tol_hz + unc * abs(dt) + 0.5 * cfg.chirp_hz_s2 * dt * dt
    return {
        "seed": int(seed.seed), "cadence_id": str(seed.cadence_id), "scan_index": scan,
        "on_source": bool(hit.on_source), "file_id": int(hit.file_id), "tile": int(hit.tile),
        "own": own, "dt_s": dt, "freq_mhz": freq, "chan0": (freq - hit.tile_freq0_mhz) / hit.foff_mhz,
        "drift0_chan": ref["drift_hz_s"] * to_chan, "half_chan": half_hz / foff_hz + 1.0,
        "half_drift_chan": (unc + cfg.chirp_hz_s2 * abs(dt)) * abs(to_chan), "drift_step_chan": 2.0 / max(tile_time - 1, 1),
        "foff_mhz": float(hit.foff_mhz), "tsamp_s": float(hit.tsamp_s), "tile_freq0_mhz": float(hit.tile_freq0_mhz),
        "tstart_mjd": float(hit.tstart_mjd), "tstop_mjd": float(hit.tstop_mjd),
        "source_file": hit.source_file, "source_name": hit.source_name,
    }  # fmt: skip


def next_targets(seed_rows: pd.DataFrame, cadence_blocks: list[tuple], measured: pd.DataFrame, cfg: LineSearchConfig,
                 tile_time: int, max_drift_chan: float, gate_p: float = 1.0) -> pd.DataFrame:
    """The next round of targets: per seed, the unmeasured block nearest in time to the seed.

    Round 0 is the seed's own block (a small window: it refines the seed's position and drift).
    Then the ON blocks, then the OFF blocks, nearest first, each predicted from the measured
    block nearest to it in time that shows the line (the seed's own, or one with
    ``p <= show_p``), so a chirp is followed scan by scan. OFF blocks are measured only for
    seeds whose combined ON p-value is at most ``gate_p`` (only those can pass; the OFF scans
    can only veto).
    """
    rows = []
    done = {} if measured.empty else {k: g for k, g in measured.groupby("seed", sort=False)}
    for seed in seed_rows.itertuples(index=False):
        t_seed = _mid(seed.tstart_mjd, seed.tstop_mjd)
        mine = done.get(int(seed.seed))
        if mine is None:
            own = next((b for b in cadence_blocks if b[0] == seed.scan_index and abs(b[1] - seed.tstart_mjd) < 1e-9), None)
            if own is None:
                continue
            fast = abs(seed.drift_hz_s * seed.tsamp_s / (seed.foff_mhz * 1e6)) > max_drift_chan
            unc = cfg.fast_drift_unc_hz_s if fast else cfg.drift_unc_hz_s
            drift = float(seed.drift_hz_s) if np.isfinite(seed.drift_hz_s) else 0.0
            ref = {"t_mjd": t_seed, "freq_mhz": float(seed.peak_freq_mhz), "drift_hz_s": drift, "unc_hz_s": unc}
            if (t := _target(seed, ref, own, True, cfg, tile_time)) is not None:
                rows.append(t)
            continue
        seen = {(int(s), round(float(t), 9)) for s, t in mine[["scan_index", "tstart_mjd"]].itertuples(index=False)}
        left = [b for b in cadence_blocks if (b[0], round(b[1], 9)) not in seen]
        on_left = [b for b in left if bool(b[5]["on_source"].iloc[0])]
        if not on_left and left:
            p_on = np.r_[float(seed.p), mine.loc[mine["on_source"] & ~mine["own"], "p"].to_numpy(np.float64)]
            if fisher(p_on) > gate_p:
                left = []
        else:
            left = on_left
        if not left:
            continue
        block = min(left, key=lambda b: (abs(_mid(b[1], b[2]) - t_seed), b[0]))
        refs = mine[mine["own"] | (mine["on_source"] & (mine["p"] <= cfg.show_p))]
        refs = refs[np.isfinite(refs["chan"])]
        if refs.empty:
            continue
        t_block = _mid(block[1], block[2])
        r = refs.iloc[int(np.argmin(np.abs(0.5 * (refs["tstart_mjd"] + refs["tstop_mjd"]) - t_block).to_numpy()))]
        ref = {"t_mjd": _mid(r.tstart_mjd, r.tstop_mjd), "freq_mhz": r.tile_freq0_mhz + r.chan * r.foff_mhz,
               "drift_hz_s": r.drift_chan * r.foff_mhz * 1e6 / r.tsamp_s, "unc_hz_s": cfg.drift_unc_hz_s}
        if (t := _target(seed, ref, block, False, cfg, tile_time)) is not None:
            rows.append(t)
        else:  # outside the band: record the block as measured-nothing so the rounds end
            rows.append({"seed": int(seed.seed), "cadence_id": str(seed.cadence_id), "scan_index": block[0],
                         "on_source": bool(block[5]["on_source"].iloc[0]), "file_id": int(block[5]["file_id"].iloc[0]),
                         "tile": -1, "own": False, "tstart_mjd": block[1], "tstop_mjd": block[2]})
    extra = {k for r in rows for k in r} - set(TARGET_COLUMNS)
    if extra:  # a programming error: the measurement and the decision read these columns by name
        raise RuntimeError(f"next_targets: columns {sorted(extra)} are not in TARGET_COLUMNS")
    return pd.DataFrame(rows, columns=list(TARGET_COLUMNS))


# --------------------------------------------------------------------------- decision


def fisher(p: np.ndarray) -> float:
    """Fisher's combined p-value of independent p-values."""
    p = np.clip(np.asarray(p, np.float64), 1e-300, 1.0)
    return float(sps.chi2.sf(-2.0 * np.log(p).sum(), 2 * p.size)) if p.size else 1.0


def coherent(measured: pd.DataFrame, cfg: LineSearchConfig) -> np.ndarray:
    """Per measured row: does its best track continue the seed's own track (trapezoid rule)?

    For a line whose drift changes at a constant rate (a linear line, or a chirp), the mean
    drift between two scans, ``(f_row - f_seed) / dt``, is the average of the drifts measured
    in the two scans, whatever the chirp. The tolerance is the measurement's: the window's
    fixed frequency half-width over the time gap (``freq_tol_hz / |dt|``) plus the seed's drift
    uncertainty (recovered from its own target's drift half-width, ``drift_unc_hz_s`` or
    ``fast_drift_unc_hz_s``). A window whose best track is a noise peak that merely lies
    inside the window fails it; the seed's own row, and rows without a track, pass.
    """
    if measured.empty:
        return np.zeros(0, bool)
    f = (measured["tile_freq0_mhz"] + measured["chan"] * measured["foff_mhz"]).to_numpy(np.float64)
    t = (0.5 * (measured["tstart_mjd"] + measured["tstop_mjd"]) * _SECONDS_PER_DAY).to_numpy(np.float64)
    to_hz_s = (measured["foff_mhz"] * 1e6 / measured["tsamp_s"]).to_numpy(np.float64)
    d = measured["drift_chan"].to_numpy(np.float64) * to_hz_s
    unc = measured["half_drift_chan"].to_numpy(np.float64) * np.abs(to_hz_s)  # own rows (dt = 0): the seed's drift_unc
    own = measured["own"].to_numpy(bool)
    seed = measured["seed"].to_numpy()
    first = pd.Series(np.arange(len(measured)))[own].groupby(seed[own]).first()  # the own row of each seed
    ref = pd.Series(seed).map(first).to_numpy()
    ok = np.ones(len(measured), bool)
    has = ~np.isnan(ref) & np.isfinite(f) & ~own
    i, j = np.flatnonzero(has), ref[has].astype(np.int64)
    dt = t[i] - t[j]
    valid = np.isfinite(f[j]) & (np.abs(dt) > 0)
    mismatch = np.abs((f[i] - f[j]) * 1e6 / np.where(valid, dt, 1.0) - 0.5 * (d[i] + d[j]))
    tol = cfg.freq_tol_hz / np.maximum(np.abs(dt), 1e-9) + unc[j]
    ok[i] = ~valid | (mismatch <= tol)
    return ok


def decide_lines(seed_rows: pd.DataFrame, measured: pd.DataFrame, m_tests: int, cfg: LineSearchConfig) -> tuple:
    """Lines from measured targets: ``(lines, rows)``.

    ``measured``: :func:`plan_targets`' rows with ``stat``, ``p``, ``chan``, ``drift_chan`` and
    ``width`` from the window search. ``lines``: one row per distinct line (its seed, combined
    p and q, ON scans shown, OFF scans shown, verdict "pass" / "in_off" / "few_on_scans" /
    "not_significant"); ``rows``: measured rows with their line's verdict: for a passing line
    every ON scan that shows it, for the others the seed's own scan.
    """
    if seed_rows.empty or measured.empty:
        return pd.DataFrame(), pd.DataFrame()
    seed_p = seed_rows.set_index("seed")["p"]
    measured = measured.assign(coherent=coherent(measured, cfg))
    per_seed = []
    for sid, grp in measured.groupby("seed", sort=False):
        on_other = grp[grp["on_source"] & ~grp["own"]]
        off = grp[~grp["on_source"]]
        p_on = np.r_[float(seed_p[sid]), on_other["p"].to_numpy(np.float64)]
        own_p = grp.loc[grp["own"], "p"]
        per_seed.append({
            "seed": int(sid), "p_combined": fisher(p_on), "n_on_measured": int(p_on.size),
            # the seed's track, standardised against its own strip, must hold up (not a p-value: a check)
            "own_shown": bool(own_p.size and float(own_p.iloc[0]) <= cfg.show_p),
            # another ON scan shows the line when its best track is significant and continues the seed's
            "n_on_scans": 1 + int(((on_other["p"] <= cfg.show_p) & on_other["coherent"]).sum()),
            "n_off_checked": int(len(off)), "n_off_shown": int((off["p"] <= cfg.veto_p).sum()),
        })  # fmt: skip
    lines = pd.DataFrame(per_seed).sort_values(["p_combined", "seed"], kind="mergesort")
    # one line per track: a later seed lying on an accepted line's measured position is a duplicate
    seeds_by_id = seed_rows.set_index("seed")
    tracks: dict[tuple, list[tuple[float, float]]] = {}  # (file_id, block) -> [(centre MHz, reach MHz)]
    keep = []
    for sid in lines["seed"].to_numpy():
        seed = seeds_by_id.loc[sid]
        key = (int(seed["file_id"]), round(float(seed["tstart_mjd"]), 9))
        dup = any(abs(seed["peak_freq_mhz"] - c) <= r for c, r in tracks.get(key, ()))
        keep.append(not dup)
        if not dup:
            for t in measured[measured["seed"] == sid].itertuples(index=False):
                if np.isfinite(t.chan):
                    reach = (abs(t.drift_chan) * (t.n_int - 1) / 2.0 + t.width + 2.0) * abs(t.foff_mhz) + 2e-5
                    tracks.setdefault((int(t.file_id), round(float(t.tstart_mjd), 9)), []).append(
                        (t.tile_freq0_mhz + t.chan * t.foff_mhz, reach))
    lines = lines[np.asarray(keep, bool)].copy()
    # BH over distinct lines only (a strong line seeds many rows: counting each would inflate the ranks)
    lines["q_combined"] = bh_qvalues(lines["p_combined"].to_numpy(), m_tests)
    lines["verdict"] = np.select(
        [lines["n_off_shown"] > 0, lines["q_combined"] > cfg.q, ~lines["own_shown"],
         lines["n_on_scans"] < cfg.min_on_scans],
        ["in_off", "not_significant", "not_significant", "few_on_scans"], "pass")
    out = measured.merge(lines[["seed", "p_combined", "q_combined", "n_on_scans", "n_off_checked", "verdict"]],
                         on="seed")
    own = out["own"].to_numpy(bool)
    shown = (out["on_source"] & (out["p"] <= cfg.show_p) & out["coherent"]).to_numpy() | own
    # passing lines: every ON scan that shows them; other lines: the seed's own scan (diagnostics)
    pick = np.where(out["verdict"].to_numpy() == "pass", shown, own)
    return lines.reset_index(drop=True), out[pick].reset_index(drop=True)


# --------------------------------------------------------------------------- catalog rows


def _extent_mhz(row) -> tuple[float, float]:
    centre = row.tile_freq0_mhz + row.chan * row.foff_mhz
    half = (abs(row.drift_chan) * (row.n_int - 1) / 2.0 + row.width / 2.0) * abs(row.foff_mhz)
    return centre - half, centre + half


def line_events(rows: pd.DataFrame, seed_rows: pd.DataFrame) -> pd.DataFrame:
    """Catalog events (:data:`seti_auditor.cadence_test.EVENT_COLUMNS`) of the passing lines' ON rows."""
    events = []
    seed_p = seed_rows.set_index("seed")["p"]
    for r in rows.itertuples(index=False):
        lo, hi = _extent_mhz(r)
        own = bool(r.own)
        events.append({
            "source_file": str(r.source_file), "source_name": str(r.source_name), "file_id": int(r.file_id),
            "cadence_id": str(r.cadence_id), "scan_index": int(r.scan_index), "on_source": True,
            "freq_min_mhz": lo, "freq_max_mhz": hi, "tstart_mjd": float(r.tstart_mjd),
            "tstop_mjd": float(r.tstop_mjd), "score": float(r.stat), "z_score": float(r.stat),
            "p_value": float(seed_p[r.seed]) if own else float(r.p), "q_value": float(r.q_combined),
            "drift_hz_s": float(r.drift_chan * r.foff_mhz * 1e6 / r.tsamp_s),
            "peak_freq_mhz": float(r.tile_freq0_mhz + r.chan * r.foff_mhz), "n_tiles": 1,
            "tile_first": int(r.tile), "tile_last": int(r.tile), "tiles": str(int(r.tile)),
            "n_on_scans": int(r.n_on_scans), "n_off_checked": int(r.n_off_checked), "cadence_test": "pass",
            "method": "cadence_line",
        })  # fmt: skip
    return pd.DataFrame(events)


def overlaps(ev: pd.Series | dict, frame: pd.DataFrame) -> np.ndarray:
    if frame.empty:
        return np.zeros(0, bool)
    same = (frame["file_id"].to_numpy() == ev["file_id"]) & (np.abs(frame["tstart_mjd"].to_numpy() - ev["tstart_mjd"]) < 1e-9)
    return same & (frame["freq_min_mhz"].to_numpy() <= ev["freq_max_mhz"]) & (frame["freq_max_mhz"].to_numpy() >= ev["freq_min_mhz"])


def merge_lines(candidates: pd.DataFrame, rejected: pd.DataFrame, new: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Add the line search's events to the tile-level candidates.

    An event overlapping a tile-level candidate of the same scan block is already reported and
    dropped; tile-level events rejected for too few ON scans that a line event covers are
    taken out of ``rejected`` (the line search found the other scans).
    """
    if new.empty:
        return candidates, rejected
    keep = [not overlaps(ev, candidates).any() for _, ev in new.iterrows()]
    new = new[np.asarray(keep, bool)]
    if not rejected.empty and not new.empty:
        covered = np.zeros(len(rejected), bool)
        for _, ev in new.iterrows():
            covered |= overlaps(ev, rejected)
        rejected = rejected[~covered]
    return pd.concat([candidates, new], ignore_index=True), rejected
