"""From flagged tiles to candidates: events, RFI rules and the ON/OFF cadence test.

Input: one row per tile (see :data:`TILE_COLUMNS`), all tiles of the run, flagged
or not (the unflagged ones tell how many tiles a file has per time block).
``peak_freq_mhz`` is the best track's frequency at the tile's middle time
``(tstart_mjd + tstop_mjd) / 2`` and ``drift_hz_s`` its drift (physical sign:
positive when the frequency grows with time).

Rules, in order:

1. *Broadband impulses*: in one time block (same file, same ``tstart_mjd``), if
   more than ``broadband_frac`` of the file's tiles are flagged (and at least
   ``broadband_min_tiles``), all those flagged tiles are one RFI event
   (reason ``"broadband"``).
2. *Events*: the other flagged tiles of one file and time block whose frequency
   ranges touch or overlap (gap at most ``merge_gap_frac`` of a tile's width)
   are merged into one event; its score, z, p, q, drift and peak come from its
   best-scoring tile.
3. *Scans*: an event in an OFF scan is RFI (``"off_scan"``). For an event in an
   ON scan, its frequency range is carried to every other scan of the cadence
   with its drift, ``f + drift * (t - t_peak)``, widened by
   ``freq_tol_mhz + drift_tol_hz_s * |t - t_peak|``; a scan "shows" the event
   when one of its flagged (non-broadband) tiles overlaps that window at the
   tile's middle time. Shown in every scan of a complete cadence: RFI
   (``"all_scans"``); shown in a neighbouring OFF scan (the OFFs just before
   and after it, or every OFF with ``off_scope="all"``): RFI (``"in_off"``).
   ``n_on_scans`` counts the ON scans (its own included) that show it; an
   event with ``n_on_scans < min_on_scans`` is rejected (``"few_on_scans"``),
   else it is a candidate with ``cadence_test = "pass"``.
4. Files with no cadence: events are candidates with ``cadence_test = "n/a"``
   and ``n_on_scans = -1``. An ON event of a cadence whose neighbouring OFF
   scans are all missing also gets ``"n/a"`` (nothing to compare with).

Outputs are three DataFrames (candidates, rfi, rejected) with
:data:`EVENT_COLUMNS` (plus ``reason`` for rfi and rejected), sorted by
descending score, then file, time and frequency.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

TILE_COLUMNS = (
    "tile", "file_id", "source_file", "source_name", "cadence_id", "scan_index", "on_source",
    "freq_min_mhz", "freq_max_mhz", "tstart_mjd", "tstop_mjd", "score", "z", "p", "q", "flagged",
    "drift_hz_s", "peak_freq_mhz",
)  # fmt: skip

EVENT_COLUMNS = (
    "source_file", "source_name", "file_id", "cadence_id", "scan_index", "on_source",
    "freq_min_mhz", "freq_max_mhz", "tstart_mjd", "tstop_mjd", "score", "z_score", "p_value",
    "q_value", "drift_hz_s", "peak_freq_mhz", "n_tiles", "tile_first", "tile_last", "tiles",
    "n_on_scans", "n_off_checked", "cadence_test", "method",
)  # fmt: skip

_SECONDS_PER_DAY = 86400.0
_TIME_DECIMALS = 9  # tstart_mjd rounded to 1e-9 day (86 us) identifies a time block


@dataclasses.dataclass(frozen=True)
class CadenceConfig:
    """Event merging, RFI rules and the ON/OFF test."""

    min_on_scans: int = 1  # ON scans (own included) that must show an event to keep it
    off_scope: str = "adjacent"  # OFF scans that veto: "adjacent" (before/after) or "all"
    match: str = "line"  # "line": compare the carried line with each tile's best track; "tile": with its whole band
    confirm_p: float = 0.01  # another ON scan shows the event when a row on its track has p <= this (or is flagged)
    veto_p: float = 0.02  # an OFF scan vetoes when a row on the carried track has p <= this (or is flagged)
    drift_match_hz_s: float = 0.3  # "line" matching: drifts may differ by this + 25% of the event's drift
    veto_rel_z: float = 0.25  # an unflagged OFF row vetoes only with z >= this x the event's z (a copy, not noise)
    freq_tol_mhz: float = 2e-5  # fixed widening of the carried frequency window (20 Hz, ~7 BL channels)
    drift_tol_hz_s: float = 0.25  # drift uncertainty (grid step of the fast search, chirps): widening per |time gap|
    merge_gap_frac: float = 0.05  # merge tiles whose gap is at most this fraction of a tile width
    broadband_frac: float = 0.5  # flagged fraction of a file's time block that is an impulse
    broadband_min_tiles: int = 3  # fewer flagged tiles are never called broadband
    n_scans: int = 6  # scans in a complete cadence (ABACAD)

    def __post_init__(self) -> None:
        if self.match not in ("line", "tile"):
            raise ValueError(f"unknown match {self.match!r}")
        if self.off_scope not in ("adjacent", "all"):
            raise ValueError(f"unknown off_scope {self.off_scope!r}")
        if self.min_on_scans < 1:
            raise ValueError("min_on_scans must be at least 1")


# --------------------------------------------------------------------------- helpers


def _check_columns(tiles: pd.DataFrame) -> None:
    missing = [c for c in TILE_COLUMNS if c not in tiles.columns]
    if missing:
        raise ValueError(f"tile table lacks columns {missing}")


def _empty_events(with_reason: bool) -> pd.DataFrame:
    cols = list(EVENT_COLUMNS) + (["reason"] if with_reason else [])
    return pd.DataFrame({c: pd.Series([], dtype=_EVENT_DTYPES.get(c, "float64")) for c in cols})


_EVENT_DTYPES = {
    "source_file": object, "source_name": object, "cadence_id": object, "tiles": object,
    "cadence_test": object, "reason": object, "method": object, "file_id": "int64", "scan_index": "int64",
    "on_source": bool, "n_tiles": "int64", "tile_first": "int64", "tile_last": "int64",
    "n_on_scans": "int64", "n_off_checked": "int64",
}  # fmt: skip


def _block_key(tiles: pd.DataFrame) -> pd.Series:
    return tiles["tstart_mjd"].round(_TIME_DECIMALS)


def broadband_mask(tiles: pd.DataFrame, cfg: CadenceConfig) -> pd.Series:
    """Flagged tiles of (file, time block) groups that are mostly flagged."""
    key = [tiles["file_id"], _block_key(tiles)]
    n_all = tiles.groupby(key)["flagged"].transform("size")
    n_flag = tiles.groupby(key)["flagged"].transform("sum")
    impulse = (n_flag > cfg.broadband_frac * n_all) & (n_flag >= cfg.broadband_min_tiles)
    return tiles["flagged"].astype(bool) & impulse


def _merge_runs(group: pd.DataFrame, gap_frac: float) -> list[pd.DataFrame]:
    """Split one file/time block's flagged tiles into runs of touching frequency ranges."""
    g = group.sort_values(["freq_min_mhz", "tile"], kind="mergesort")
    width = (g["freq_max_mhz"] - g["freq_min_mhz"]).abs().median()
    lo, hi = g["freq_min_mhz"].to_numpy(), g["freq_max_mhz"].to_numpy()
    reach = np.maximum.accumulate(hi)
    starts = np.r_[True, lo[1:] > reach[:-1] + gap_frac * width]
    run_id = np.cumsum(starts)
    return [g[run_id == r] for r in np.unique(run_id)]


def _event_row(run: pd.DataFrame) -> dict:
    """One event from its tiles; the best tile gives score, p, q, drift and peak."""
    best = run.loc[run["score"].idxmax()] if run["score"].notna().any() else run.iloc[0]
    tiles = np.unique(run["tile"].to_numpy(np.int64))  # sub-band rows of one tile count once
    return {
        "source_file": str(best["source_file"]), "source_name": str(best["source_name"]),
        "file_id": int(best["file_id"]), "cadence_id": str(best["cadence_id"]),
        "scan_index": int(best["scan_index"]), "on_source": bool(best["on_source"]),
        "freq_min_mhz": float(run["freq_min_mhz"].min()),
        "freq_max_mhz": float(run["freq_max_mhz"].max()),
        "tstart_mjd": float(run["tstart_mjd"].min()), "tstop_mjd": float(run["tstop_mjd"].max()),
        "score": float(best["score"]), "z_score": float(best["z"]), "p_value": float(run["p"].min()),
        "q_value": float(run["q"].min()), "drift_hz_s": float(best["drift_hz_s"]),
        "peak_freq_mhz": float(best["peak_freq_mhz"]),
        "t_peak_mjd": 0.5 * float(best["tstart_mjd"] + best["tstop_mjd"]),
        "n_tiles": int(tiles.size), "tile_first": int(tiles[0]), "tile_last": int(tiles[-1]),
        "tiles": ",".join(map(str, tiles)),
        "n_on_scans": -1, "n_off_checked": 0, "cadence_test": "n/a", "method": "tile",
    }  # fmt: skip


def _same_line(ev: dict, row: dict, cfg: "CadenceConfig") -> bool:
    """``row`` (a later time block of the same file) continues ``ev``'s line."""
    gap_s = (row["tstart_mjd"] - ev["tstop_mjd"]) * _SECONDS_PER_DAY
    span_s = (ev["tstop_mjd"] - ev["tstart_mjd"]) * _SECONDS_PER_DAY
    if gap_s < -1e-3 or gap_s > 0.5 * span_s + 1.0:  # not the next time block
        return False
    drift = ev["drift_hz_s"] if np.isfinite(ev["drift_hz_s"]) else 0.0
    dt_s = (row["t_peak_mjd"] - ev["t_peak_mjd"]) * _SECONDS_PER_DAY
    tol = cfg.freq_tol_mhz + cfg.drift_tol_hz_s * abs(dt_s) / 1e6
    if abs(ev["peak_freq_mhz"] + drift * dt_s / 1e6 - row["peak_freq_mhz"]) > tol:
        return False
    d2 = row["drift_hz_s"] if np.isfinite(row["drift_hz_s"]) else 0.0
    return abs(d2 - drift) <= cfg.drift_match_hz_s + 0.25 * abs(drift)


def merge_in_time(events: pd.DataFrame, cfg: "CadenceConfig") -> pd.DataFrame:
    """Join events of one file in consecutive time blocks that lie on one line.

    Long observations outside a cadence (many time blocks per file) would otherwise list a
    persistent line once per block. The merged event keeps the best block's statistics and
    covers the union of bands and times.
    """
    if events.empty:
        return events
    merged: list[dict] = []
    for _, group in events.groupby("file_id", sort=True):
        open_: list[dict] = []
        for row in group.sort_values(["tstart_mjd", "peak_freq_mhz"]).to_dict("records"):
            target = next((ev for ev in reversed(open_) if _same_line(ev, row, cfg)), None)
            if target is None:
                open_.append(row)
                continue
            tiles = sorted(set(map(int, str(target["tiles"]).split(","))) | set(map(int, str(row["tiles"]).split(","))))
            best = row if row["score"] > target["score"] else target
            target.update({k: best[k] for k in ("score", "z_score", "drift_hz_s", "peak_freq_mhz", "t_peak_mjd")})
            target.update(
                freq_min_mhz=min(target["freq_min_mhz"], row["freq_min_mhz"]),
                freq_max_mhz=max(target["freq_max_mhz"], row["freq_max_mhz"]),
                tstop_mjd=row["tstop_mjd"], p_value=min(target["p_value"], row["p_value"]),
                q_value=min(target["q_value"], row["q_value"]), n_tiles=len(tiles), tile_first=tiles[0],
                tile_last=tiles[-1], tiles=",".join(map(str, tiles)))
        merged.extend(open_)
    return pd.DataFrame(merged)


def build_events(flagged_tiles: pd.DataFrame, gap_frac: float) -> pd.DataFrame:
    """Merge flagged tiles into events per file and time block (rule 2)."""
    if flagged_tiles.empty:
        return pd.DataFrame(columns=list(EVENT_COLUMNS) + ["t_peak_mjd"])
    rows = []
    for _, group in flagged_tiles.groupby(["file_id", _block_key(flagged_tiles)], sort=True):
        rows.extend(_event_row(run) for run in _merge_runs(group, gap_frac))
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------- cadence test


def _shows(event: pd.Series, scan_tiles: pd.DataFrame, cfg: CadenceConfig) -> bool:
    """Whether a flagged tile of a scan shows the event carried to that tile's time.

    ``match="line"`` (default): the tile's best track passes within the tolerance of the
    event's line carried with its drift, so that a strong line elsewhere in the same tile
    (another signal, RFI) neither vetoes nor confirms the event. ``match="tile"``: the
    tile's band overlaps the event's carried band (coarser: a tile holds hundreds of channels).
    """
    if scan_tiles.empty:
        return False
    t_mid = 0.5 * (scan_tiles["tstart_mjd"].to_numpy() + scan_tiles["tstop_mjd"].to_numpy())
    dt_s = (t_mid - event["t_peak_mjd"]) * _SECONDS_PER_DAY
    drift = event["drift_hz_s"] if np.isfinite(event["drift_hz_s"]) else 0.0
    shift = drift * dt_s / 1e6
    tol = cfg.freq_tol_mhz + cfg.drift_tol_hz_s * np.abs(dt_s) / 1e6
    if cfg.match == "line" and np.isfinite(event["peak_freq_mhz"]):
        peaks = scan_tiles["peak_freq_mhz"].to_numpy()
        near = np.isfinite(peaks) & (np.abs(peaks - (event["peak_freq_mhz"] + shift)) <= tol)
        if np.isfinite(event["drift_hz_s"]):
            drifts = scan_tiles["drift_hz_s"].to_numpy()
            near &= ~np.isfinite(drifts) | (
                np.abs(drifts - drift) <= cfg.drift_match_hz_s + 0.25 * abs(drift))
        return bool(np.any(near))
    lo = event["freq_min_mhz"] + shift - tol
    hi = event["freq_max_mhz"] + shift + tol
    t_lo = np.minimum(scan_tiles["freq_min_mhz"], scan_tiles["freq_max_mhz"]).to_numpy()
    t_hi = np.maximum(scan_tiles["freq_min_mhz"], scan_tiles["freq_max_mhz"]).to_numpy()
    return bool(np.any((t_lo <= hi) & (t_hi >= lo)))


def _neighbour_offs(scan: int, offs: list[int], scope: str) -> list[int]:
    if scope == "all":
        return offs
    return [s for s in offs if abs(s - scan) == 1]


def _test_event(event: pd.Series, cadence: dict[int, tuple[bool, pd.DataFrame]], cfg) -> tuple:
    """(n_on_scans, n_off_checked, verdict) of one ON event; verdict: 'pass', 'n/a' or a reason.

    The event itself passed the archive-wide threshold; the other scans are asked a
    narrower question (is there anything on this line?), so they use the looser per-row
    levels ``confirm_p`` (ON scans) and ``veto_p`` (OFF scans).
    """
    def rows(on: bool, tl: pd.DataFrame) -> pd.DataFrame:
        if on:
            return tl[tl["flagged"].astype(bool) | (tl["p"] <= cfg.confirm_p)]
        # a weak OFF row vetoes when it could be a weaker copy of the event (RFI), not a noise peak
        copy = (tl["p"] <= cfg.veto_p) & (tl["z"] >= cfg.veto_rel_z * float(event["z_score"]))
        return tl[tl["flagged"].astype(bool) | copy]

    shown = {s: (s == event["scan_index"]) or _shows(event, rows(on, tl), cfg) for s, (on, tl) in cadence.items()}
    ons = [s for s, (on, _) in cadence.items() if on]
    offs = [s for s, (on, _) in cadence.items() if not on]
    n_on = sum(shown[s] for s in ons)
    near_offs = _neighbour_offs(int(event["scan_index"]), offs, cfg.off_scope)
    if len(cadence) >= cfg.n_scans and all(shown.values()):
        return n_on, len(near_offs), "all_scans"
    if any(shown[s] for s in near_offs):
        return n_on, len(near_offs), "in_off"
    if n_on < cfg.min_on_scans:
        return n_on, len(near_offs), "few_on_scans"
    return n_on, len(near_offs), "pass" if near_offs else "n/a"


def _cadence_scans(tiles: pd.DataFrame, usable: pd.Series) -> dict[str, dict[int, tuple]]:
    """cadence_id -> scan_index -> (on_source, rows of that scan that may show an event).

    ``usable``: flagged rows, or rows with a p-value under the looser confirm/veto levels,
    never rows of a broadband impulse.
    """
    out: dict[str, dict[int, tuple]] = {}
    in_cad = tiles[(tiles["cadence_id"] != "") & (tiles["scan_index"] >= 0)]
    for (cad, scan), grp in in_cad.groupby(["cadence_id", "scan_index"], sort=True):
        out.setdefault(cad, {})[int(scan)] = (bool(grp["on_source"].iloc[0]), grp[usable[grp.index]])
    return out


def sort_events(df: pd.DataFrame, with_reason: bool) -> pd.DataFrame:
    cols = list(EVENT_COLUMNS) + (["reason"] if with_reason else [])
    if df.empty:
        return _empty_events(with_reason)
    df = df.sort_values(
        ["score", "source_file", "tstart_mjd", "freq_min_mhz"],
        ascending=[False, True, True, True], kind="mergesort",
    )  # fmt: skip
    return df[cols].astype({c: t for c, t in _EVENT_DTYPES.items() if c in cols}).reset_index(drop=True)


def cadence_test(
    tiles: pd.DataFrame, cfg: CadenceConfig = CadenceConfig()
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Turn a per-tile table into candidates, RFI and rejected events (see module docstring).

    Parameters
    ----------
    tiles : pandas.DataFrame
        One row per tile with :data:`TILE_COLUMNS`.
    cfg : CadenceConfig
        Merging, RFI and cadence rules.

    Returns
    -------
    candidates, rfi, rejected : pandas.DataFrame
        Events with :data:`EVENT_COLUMNS` (rfi and rejected also ``reason``),
        deterministically ordered.
    """
    _check_columns(tiles)
    tiles = tiles.reset_index(drop=True)
    tiles = tiles.assign(cadence_id=tiles["cadence_id"].fillna("").astype(str))
    flagged = tiles["flagged"].astype(bool)
    broadband = broadband_mask(tiles, cfg)
    usable = flagged & ~broadband

    bb = tiles[broadband]
    rfi = [_broadband_event(block) for _, block in bb.groupby(["file_id", _block_key(bb)], sort=True)]
    events = build_events(tiles[usable], cfg.merge_gap_frac)
    weak = tiles["p"].to_numpy() <= max(cfg.confirm_p, cfg.veto_p)
    scans = _cadence_scans(tiles, (usable | weak) & ~broadband)
    candidates, rejected = [], []
    for _, ev in events.iterrows():
        row = ev.to_dict()
        cad = scans.get(row["cadence_id"]) if row["cadence_id"] and row["scan_index"] >= 0 else None
        if cad is None:
            candidates.append(row)
            continue
        if not row["on_source"]:
            rfi.append({**row, "reason": "off_scan"})
            continue
        n_on, n_off, verdict = _test_event(ev, cad, cfg)
        row.update(n_on_scans=n_on, n_off_checked=n_off)
        if verdict in ("pass", "n/a"):
            candidates.append({**row, "cadence_test": verdict})
        elif verdict == "few_on_scans":
            rejected.append({**row, "cadence_test": "fail", "reason": verdict})
        else:
            rfi.append({**row, "cadence_test": "fail", "reason": verdict})
    lone = [c for c in candidates if c["cadence_test"] == "n/a" and not c["cadence_id"]]
    candidates = [c for c in candidates if not (c["cadence_test"] == "n/a" and not c["cadence_id"])]
    candidates += merge_in_time(pd.DataFrame(lone), cfg).to_dict("records") if lone else []
    logger.info("%d candidates, %d rfi, %d rejected", len(candidates), len(rfi), len(rejected))
    return (
        sort_events(pd.DataFrame(candidates), False),
        sort_events(pd.DataFrame(rfi), True),
        sort_events(pd.DataFrame(rejected), True),
    )


def _broadband_event(block: pd.DataFrame) -> dict:
    """One RFI event covering a broadband impulse's flagged tiles."""
    row = _event_row(block)
    return {**row, "reason": "broadband"}
