"""Benchmark: detection quality and end-to-end throughput on a generated archive.

What it does, in one run:

1. **Archive.** ``seti_auditor.archive.write_synthetic_archive`` writes ``--cadences`` ABACAD
   cadences (mixed ``.fil`` / ``.h5``) with ``nfpc x n_coarse`` channels per file and, spread
   round-robin over the cadences, the ETI grid of :class:`seti_auditor.synth.EtiGrid`:
   SNR 8, 12, 16, 25, 40, 80 x kinds linear, chirped, pulsed x |drift| 0.2 (slow) and
   2.0 Hz/s (fast) = 36 signals, each in the three ON scans of its cadence, plus the
   default RFI (zero-drift and drifting lines in all six scans, one broadband impulse per
   file). The ground truth is ``truth.json``.
2. **Ours.** ``seti-auditor run ARCHIVE --workdir W`` in a subprocess (the real CLI, all its
   defaults: line score, Benjamini-Hochberg at q = 0.01 with the Gumbel null, the CLI's
   ``--min-on-scans``, the cadence line search unless ``--no-line-search``), wall-timed; this
   includes Python start-up, the imports, the CLI's Prefect API (a temporary server it starts at
   once) and the local Dask cluster, which are timed separately by a subprocess that does the
   same and runs an empty flow (``benchmarks/common.py``, reported as "start-up").
3. **Article baseline.** ``seti-auditor score --workdir W --score mse --threshold article``
   on the same tiles and the same trained model (MSE score, flag at mu + 5 sigma of the
   held-out noise scores). The catalog version id is the model version, so this run replaces
   the catalog written by step 2: that one is read first.
4. **Scoring only**: the score flow's own time is read from Prefect's log lines of steps 2
   and 3. Unless ``--no-rescore`` or ``--quick``, ``seti-auditor score --workdir W`` with our
   defaults is also run again and wall-timed, like the baseline's (its catalog must equal
   step 2's; the benchmark says whether it does).
5. **Bare read.** Every file read once more by plain code (``np.fromfile`` after the sigproc
   header for ``.fil``; ``h5py`` ``data[...]`` with ``hdf5plugin`` for ``.h5``), best of two,
   for the throughput ratio. All reads are from the page cache (the files were just written).

Matching with ``truth.json`` (``--tol-hz``, default 1000 Hz; the rules live in
:mod:`seti_auditor.truthmatch`, shared with ``notebooks/03_review_candidates.ipynb``):

* a catalog candidate *detects* an ETI signal in one ON scan when it is in that scan's file
  and its ``[freq_min_mhz, freq_max_mhz]`` overlaps the signal's band in that scan
  (``scans[].freq_min_mhz/freq_max_mhz``, the whole track over the scan) widened by the
  tolerance on both sides;
* recall per signal = detected ON scans / 3; "any" recall = the signal is detected in at
  least one ON scan. Both are broken down by SNR, kind and drift (slow 0.2, fast 2.0 Hz/s);
* a *false candidate* matches no ETI signal; rate per GB = false candidates / (sum of the
  input file sizes / 1e9 bytes);
* an RFI event (``zero_drift``, ``drifting`` line or broadband ``impulse``) has *leaked* when
  a false candidate of one of its files overlaps its band in that file (no tolerance: the
  band of an impulse is 30-100 % of a file, so a noise false candidate in that file would be
  counted against it too). A candidate that matches an ETI signal and also overlaps an RFI
  line (they share a tile; lines are placed >= 100 Hz apart) is counted as "shared", not
  as a leak.

**Ceiling** (``truthmatch.clairvoyant`` / ``truthmatch.ceiling``): what the data allow at our
false-alarm level. For every signal and ON scan, the S/N ``rho`` of the clairvoyant matched
filter (its exact track, profile and, in the first figure, pulse timing known: no search, no
trials; the second figure: a continuous track, as our searches assume), computed from the
generator's own weights; its ON scans together give ``sqrt(sum rho^2)``. Held to the joint
search's threshold ``u`` (the catalog's ``line_search.joint.threshold``: Bonferroni over the
run's trials), such a filter reports a signal with probability ``Phi(rho - u)``; the column
gives the expected per-ON-scan recall. A fast (2 Hz/s) line crosses ~13 channels per
integration, so its ``rho`` is ``SNR / sqrt(13)`` per scan: SNR 12-16 lines sit at ``u`` even
for the clairvoyant filter.

Targets of the issue (checked for both scorers, per-ON-scan recall): recall >= 0.95 for
SNR >= 25, >= 0.8 for SNR 12-16, at most 1 false candidate per GB, no RFI event leaked.
With a few hundred MB of data, one false candidate is already more than 1 per GB: the
false-alarm target needs ``--cadences`` large enough for >= 1 GB to be resolved.

Throughput: MB/s = 10**6 bytes of filterbank files per second, end to end (wall time of
``seti-auditor run``, which also trains the model) and for the bare read; their ratio says
how many times longer the pipeline takes than just reading the bytes.

Usage::

    python benchmarks/detection.py            # 8 cadences x 65536 channels (178 MB), ~5 min on 2 cores
    python benchmarks/detection.py --quick    # 3 cadences x 32768 channels (35 MB), ~2.5 min
    python benchmarks/detection.py --json     # one JSON line with every figure
    python benchmarks/detection.py --cadences 48 --workdir /scratch --keep   # ~1 GB, ~15 min

Everything is written under a temporary directory (``--workdir`` chooses its parent; never
the repository) and removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
# run as a script, benchmarks/ is sys.path[0] and its vae.py would shadow the vae package
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != REPO / "benchmarks"]


# the start-up probe and the flow times, shared with overhead.py (this folder is not on sys.path)
bench = types.SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().with_name("common.py"))))

# the matching rules live in the library (pure, shared with the notebooks)
from seti_auditor.truthmatch import ceiling, clairvoyant, evaluate, summarise  # noqa: E402


# --------------------------------------------------------------------------- archive


def make_archive(out: Path, cadences: int, seed: int, nfpc: int, n_coarse: int) -> Path:
    """Write the benchmark archive; returns the path of truth.json."""
    from seti_auditor.archive import write_synthetic_archive
    from seti_auditor.synth import EtiGrid, ObsConfig, SynthConfig, signal_grid

    obs = ObsConfig(nfpc=nfpc, n_coarse=n_coarse)
    grid = EtiGrid(snrs=(8.0, 12.0, 16.0, 25.0, 40.0, 80.0), kinds=("linear", "chirped", "pulsed"),
                   drifts_hz_s=(0.2, 2.0))
    config = SynthConfig(obs=obs, eti=signal_grid(grid, cadences))
    return write_synthetic_archive(out, cadences=cadences, seed=seed, config=config, formats="mixed")


def bare_read(paths: list[Path]) -> float:
    """Seconds to read every file's data into memory (and touch it) with plain numpy / h5py."""
    import h5py
    import hdf5plugin  # noqa: F401  (registers the bitshuffle filter)

    t0 = time.perf_counter()
    total = 0.0
    for p in paths:
        if p.suffix == ".fil":  # float32 (the generator writes nbits 32)
            data = np.fromfile(p, dtype="<f4", offset=_sigproc_header_len(p))
        else:
            with h5py.File(p, "r") as f:
                data = f["data"][...]
        total += float(data.sum(dtype=np.float64))
    return time.perf_counter() - t0


def _sigproc_header_len(path: Path) -> int:
    """Bytes up to and including the HEADER_END keyword."""
    with open(path, "rb") as f:
        head = f.read(1 << 16)
    return head.index(b"HEADER_END") + len(b"HEADER_END")


# --------------------------------------------------------------------------- running the CLI


def cli_command() -> list[str]:
    exe = Path(sys.executable).with_name("seti-auditor")
    if exe.exists():
        return [str(exe)]
    found = shutil.which("seti-auditor")
    return [found] if found else [sys.executable, "-m", "flows.cli"]


def run_cli(args: list[str], env: dict, log: Path) -> tuple[float, str]:
    """Run ``seti-auditor ARGS``; returns (wall seconds, output). Output goes to ``log`` as well."""
    return bench.run_logged(cli_command() + args, env, log.parent, log, f"seti-auditor {args[0]}")


# --------------------------------------------------------------------------- catalogs


def read_catalog(workdir: Path) -> dict:
    """Candidates, RFI and rejected events of the current catalog as DataFrames."""
    from seti_auditor.catalog import open_catalog

    out = {}
    for name, group in (("candidates", None), ("rfi", "rfi"), ("rejected", "rejected")):
        ds = open_catalog(workdir, group=group)
        df = ds.to_dataframe().reset_index(drop=True) if ds.sizes.get("candidate", 0) else ds.to_dataframe()
        for c in df.columns:
            if df[c].dtype.kind == "T":
                df[c] = df[c].astype(object)
        out[name] = df
    return out


def read_joint_threshold(workdir: Path, name: str = "joint") -> float | None:
    """A joint search's threshold (sigma) in the current catalog (``joint``: the fast one, ``joint_slow``), None
    when it did not run."""
    from seti_auditor.catalog import open_catalog

    joint = (open_catalog(workdir).attrs.get("line_search") or {}).get(name) or {}
    return float(joint["threshold"]) if "threshold" in joint else None


def read_tiles(workdir: Path):
    """Per-tile scores of the last score run (score_archive.tile_table)."""
    from seti_auditor.score_archive import tile_table

    try:
        return tile_table(str(workdir))
    except Exception as exc:  # diagnostics only: the benchmark goes on without them
        print(f"[detection] no per-tile diagnostics: {type(exc).__name__}: {exc}", file=sys.stderr)
        return None


# --------------------------------------------------------------------------- report


def print_report(res: dict) -> None:
    a = res["archive"]
    print(f"archive: {a['cadences']} cadences x 6 files, {a['nchans']} channels x {a['n_ints']} integrations per file, "
          f"{a['n_files']} files, {a['total_mb']:.1f} MB; {a['n_signals']} ETI signals, {a['n_rfi']} RFI events "
          f"(seed {a['seed']}; generated in {a['generate_s']:.1f} s)")
    print(f"match tolerance {res['tol_hz']:.0f} Hz; recall = detected ON scans / ON scans ('any' = >= 1 ON scan)\n")
    names = ("ours", "baseline")
    s = {n: res[n]["summary"] for n in names}
    ceil = res.get("ceiling")
    head = f"{'':24s}{'ours (line, BH q=0.01)':>26s}{'baseline (mse, mu+5sd)':>26s}"
    print(head + (f"{'ceiling: clairvoyant / track':>31s}" if ceil else ""))
    print("-" * (len(head) + (31 if ceil else 0)))

    def line(label, fn, extra=""):
        print(f"{label:24s}" + "".join(f"{fn(n):>26s}" for n in names) + (f"{extra:>31s}" if extra else ""))

    fmt = lambda r: f"{r['recall_scan']:.2f} / {r['recall_any']:.2f}  (n={r['n']})"  # noqa: E731

    def cfmt(*keys):  # expected per-ON-scan recall of the two ceilings
        if not ceil:
            return ""
        pick = lambda c: c[keys[0]] if len(keys) == 1 else c["by"][keys[0]][keys[1]]  # noqa: E731
        return f"{pick(ceil['clairvoyant'])['recall_scan']:.2f} / {pick(ceil['track'])['recall_scan']:.2f}"

    line("recall all  scan/any", lambda n: fmt(s[n]["overall"]), cfmt("overall"))
    for key, label in (("snr", "SNR"), ("kind", ""), ("drift", "drift")):
        for k in s["ours"]["by"][key]:
            line(f"  {label} {k}".rstrip(), lambda n: fmt(s[n]["by"][key][k]), cfmt(key, k))
    line("candidates (true/all)", lambda n: f"{res[n]['eval']['n_true_candidates']}/{res[n]['eval']['n_candidates']}")
    line("false candidates", lambda n: f"{res[n]['eval']['n_false']}")
    line("false per GB", lambda n: f"{res[n]['eval']['false_per_gb']:.2f}")
    line("RFI events leaked", lambda n: f"{len(res[n]['eval']['rfi_leaked'])}/{res[n]['eval']['n_rfi_events']}")
    line("RFI line shares ETI tile", lambda n: f"{res[n]['eval']['n_rfi_shared_tile']}")
    line("catalog RFI / rejected",
         lambda n: f"{res[n]['eval']['n_catalog_rfi']} / {res[n]['eval']['n_catalog_rejected']}")
    secs = lambda v: "-" if v is None else f"{v:.1f}"  # noqa: E731
    line("score flow (s, Prefect)", lambda n: secs(res[n].get("score_flow_s")))
    line("`score` CLI wall (s)", lambda n: secs(res[n].get("score_wall_s")))
    print("\ntargets (per-ON-scan recall)   ours               baseline")
    for key, goal in (("recall_snr_ge_25", ">= 0.95"), ("recall_snr_12_16", ">= 0.80"),
                      ("false_per_gb", "<= 1"), ("rfi_leaked", "== 0")):
        cells = [f"{s[n]['targets'][key][0]} {'PASS' if s[n]['targets'][key][1] else 'FAIL'}" for n in names]
        print(f"  {key:17s} {goal:8s}   {cells[0]:18s} {cells[1]}")
    if ceil:
        slow = f" (slow signals: the slow search's, {ceil['slow_threshold']:.2f})" if ceil.get("slow_threshold") else ""
        print(f"\nceiling at the joint search's threshold u = {ceil['threshold']:.2f} sigma{slow} (its false-alarm level): "
              f"the expected per-ON-scan recall Phi(rho - u) of a clairvoyant matched filter, rho = the optimal S/N\n"
              f"of each signal's exact track in its ON scans (truthmatch.ceiling): SNR 12-16 "
              f"{ceil['clairvoyant']['recall_snr_12_16']:.2f} with the pulse timing known, "
              f"{ceil['track']['recall_snr_12_16']:.2f} for continuous tracks (our searches'); "
              f"SNR >= 25 {ceil['clairvoyant']['recall_snr_ge_25']:.2f} / {ceil['track']['recall_snr_ge_25']:.2f}")

    t = res["throughput"]
    print(f"\nthroughput: seti-auditor run {t['run_wall_s']:.1f} s for {a['total_mb']:.1f} MB = "
          f"{t['run_mb_s']:.2f} MB/s end to end (ingest + train + score + catalog + plots)")
    if t.get("stages"):
        print("  flow runs (Prefect log): " + ", ".join(f"{k} {v:.1f} s" for k, v in t["stages"].items()))
    st = t.get("startup", {})
    if "imports_s" in st:
        print(f"  start-up inside that time (separate measurement): {st['wall_s']:.1f} s "
              f"(python + imports {st['imports_s']:.1f} s, waiting for the Prefect API {st.get('api_wait_s', 0.0):.1f} s, "
              f"Dask cluster {st['dask_cluster_s']:.1f} s, "
              f"empty Prefect flow {st['empty_flow_s']:.1f} s)")
    print(f"  bare read of the same files (np.fromfile / h5py, page cache): {t['bare_read_s']:.3f} s = "
          f"{t['bare_mb_s']:.0f} MB/s; end to end is {t['ratio']:.0f}x the bare read")
    print(f"  score flow only (Prefect log: from the flow's first to its last line): ours "
          f"{res['ours']['score_flow_s'] or float('nan'):.1f} s in the run, baseline "
          f"{res['baseline']['score_flow_s'] or float('nan'):.1f} s")
    if res["ours"].get("score_wall_s") is not None:
        same = res.get("rescore_same_catalog")
        print(f"  `seti-auditor score` wall, start-up included: ours {res['ours']['score_wall_s']:.1f} s "
              f"(flow {res['ours'].get('rescore_flow_s') or float('nan'):.1f} s), baseline "
              f"{res['baseline']['score_wall_s']:.1f} s; ours rescored = the run's catalog: {same}")

    for n in names:  # details for ours; the baseline's (also in --json) in one line each
        ev, detail, first = res[n]["eval"], n == "ours", (15 if n == "ours" else 5)
        missed = [x for x in ev["signals"] if x["hits"] < x["n_on"]]
        if missed:
            print(f"\n{n}: signals not detected in every ON scan ({len(missed)})"
                  + ("; per missed ON scan: its best tile and where its event went" if detail else ""))
            for x in sorted(missed, key=lambda x: (-x["snr"], x["kind"])):
                print(f"  {x['id']:12s} snr {x['snr']:4.0f} {x['kind']:8s} drift {x['drift_hz_s']:+.1f} Hz/s "
                      f"hits {x['hits']}/{x['n_on']}")
                for d in x["misses"] if detail else ():
                    print("      " + json.dumps(d, default=_json_default))
        if ev["false_candidates"]:
            print(f"\n{n}: false candidates ({len(ev['false_candidates'])}, first {first})")
            for r in ev["false_candidates"][:first]:
                print("  " + json.dumps(r, default=_json_default))
        if ev["rfi_leaked"]:
            print(f"\n{n}: RFI events leaked ({len(ev['rfi_leaked'])}, first {first})")
            for r in ev["rfi_leaked"][:first]:
                print("  " + json.dumps(r, default=_json_default))


def _clean(o):
    """NaN/inf -> None (strict JSON), numpy scalars -> Python, recursively."""
    if isinstance(o, dict):
        return {str(k): _clean(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_clean(v) for v in o]
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        o = o.item()
    if isinstance(o, float) and not np.isfinite(o):
        return None
    return o


def _json_default(o):
    if isinstance(o, (np.integer, np.floating, np.bool_)):
        return o.item()
    return str(o)


# --------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="3 cadences x 32768 channels, no timed rescore (~2.5 min)")
    p.add_argument("--cadences", type=int, help="ABACAD cadences (default 8; --quick 3)")
    p.add_argument("--nfpc", type=int, help="fine channels per coarse channel (default 16384; --quick 8192)")
    p.add_argument("--n-coarse", type=int, default=4, help="coarse channels per file (default 4)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--line-search", action=argparse.BooleanOptionalAction, default=True,
                   help="ours with the cadence line search, the CLI's default (--no-line-search: the tile-level test alone)")
    p.add_argument("--tol-hz", type=float, default=1000.0, help="frequency tolerance of a match (Hz)")
    p.add_argument("--no-rescore", action="store_true",
                   help="skip the timed re-run of our score flow (--quick skips it too)")
    p.add_argument("--workdir", help="parent of the temporary directory (never inside the repository)")
    p.add_argument("--keep", action="store_true", help="keep the archive and the work directory")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of the tables")
    args = p.parse_args(argv)
    cadences = args.cadences or (3 if args.quick else 8)
    nfpc = args.nfpc or (8192 if args.quick else 16384)

    parent = Path(args.workdir).resolve() if args.workdir else None
    if parent is not None and (parent == REPO or REPO in parent.parents):
        raise SystemExit(f"--workdir {parent} is inside the repository; choose a directory outside it")
    root = Path(tempfile.mkdtemp(prefix="seti-detection-", dir=parent))
    log = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    try:
        archive, work = root / "archive", root / "work"
        env = {**os.environ, "PREFECT_HOME": str(root / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
               "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
        env.pop("PREFECT_API_URL", None)

        log(f"[detection] generating {cadences} cadences x {nfpc * args.n_coarse} channels in {archive}")
        t0 = time.perf_counter()
        truth_path = make_archive(archive, cadences, args.seed, nfpc, args.n_coarse)
        gen_s = time.perf_counter() - t0
        truth = json.loads(truth_path.read_text())
        files = [archive / f["name"] for f in truth["files"]]
        total = sum(f.stat().st_size for f in files)

        bare = [bare_read(files)]
        log("[detection] start-up measurement (imports, Dask cluster, empty Prefect flow)")
        startup = bench.startup_time(env, root)
        startup.pop("output", None)

        log("[detection] ours: seti-auditor run (ingest, train, score)")
        extra = ["--line-search"] if args.line_search else ["--no-line-search"]
        run_wall, run_text = run_cli(["run", str(archive), "--workdir", str(work), *extra], env, root / "run.log")
        cat_ours, tiles_ours = read_catalog(work), read_tiles(work)
        joint_threshold, slow_threshold = read_joint_threshold(work), read_joint_threshold(work, "joint_slow")

        log("[detection] baseline: seti-auditor score --score mse --threshold article")
        base_wall, base_text = run_cli(["score", "--workdir", str(work), "--score", "mse", "--threshold", "article"],
                                       env, root / "baseline.log")
        cat_base, tiles_base = read_catalog(work), read_tiles(work)

        ours_score_wall, same, rescore_text = None, None, ""
        if not (args.no_rescore or args.quick):
            log("[detection] ours again, score flow only")
            ours_score_wall, rescore_text = run_cli(["score", "--workdir", str(work), *extra], env, root / "rescore.log")
            again = read_catalog(work)["candidates"]
            cols = ["source_file", "freq_min_mhz", "freq_max_mhz", "score", "n_on_scans"]
            same = bool(len(again) == len(cat_ours["candidates"])
                        and (again[cols].reset_index(drop=True) == cat_ours["candidates"][cols].reset_index(drop=True))
                        .all().all())
        bare.append(bare_read(files))

        tol = args.tol_hz * 1e-6
        res = {"archive": {"cadences": cadences, "seed": args.seed, "nchans": nfpc * args.n_coarse,
                           "n_ints": truth["files"][0]["n_ints"], "n_files": len(files), "total_bytes": total,
                           "total_mb": total / 1e6, "n_signals": len(truth["signals"]), "n_rfi": len(truth["rfi"]),
                           "generate_s": gen_s},
               "tol_hz": args.tol_hz}
        stages = bench.flow_times(run_text)
        for name, cat, tiles, wall, flow_s in (
                ("ours", cat_ours, tiles_ours, ours_score_wall, stages.get("score")),
                ("baseline", cat_base, tiles_base, base_wall, bench.flow_times(base_text).get("score"))):
            ev = evaluate(truth, cat, tiles, tol, total)
            res[name] = {"eval": ev, "summary": summarise(ev), "score_wall_s": wall, "score_flow_s": flow_s}
        if ours_score_wall is not None:
            res["ours"]["rescore_flow_s"] = bench.flow_times(rescore_text).get("score")
        bare_s = min(bare)
        res["throughput"] = {"run_wall_s": run_wall, "run_mb_s": total / 1e6 / run_wall, "bare_read_s": bare_s,
                             "bare_mb_s": total / 1e6 / bare_s, "ratio": run_wall / bare_s,
                             "stages": stages, "startup": startup}
        res["rescore_same_catalog"] = same
        if joint_threshold is not None:  # what the data allow at our false-alarm level (truthmatch.ceiling)
            res["ceiling"] = {"threshold": joint_threshold, "slow_threshold": slow_threshold,
                              "clairvoyant": ceiling(clairvoyant(truth, pulses_known=True), joint_threshold,
                                                     slow_threshold),
                              "track": ceiling(clairvoyant(truth, pulses_known=False), joint_threshold, slow_threshold)}
        if args.json:
            print(json.dumps(_clean(res), default=_json_default, allow_nan=False))
        else:
            print_report(res)
            if args.keep:
                print(f"\nkept: {root} (logs: run.log, baseline.log, rescore.log)")
    finally:
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
