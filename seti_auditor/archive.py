"""Write a synthetic survey archive (``.fil`` / ``.h5`` files and ``truth.json``) to disk.

The data come from :mod:`seti_auditor.synth`; this module only names, writes and records.
File names follow the Breakthrough Listen pattern without the source name
(``blc{node}_guppi_{imjd}_{sec}_{seq}.rawspec.0000.{ext}``), so nothing but the headers
tells ON from OFF scans. ``truth.json`` holds the configuration, the seed, every file and
the ground truth of every signal and RFI event (schema: :func:`write_synthetic_archive`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import pathlib

from seti_auditor import synth
from seti_auditor.formats import write_bl_h5, write_filterbank

__all__ = ["FORMATS", "TRUTH_NAME", "TRUTH_SCHEMA_VERSION", "file_name",
           "write_synthetic_archive"]

logger = logging.getLogger(__name__)

FORMATS = ("fil", "h5", "mixed")
TRUTH_NAME = "truth.json"
TRUTH_SCHEMA_VERSION = 1
SNR_DEFINITION = (
    "integrated SNR over one scan = sum over integrations and channels of the added signal "
    "power / (sigma * sqrt(n_ints)), sigma = sqrt(2/dof) * local bandpass (noise std of one "
    "pixel); pulsed: expected scan total (on-state power / duty); realised value per scan "
    "in snr_scan")


def file_name(header: dict, *, node: int, seq: int, ext: str) -> str:
    """BL-like file name that does not reveal the source (or whether it is ON or OFF)."""
    imjd = int(header["tstart"])
    sec = int(round((header["tstart"] - imjd) * 86400.0))
    return f"blc{node:02d}_guppi_{imjd}_{sec:05d}_{seq:04d}.rawspec.0000.{ext}"


def _cadence_ext(formats: str, index: int) -> str:
    """File extension for cadence ``index``: alternating fil/h5 when ``formats='mixed'``."""
    if formats == "mixed":
        return "fil" if index % 2 == 0 else "h5"
    return formats


def _write_cadence(out: pathlib.Path, cadence: synth.Cadence, ext: str,
                   seq0: int) -> list[dict]:
    """Write the six files of a cadence; return their ``files`` entries."""
    entries = []
    for s, scan in enumerate(cadence.scans):
        name = file_name(scan.header, node=cadence.index % 100, seq=seq0 + s, ext=ext)
        if ext == "fil":
            write_filterbank(out / name, scan.header, scan.data_TxF)
        else:
            write_bl_h5(out / name, scan.header, scan.data_TxF)
        hdr = scan.header
        entries.append({
            "name": name, "format": ext, "source_name": hdr["source_name"],
            "cadence_id": cadence.cadence_id, "scan_index": s,
            "on_source": s in synth.ON_SCANS, "tstart": hdr["tstart"], "fch1": hdr["fch1"],
            "foff": hdr["foff"], "nchans": hdr["nchans"], "n_ints": scan.data_TxF.shape[0],
            "tsamp": hdr["tsamp"]})
    return entries


def _with_files(records: tuple[dict, ...], names: list[str]) -> list[dict]:
    """Copies of truth records with the file name added to each per-scan entry."""
    return [{**rec, "scans": [{**sc, "file": names[sc["scan_index"]]} for sc in rec["scans"]]}
            for rec in records]


def write_synthetic_archive(out_dir: str | os.PathLike, *, cadences: int = 2, seed: int = 0,
                            config: synth.SynthConfig | None = None,
                            formats: str = "mixed") -> pathlib.Path:
    """Generate a synthetic survey and write it with its ground truth.

    Parameters
    ----------
    out_dir : str or PathLike
        Directory to write into (created if needed).
    cadences : int
        Number of ABACAD cadences (six files each).
    seed : int
        Seed of ``numpy.random.default_rng``; the same seed gives byte-identical files.
    config : SynthConfig, optional
        What to generate; default ``SynthConfig()`` (4 x 4096 channels, 16 integrations,
        three ETI-like signals and four RFI lines plus one impulse per file, per cadence).
    formats : {"mixed", "fil", "h5"}
        File format; ``"mixed"`` writes even cadences as ``.fil`` and odd ones as ``.h5``.

    Returns
    -------
    pathlib.Path
        Path of ``truth.json``, a JSON object with keys

        * ``schema_version``, ``generator``, ``seed``, ``cadences``, ``formats``,
          ``snr_definition``, ``config`` (``dataclasses.asdict`` of the config);
        * ``files``: one entry per file: ``name``, ``format``, ``source_name``,
          ``cadence_id``, ``scan_index``, ``on_source``, ``tstart``, ``fch1``, ``foff``,
          ``nchans``, ``n_ints``, ``tsamp``;
        * ``cadence_list``: per cadence ``cadence_id``, ``target`` (the ON source name) and
          ``files`` (names in scan order);
        * ``signals`` (ETI-like) and ``rfi`` (kinds ``zero_drift``, ``drifting``,
          ``impulse``): ``id``, ``cadence_id``, ``kind`` and parameters (``snr``,
          ``width_hz``, ``drift_hz_s``, ``chirp_hz_s2``, ``profile``, ``pulse_*``,
          ``f_start_mhz`` at ``t0_mjd``, the cadence start; ``level`` for impulses) and
          ``scans``: per file ``scan_index``, ``file``, ``present``, ``freq_min_mhz``,
          ``freq_max_mhz``, ``chan_min``, ``chan_max`` and, for lines, ``t_offset_s``,
          ``f_scan_start_mhz``, ``snr_scan``; for impulses ``int_start``/``int_stop``.
    """
    if formats not in FORMATS:
        raise ValueError(f"formats must be one of {FORMATS}, got {formats!r}")
    if cadences < 1:
        raise ValueError("cadences must be >= 1")
    config = config if config is not None else synth.SynthConfig()
    synth.specs_by_cadence(config.eti, cadences)  # raises on a spec naming a missing cadence
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, cads, signals, rfi = [], [], [], []
    for cadence in synth.iter_cadences(config, seed=seed, cadences=cadences):
        entries = _write_cadence(out, cadence, _cadence_ext(formats, cadence.index),
                                 seq0=synth.N_SCANS * cadence.index)
        names = [e["name"] for e in entries]
        files += entries
        cads.append({"cadence_id": cadence.cadence_id, "target": cadence.target,
                     "files": names})
        signals += _with_files(cadence.signals, names)
        rfi += _with_files(cadence.rfi, names)
        logger.info("wrote cadence %s (%d files)", cadence.cadence_id, len(names))
    truth = {"schema_version": TRUTH_SCHEMA_VERSION, "generator": "seti_auditor.synth",
             "seed": seed, "cadences": cadences, "formats": formats,
             "snr_definition": SNR_DEFINITION, "config": dataclasses.asdict(config),
             "files": files, "cadence_list": cads, "signals": signals, "rfi": rfi}
    path = out / TRUTH_NAME
    path.write_text(json.dumps(truth, indent=1) + "\n")
    return path
