"""Cadence grouping from observation headers (pure compute).

Breakthrough Listen observes in ON/OFF cadences: ABACAD, the target (A) three times,
interleaved with three other pointings. A cadence is found from the headers alone:
scans of one band (overlapping frequency ranges), ordered by start time, in sessions
without long gaps, whose source names follow ``A ? A ? A ?`` with the ``?`` differing
from ``A``. File names are never used. An explicit table can override the grouping for
archives that need it.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re

NO_CADENCE = ""  # cadence id of a file that belongs to no cadence


@dataclasses.dataclass(frozen=True)
class ScanInfo:
    """What the grouping needs to know about one observation."""

    name: str  # file base name (the key of the result)
    source_name: str  # source name from the header
    tstart_mjd: float  # start of the scan (MJD)
    tstop_mjd: float  # end of the scan (MJD)
    fmin_mhz: float  # lowest channel frequency (MHz)
    fmax_mhz: float  # highest channel frequency (MHz)


@dataclasses.dataclass(frozen=True)
class CadenceSlot:
    """Where a scan sits in a cadence."""

    cadence_id: str  # NO_CADENCE when the scan belongs to none
    scan_index: int  # 0-5 within the cadence, -1 when none
    on_source: bool  # an ON (target) scan of its cadence


UNASSIGNED = CadenceSlot(NO_CADENCE, -1, False)


@dataclasses.dataclass(frozen=True)
class GroupingConfig:
    """How scans are grouped into cadences."""

    length: int = 6  # scans per cadence (ABACAD)
    max_gap_s: float = 600.0  # longest pause between consecutive scans of one cadence (s)


def _bands(scans: list[ScanInfo]) -> list[list[ScanInfo]]:
    """Groups of scans whose frequency ranges overlap (transitively)."""
    ordered = sorted(scans, key=lambda s: (s.fmin_mhz, s.fmax_mhz, s.name))
    groups: list[list[ScanInfo]] = []
    top = float("-inf")
    for scan in ordered:
        if not groups or scan.fmin_mhz > top:
            groups.append([])
            top = scan.fmax_mhz
        groups[-1].append(scan)
        top = max(top, scan.fmax_mhz)
    return groups


def _sessions(band: list[ScanInfo], max_gap_s: float) -> list[list[ScanInfo]]:
    """Runs of scans in time order with no pause longer than ``max_gap_s``."""
    ordered = sorted(band, key=lambda s: (s.tstart_mjd, s.name))
    sessions: list[list[ScanInfo]] = []
    for scan in ordered:
        if sessions and (scan.tstart_mjd - sessions[-1][-1].tstop_mjd) * 86400.0 <= max_gap_s:
            sessions[-1].append(scan)
        else:
            sessions.append([scan])
    return sessions


def _is_cadence(window: list[ScanInfo]) -> bool:
    target = window[0].source_name
    on_ok = all(s.source_name == target for s in window[0::2])
    off_ok = all(s.source_name != target for s in window[1::2])
    return bool(target) and on_ok and off_ok


def cadence_id(first: ScanInfo) -> str:
    """A stable, path-safe identifier: target, start MJD and band of the first scan."""
    target = sanitise(first.source_name) or "unnamed"
    return f"{target}_{first.tstart_mjd:.5f}_{first.fmin_mhz:.4f}MHz"


def group_cadences(scans: list[ScanInfo], cfg: GroupingConfig = GroupingConfig()) -> dict[str, CadenceSlot]:
    """Assign every scan a cadence slot (or :data:`UNASSIGNED`), keyed by file name."""
    slots = {scan.name: UNASSIGNED for scan in scans}
    for band in _bands(scans):
        for session in _sessions(band, cfg.max_gap_s):
            i = 0
            while i + cfg.length <= len(session):
                window = session[i : i + cfg.length]
                if _is_cadence(window):
                    cid = cadence_id(window[0])
                    for k, scan in enumerate(window):
                        slots[scan.name] = CadenceSlot(cid, k, k % 2 == 0)
                    i += cfg.length
                else:
                    i += 1
    return slots


def parse_cadence_table(text: str, origin: str = "cadence table") -> dict[str, CadenceSlot]:
    """Read an explicit cadence table (CSV with ``file,cadence_id,scan_index,on_source``).

    ``file`` is the input base name. Raises ``ValueError`` naming the origin and the row
    for a malformed table.
    """
    reader = csv.DictReader(io.StringIO(text))
    needed = {"file", "cadence_id", "scan_index", "on_source"}
    if reader.fieldnames is None or not needed <= set(reader.fieldnames):
        raise ValueError(f"{origin}: needs the columns {sorted(needed)}, has {reader.fieldnames}")
    table: dict[str, CadenceSlot] = {}
    for row_no, row in enumerate(reader, start=2):
        try:
            on = row["on_source"].strip().lower()
            if on not in {"true", "false", "1", "0", "on", "off"}:
                raise ValueError(f"on_source {row['on_source']!r} is not a boolean")
            table[row["file"].strip()] = CadenceSlot(
                sanitise(row["cadence_id"].strip()), int(row["scan_index"]), on in {"true", "1", "on"}
            )
        except (ValueError, KeyError, AttributeError) as exc:
            raise ValueError(f"{origin}: line {row_no}: {exc}") from None
    return table


_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]+")


def sanitise(name: str, max_len: int = 64) -> str:
    """A header string made safe for paths, Zarr keys and Prefect artifact keys."""
    cleaned = _UNSAFE.sub("_", str(name)).strip("._")
    return cleaned[:max_len]
