"""Matching a catalog (or tiles) against the ground truth of a synthetic archive (pure compute).

The truth is the parsed ``truth.json`` that :func:`seti_auditor.archive.write_synthetic_archive`
writes; catalogs and tiles come in as pandas DataFrames read by the caller. Nothing here reads
or writes files. Used by ``benchmarks/detection.py`` and the notebooks.

Rules (the detection benchmark's, see its docstring):

* a catalog candidate *detects* an ETI signal in one ON scan when it is in that scan's file
  and its ``[freq_min_mhz, freq_max_mhz]`` overlaps the signal's band in that scan widened
  by the tolerance on both sides;
* recall per signal = detected ON scans / ON scans; "any" recall = detected in at least one;
* a *false candidate* matches no ETI signal; an RFI event has *leaked* when a false
  candidate of one of its files overlaps its band in that file (no tolerance);
* a candidate that matches a signal and also overlaps an RFI line counts as "shared".
"""

from __future__ import annotations

import math
from collections import defaultdict

import numpy as np
from scipy.special import ndtr

from seti_auditor import synth

__all__ = ["SLOW_FAST_SPLIT_HZ_S", "TARGETS", "TILE_KINDS", "candidate_labels", "ceiling", "clairvoyant", "evaluate",
           "overlap", "summarise", "tile_labels"]

TARGETS = {"recall_snr_ge_25": 0.95, "recall_snr_12_16": 0.8, "false_per_gb": 1.0, "rfi_leaked": 0}
SLOW_FAST_SPLIT_HZ_S = 1.0  # |drift| below: "slow", above: "fast"
TILE_KINDS = ("signal", "rfi", "impulse", "noise")  # tile labels, in order of precedence


def overlap(lo1, hi1, lo2, hi2, tol=0.0):
    """Whether intervals ``[lo1, hi1]`` and ``[lo2, hi2]`` (either order of ends) overlap within ``tol``."""
    return (np.minimum(lo1, hi1) <= np.maximum(lo2, hi2) + tol) & (np.maximum(lo1, hi1) >= np.minimum(lo2, hi2) - tol)


def _columns(df) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """File names and frequency bounds of a frame of candidates (empty arrays for no rows)."""
    if len(df) == 0:
        return np.zeros(0, str), np.zeros(0), np.zeros(0)
    return (df["source_file"].astype(str).to_numpy(), df["freq_min_mhz"].to_numpy(float),
            df["freq_max_mhz"].to_numpy(float))


def _on_scans(sig: dict) -> list[dict]:
    return [sc for sc in sig["scans"] if sc["present"]]


def candidate_labels(truth: dict, candidates, tol_mhz: float) -> np.ndarray:
    """Per candidate: ``"signal"`` (detects an ETI signal), ``"rfi"`` (a false candidate on an
    RFI event of its file) or ``"noise"`` (a false candidate on nothing known), by the rules above."""
    c_file, c_lo, c_hi = _columns(candidates)
    eti = np.zeros(c_file.size, bool)
    for sig in truth["signals"]:
        for sc in _on_scans(sig):
            eti |= (c_file == sc["file"]) & overlap(c_lo, c_hi, sc["freq_min_mhz"], sc["freq_max_mhz"], tol_mhz)
    rfi = np.zeros(c_file.size, bool)
    for ev in truth["rfi"]:
        for sc in ev["scans"]:
            if sc.get("present", True):
                rfi |= (c_file == sc["file"]) & overlap(c_lo, c_hi, sc["freq_min_mhz"], sc["freq_max_mhz"])
    return np.where(eti, "signal", np.where(rfi, "rfi", "noise")).astype(object)


def tile_labels(truth: dict, source_file, freq_min_mhz, freq_max_mhz, time_start=None,
                tile_time: int | None = None) -> np.ndarray:
    """What each tile holds by the truth: one of :data:`TILE_KINDS` (the first that applies).

    ``signal``: an ETI signal present in that file overlaps the tile's band; ``rfi``: an RFI
    line (zero-drift or drifting); ``impulse``: a broadband impulse (also in time when
    ``time_start`` and ``tile_time`` give the tile's integrations); ``noise``: nothing.
    """
    files = np.asarray(source_file).astype(str)
    lo, hi = np.asarray(freq_min_mhz, float), np.asarray(freq_max_mhz, float)
    hit = {kind: np.zeros(files.size, bool) for kind in TILE_KINDS[:3]}
    for kind, records in (("signal", truth["signals"]), ("rfi", truth["rfi"])):
        for rec in records:
            label = "impulse" if rec["kind"] == "impulse" else kind
            for sc in rec["scans"]:
                if not sc.get("present", True):
                    continue
                m = (files == sc["file"]) & overlap(lo, hi, sc["freq_min_mhz"], sc["freq_max_mhz"])
                if label == "impulse" and time_start is not None and tile_time is not None:
                    t0 = np.asarray(time_start, int)
                    m &= (t0 < sc["int_stop"]) & (t0 + tile_time > sc["int_start"])
                hit[label] |= m
    out = np.full(files.size, "noise", dtype=object)
    for kind in reversed(TILE_KINDS[:3]):  # later assignments win: signal has precedence
        out[hit[kind]] = kind
    return out


def evaluate(truth: dict, cat: dict, tiles, tol_mhz: float, total_bytes: int) -> dict:
    """Recall, false candidates and RFI leaks of one catalog against the truth.

    Parameters
    ----------
    truth : dict
        Parsed ``truth.json``.
    cat : dict
        ``{"candidates", "rfi", "rejected"}`` DataFrames of one catalog version.
    tiles : DataFrame or None
        Per-tile scores (:func:`seti_auditor.score_archive.tile_table`) for the diagnosis of
        missed scans; None skips it.
    tol_mhz : float
        Frequency tolerance of a match (MHz).
    total_bytes : int
        Size of the archive's files, for the false-alarm rate per GB (1e9 bytes).
    """
    cands = cat["candidates"]
    n_c = len(cands)
    c_file, c_lo, c_hi = _columns(cands)
    matched_eti = np.zeros(n_c, bool)

    per_signal = []
    for sig in truth["signals"]:
        on = _on_scans(sig)
        hits = 0
        diag = []
        for sc in on:
            m = (c_file == sc["file"]) & overlap(c_lo, c_hi, sc["freq_min_mhz"], sc["freq_max_mhz"], tol_mhz)
            matched_eti |= m
            hits += bool(m.any())
            if not m.any():
                diag.append(_miss_diag(sig, sc, tiles, cat, tol_mhz))
        per_signal.append({"id": sig["id"], "snr": sig["snr"], "kind": sig["kind"],
                           "drift": "fast" if abs(sig["drift_hz_s"]) > SLOW_FAST_SPLIT_HZ_S else "slow",
                           "drift_hz_s": sig["drift_hz_s"], "n_on": len(on), "hits": hits, "misses": diag})

    # RFI: a false candidate overlapping an event in one of its files
    false_idx = np.flatnonzero(~matched_eti)
    leaked, shared = [], 0
    rfi_hit_cand = np.zeros(n_c, bool)
    for ev in truth["rfi"]:
        leak_rows, shared_here = set(), False
        for sc in ev["scans"]:
            if not sc.get("present", True):
                continue
            m = (c_file == sc["file"]) & overlap(c_lo, c_hi, sc["freq_min_mhz"], sc["freq_max_mhz"])
            leak_rows.update(int(i) for i in np.flatnonzero(m & ~matched_eti))
            shared_here |= bool((m & matched_eti).any()) and ev["kind"] != "impulse"
        shared += shared_here
        if leak_rows:
            rfi_hit_cand[list(leak_rows)] = True
            leaked.append({"id": ev["id"], "kind": ev["kind"], "n_candidates": len(leak_rows),
                           **({"drift_hz_s": ev.get("drift_hz_s"), "snr": ev.get("snr")}
                              if ev["kind"] != "impulse" else {"level": ev.get("level")})})
    false_rows = [_cand_row(cands.iloc[i], "rfi" if rfi_hit_cand[i] else "noise?") for i in false_idx]
    gb = total_bytes / 1e9
    return {"signals": per_signal, "n_candidates": n_c, "n_true_candidates": int(matched_eti.sum()),
            "n_false": int(false_idx.size), "false_per_gb": false_idx.size / gb, "rfi_leaked": leaked,
            "n_rfi_events": len(truth["rfi"]), "n_rfi_shared_tile": shared, "false_candidates": false_rows,
            "n_catalog_rfi": len(cat["rfi"]), "n_catalog_rejected": len(cat["rejected"])}


def _cand_row(row, why: str) -> dict:
    keys = ("source_file", "scan_index", "freq_min_mhz", "freq_max_mhz", "score", "z_score", "q_value",
            "drift_hz_s", "n_on_scans", "n_tiles", "cadence_test")
    return {**{k: (row[k].item() if hasattr(row[k], "item") else row[k]) for k in keys if k in row}, "cause": why}


def _miss_diag(sig: dict, sc: dict, tiles, cat: dict, tol_mhz: float) -> dict:
    """Why one ON scan of a signal was missed: its best tile, and where its event went."""
    d = {"scan": sc["scan_index"], "snr_scan": round(sc.get("snr_scan", float("nan")), 1)}
    if tiles is not None:
        t = tiles[(tiles["source_file"].astype(str) == sc["file"])
                  & overlap(tiles["freq_min_mhz"].to_numpy(), tiles["freq_max_mhz"].to_numpy(),
                            sc["freq_min_mhz"], sc["freq_max_mhz"])]
        if len(t):
            best = t.loc[t["score"].idxmax()]
            d.update(n_tiles=len(t), best_score=round(float(best["score"]), 3), best_z=round(float(best["z"]), 2),
                     best_p=float(best["p"]), best_q=float(best["q"]), flagged=int(t["flagged"].sum()),
                     drift_found_hz_s=round(float(best["drift_hz_s"]), 3))
    for name in ("rfi", "rejected"):
        df = cat[name]
        if len(df):
            m = (df["source_file"].astype(str).to_numpy() == sc["file"]) & overlap(
                df["freq_min_mhz"].to_numpy(float), df["freq_max_mhz"].to_numpy(float),
                sc["freq_min_mhz"], sc["freq_max_mhz"], tol_mhz)
            if m.any():
                r = df[m].iloc[0]
                d[f"in_{name}"] = {"reason": str(r["reason"]), "n_on_scans": int(r["n_on_scans"]),
                                   "n_tiles": int(r["n_tiles"]), "score": round(float(r["score"]), 3)}
    return d


def _recall(per_scan):
    """A group's recall: ``per_scan(signal)`` gives each ON scan's detection (1/0, or a probability)."""
    def rec(group: list[dict]) -> dict:
        scans = [per_scan(s) for s in group]
        scan = sum(sum(v) for v in scans) / max(1, sum(len(v) for v in scans))
        anyr = sum(max(v, default=0.0) for v in scans) / max(1, len(group))
        return {"n": len(group), "recall_scan": round(scan, 3), "recall_any": round(anyr, 3)}
    return rec


def _recall_by(sigs: list[dict], rec) -> dict:
    """``rec`` of the signals grouped by SNR, kind and drift."""
    by = {}
    for key in ("snr", "kind", "drift"):
        groups = defaultdict(list)
        for s in sigs:
            groups[s[key]].append(s)
        by[key] = {str(int(k) if key == "snr" else k): rec(v) for k, v in sorted(groups.items())}
    return by


def summarise(ev: dict) -> dict:
    """Recall tables (overall, by SNR, kind and drift) and the target checks of :func:`evaluate`'s result."""
    sigs = ev["signals"]
    rec = _recall(lambda s: [1.0] * s["hits"] + [0.0] * (s["n_on"] - s["hits"]))
    by = _recall_by(sigs, rec)
    hi = [s for s in sigs if s["snr"] >= 25]
    mid = [s for s in sigs if 12 <= s["snr"] <= 16]
    r_hi, r_mid = rec(hi)["recall_scan"], rec(mid)["recall_scan"]
    checks = {"recall_snr_ge_25": [r_hi, r_hi >= TARGETS["recall_snr_ge_25"]],
              "recall_snr_12_16": [r_mid, r_mid >= TARGETS["recall_snr_12_16"]],
              "false_per_gb": [round(ev["false_per_gb"], 2), ev["false_per_gb"] <= TARGETS["false_per_gb"]],
              "rfi_leaked": [len(ev["rfi_leaked"]), not ev["rfi_leaked"]]}
    return {"overall": rec(sigs), "by": by, "targets": checks}


# --------------------------------------------------------------------------- the clairvoyant ceiling


def clairvoyant(truth: dict, pulses_known: bool = True) -> list[dict]:
    """Per ETI signal: the clairvoyant matched filter's S/N in each ON scan and in its ON scans together.

    :func:`seti_auditor.synth.matched_snr` of the signal's exact track, profile and pulses in
    each ON scan (``rho_scans``); the ON scans' noise is independent, so the best joint S/N is
    ``rho_joint = sqrt(sum rho_s^2)``. No detector does better on average: any statistic of
    the data is at most as sensitive as the likelihood ratio of the known signal.
    ``pulses_known=False``: the best a search for continuous tracks can do (pulse timing not modelled).
    """
    cfg = dict(truth["config"]["obs"])
    obs = synth.ObsConfig(**{**cfg, "gap_s": tuple(cfg["gap_s"])})
    fch1 = {f["name"]: float(f["fch1"]) for f in truth["files"]}
    out = []
    for sig in truth["signals"]:
        pulse = {k: sig[k] for k in ("pulse_period_s", "pulse_duty", "pulse_phase_s") if sig.get(k) is not None}
        spec = synth.SignalSpec(kind=sig["kind"], snr=float(sig["snr"]), drift_hz_s=float(sig["drift_hz_s"]),
                                chirp_hz_s2=float(sig["chirp_hz_s2"]), width_hz=float(sig["width_hz"]),
                                profile=sig["profile"], f_start_mhz=float(sig["f_start_mhz"]), **pulse)
        rho = [synth.matched_snr(spec, float(sc["t_offset_s"]), obs, fch1[sc["file"]], pulses_known)
               for sc in _on_scans(sig)]
        out.append({"id": sig["id"], "snr": sig["snr"], "kind": sig["kind"],
                    "drift": "fast" if abs(sig["drift_hz_s"]) > SLOW_FAST_SPLIT_HZ_S else "slow",
                    "rho_scans": rho, "rho_joint": math.sqrt(sum(r * r for r in rho))})
    return out


def ceiling(clair: list[dict], threshold: float, slow_threshold: float | None = None) -> dict:
    """Expected recall of the clairvoyant matched filter held to a blind search's threshold.

    A blind search must test every track it cannot rule out, so it needs a threshold ``u``
    (in sigma) high enough for its false-alarm target; the joint search's is the catalog's
    ``line_search.joint.threshold`` (Bonferroni over the run's trials). The clairvoyant
    statistic of a signal is N(rho, 1): held to ``u``, it reports the signal with probability
    ``Phi(rho - u)``, jointly (``rho_joint``, every ON scan) or, if better, in one scan alone
    (``rho_s``). ``slow_threshold``: the slow joint search's (``line_search.joint_slow.threshold``), for the
    slow signals, when it ran. Returns the expected per-ON-scan recall in :func:`summarise`'s shape
    (``recall_any``: the best scan's probability) and the two recall targets' values.
    """
    sigs = []
    for c in clair:
        u = slow_threshold if slow_threshold is not None and c["drift"] == "slow" else threshold
        p_joint = float(ndtr(c["rho_joint"] - u))
        sigs.append({**c, "p_scans": [max(p_joint, float(ndtr(r - u))) for r in c["rho_scans"]]})

    rec = _recall(lambda s: s["p_scans"])
    return {"threshold": float(threshold), "slow_threshold": None if slow_threshold is None else float(slow_threshold),
            "overall": rec(sigs), "by": _recall_by(sigs, rec),
            "recall_snr_ge_25": rec([s for s in sigs if s["snr"] >= 25])["recall_scan"],
            "recall_snr_12_16": rec([s for s in sigs if 12 <= s["snr"] <= 16])["recall_scan"],
            "signals": [{k: s[k] for k in ("id", "snr", "kind", "drift", "rho_scans", "rho_joint", "p_scans")}
                        for s in sigs]}
