"""Benchmark: filterbank -> tiles.zarr ingest throughput and peak memory.

Two measurements in one run:

1. **Throughput.** A Breakthrough-Listen-like float32 filterbank (16 integrations x N
   channels, BL high-resolution channel width, so one coarse channel = 2**20 channels) is
   generated in a temporary directory. Then, interleaved, best of ``--reps``:

   * *bare read*: ``np.fromfile(path, "<f4", offset=header_len).reshape(16, N)`` and a sum
     over the array (every byte touched);
   * *ingest*: the project's ingest path as plain functions, without Prefect, exactly the
     calls the ingest flow makes: ``ingest.inspect_file`` (header + BLAKE2b hash + plan),
     ``ingest.plan_ingest``, ``tilestore.ensure_capacity``, ``ingest.ingest_region`` for every
     region, ``tilestore.save_manifest``, into a fresh workdir each repetition.

   Both read the same bytes from the page cache: the file is read once, untimed, before the
   first repetition, and nothing here can drop the cache reliably, so both numbers are
   *warm* (no disk in them). MB/s = 10**6 bytes of filterbank data per second.

2. **Peak memory.** A file larger than the memory the process is allowed (default: a 1 GiB
   file, ``RLIMIT_DATA`` = 1000 MiB) is ingested in a child process that sets
   ``resource.setrlimit(RLIMIT_DATA, ...)`` before importing anything heavy. Linux (>= 4.7)
   counts private writable mappings (heap, anonymous ``mmap``, thread stacks) under
   ``RLIMIT_DATA`` but not the read-only file-backed memory maps the lazy filterbank reader
   uses, so a chunked ingest can fit while ``np.fromfile`` of the whole file, run in a second
   child under the same limit, must fail with ``MemoryError``. The ingest child reports its
   own peak RSS (``VmHWM``, which includes the touched pages of the mapped file), its peak
   ``VmData`` (what the limit counts, sampled), its footprint after the imports, and whether
   ``jax`` or ``prefect`` got imported on this path (neither should be). Also reported: what one
   ``formats.open_observation`` call allocates for that file (``ingest_region`` makes one per
   region), since that part scales with the file's channel count, not with the region.

   With the code as it is, the ingest needs ~1 GiB of ``VmData`` for a 1 GiB file (about 250 MiB
   of imports, 256 MiB of full-band coordinates, ~470 MiB for a 64 MiB region), so the default
   limit sits just under the file size; ``--mem-limit-mb 768`` shows the ingest failing.

Usage::

    python benchmarks/ingest.py              # 256 MiB throughput file + 1 GiB memory test (~2-3 min)
    python benchmarks/ingest.py --quick      # 64 MiB throughput file, 2 reps, no memory test (~15 s)
    python benchmarks/ingest.py --json       # one JSON line instead of the tables
    python benchmarks/ingest.py --mb 512 --reps 2 --mem-mb 2048 --mem-limit-mb 1536 --workdir /scratch

Files go to a temporary directory (or under ``--workdir``, never inside the repository)
and are removed at the end unless ``--keep``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Running this file as a script puts benchmarks/ first on sys.path, where this module
# (ingest.py) would shadow any top-level ``import ingest``: drop it.
if sys.path and Path(sys.path[0]).resolve() == Path(__file__).resolve().parent:
    sys.path.pop(0)

REPO = Path(__file__).resolve().parent.parent
NINTS = 16  # integrations per file: one BL high-resolution scan
BL_NFPC = 2**20  # BL high-resolution fine channels per coarse channel
MIB = 2**20
MB = 10**6
HEADER = dict(
    telescope_id=6, machine_id=10, data_type=1, source_name="BENCH_TARGET",
    src_raj=123456.7, src_dej=-123456.7, tstart=60000.0, tsamp=18.253611008, nbits=32,
    fch1=1100.0, foff=-2.7939677238464355e-06, nifs=1,
)


# ----------------------------------------------------------------------------- generation


def nchans_for(mib: int) -> int:
    nchans = mib * MIB // (NINTS * 4)
    if nchans < 256 or (nchans > BL_NFPC and nchans % BL_NFPC):
        raise SystemExit(f"--mb {mib}: the file must hold whole 64 MiB coarse channels (a multiple of 64) "
                         "or be a single coarse channel of at least 1 MiB")
    return nchans


def bandpass(n: int, nfpc: int):
    """A BL-like bandpass: a roll-off at both edges of every coarse channel, a gentle slope."""
    import numpy as np

    x = np.linspace(-1.0, 1.0, nfpc, dtype=np.float32)
    coarse = 1.0 - 0.7 * x**16  # flat top, steep edges
    slope = np.linspace(1.2, 0.8, n // nfpc, dtype=np.float32)
    return (slope[:, None] * coarse[None, :]).reshape(n)


def make_filterbank(path: Path, mib: int, seed: int = 0) -> tuple[int, int]:
    """Write a 16 x N float32 filterbank; returns (nchans, header length).

    The header is written by ``seti_auditor.formats.write_filterbank`` (a one-spectrum file,
    truncated to its header); the 16 spectra are then appended one at a time, so memory stays
    at two spectra. Noise: chi-squared with 2 degrees of freedom times the bandpass.
    """
    import numpy as np

    from seti_auditor import formats

    nchans = nchans_for(mib)
    nfpc = min(BL_NFPC, nchans)
    header = dict(HEADER, nchans=nchans, nfpc=nfpc)
    formats.write_filterbank(path, header, np.zeros((1, nchans), np.float32))
    header_len = path.stat().st_size - nchans * 4
    rng = np.random.default_rng(seed)
    bp = bandpass(nchans, nfpc)
    with open(path, "r+b") as fh:
        fh.truncate(header_len)
        fh.seek(header_len)
        for _ in range(NINTS):
            spectrum = rng.standard_exponential(nchans, dtype=np.float32)
            spectrum *= 2.0 * bp  # 2 x Exp(1) = chi-squared(2)
            fh.write(memoryview(spectrum))
    got = formats.read_header(path)
    assert (got["nsamples"], got["nchans"], got["nfpc"]) == (NINTS, nchans, nfpc), got
    return nchans, header_len


def warm_page_cache(path: Path) -> None:
    with open(path, "rb", buffering=0) as fh:
        while fh.read(1 << 24):
            pass


# ----------------------------------------------------------------------------- timing


class Timers:
    """Wall-clock totals of some project functions, by wrapping them for the duration of a run.

    Only timing wrappers: arguments and results pass through unchanged.
    """

    def __init__(self) -> None:
        self.totals: dict[str, float] = {}
        self._undo: list = []

    def wrap(self, owner, attr: str, label: str) -> None:
        original = getattr(owner, attr)

        def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return original(*args, **kwargs)
            finally:
                self.totals[label] = self.totals.get(label, 0.0) + time.perf_counter() - t0

        setattr(owner, attr, timed)
        self._undo.append((owner, attr, original))

    def restore(self) -> None:
        for owner, attr, original in reversed(self._undo):
            setattr(owner, attr, original)
        self._undo.clear()


def _native(row) -> dict:  # as flows/ingest.py passes a manifest row to the tile-region task
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def run_ingest(path: Path, workdir: Path) -> dict:
    """The ingest flow's steps as bare functions; returns phase times (s) and counts."""
    import types

    from seti_auditor import ingest, tilestore
    from seti_auditor.tiling import TilingConfig

    cfg = TilingConfig()
    workdir.mkdir(parents=True, exist_ok=True)
    store = tilestore.store_path(workdir)
    t0 = time.perf_counter()
    row = ingest.inspect_file(path, cfg)
    if row["status"] != ingest.INGESTED:
        raise RuntimeError(f"{path.name} rejected: {row['reason']}")
    t1 = time.perf_counter()
    plan = ingest.plan_ingest([row], tilestore.load_manifest(store), cfg, tilestore.n_tiles(store))
    tilestore.ensure_capacity(store, plan.capacity, cfg)
    t2 = time.perf_counter()
    n_written = 0
    for region in plan.regions:
        row_ns = types.SimpleNamespace(**_native(plan.manifest.loc[region.file_id]))
        n_written += ingest.ingest_region(store, row_ns, region, cfg)
    t3 = time.perf_counter()
    tilestore.save_manifest(store, plan.manifest, {"archive_dir": str(path.parent)})
    t4 = time.perf_counter()
    if n_written != int(row["n_tiles"]):
        raise RuntimeError(f"wrote {n_written} tiles, planned {row['n_tiles']}")
    return {"inspect_s": t1 - t0, "plan_capacity_s": t2 - t1, "regions_s": t3 - t2, "manifest_s": t4 - t3,
            "total_s": t4 - t0, "n_regions": len(plan.regions), "n_tiles": n_written}


def timed_ingest(path: Path, workdir: Path) -> dict:
    from seti_auditor import formats, ingest, tilestore

    timers = Timers()
    timers.wrap(tilestore, "content_hash", "hash")
    timers.wrap(formats, "open_observation", "open_observation")
    timers.wrap(ingest, "tiles_for_region", "normalise_cut")
    timers.wrap(tilestore, "write_region", "write_region")
    try:
        out = run_ingest(path, workdir)
    finally:
        timers.restore()
    t = timers.totals
    out["hash_s"] = t.get("hash", 0.0)
    out["open_s"] = t.get("open_observation", 0.0)
    out["normalise_cut_s"] = t.get("normalise_cut", 0.0)
    out["write_s"] = t.get("write_region", 0.0)
    # the rest of ingest_region: the channel read (.values of the dask array), header,
    # tile_stats, region_coords, pad_region
    out["read_other_s"] = out["regions_s"] - out["open_s"] - out["normalise_cut_s"] - out["write_s"]
    return out


def bare_read(path: Path, header_len: int, nchans: int) -> float:
    import numpy as np

    t0 = time.perf_counter()
    data = np.fromfile(path, dtype="<f4", offset=header_len).reshape(NINTS, nchans)
    total = float(data.sum(dtype=np.float64))
    dt = time.perf_counter() - t0
    if not np.isfinite(total):
        raise RuntimeError("bare read produced a non-finite sum")
    return dt


def throughput(path: Path, header_len: int, nchans: int, workdir: Path, reps: int) -> dict:
    data_bytes = NINTS * nchans * 4
    warm_page_cache(path)
    bare, runs = [], []
    for i in range(reps):  # interleaved: bare, ingest, bare, ingest, ...
        bare.append(bare_read(path, header_len, nchans))
        rep_dir = workdir / f"rep{i}"
        runs.append(timed_ingest(path, rep_dir))
        shutil.rmtree(rep_dir, ignore_errors=True)
    best = min(runs, key=lambda r: r["total_s"])
    bare_s = min(bare)
    return {
        "data_bytes": data_bytes, "nchans": nchans, "reps": reps,
        "bare_s": bare_s, "bare_all_s": bare, "bare_mb_s": data_bytes / bare_s / MB,
        "ingest_s": best["total_s"], "ingest_all_s": [r["total_s"] for r in runs],
        "ingest_mb_s": data_bytes / best["total_s"] / MB,
        "ratio": best["total_s"] / bare_s,
        "best_ingest": best,
    }


# ----------------------------------------------------------------------------- memory


def _set_data_limit(limit_mib: int) -> None:
    limit = limit_mib * MIB
    resource.setrlimit(resource.RLIMIT_DATA, (limit, limit))


def proc_status() -> dict[str, int]:
    """Memory fields of ``/proc/self/status`` in KiB (VmData is what RLIMIT_DATA limits)."""
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            key, _, value = line.partition(":")
            if key in ("VmData", "VmRSS", "VmHWM", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    return out


class PeakSampler:
    """Samples VmData and RssAnon every few ms in a thread (VmHWM gives the exact RSS peak)."""

    def __init__(self, interval: float = 0.01) -> None:
        import threading

        self.interval, self.peak = interval, {"VmData": 0, "RssAnon": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            st = proc_status()
            for k in self.peak:
                self.peak[k] = max(self.peak[k], st[k])
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def child_main(argv: list[str]) -> int:
    """``--child ingest PATH WORKDIR LIMIT_MIB`` or ``--child fromfile PATH OFFSET LIMIT_MIB``.

    Prints one JSON line. Peak memory is measured here, by the child itself: the
    ``ru_maxrss`` that ``wait4``/``RUSAGE_CHILDREN`` report for an exec'd child starts from
    the parent's RSS at fork time (Linux keeps the pre-exec high-water mark), so it
    overstates a small child of a large parent. ``VmHWM`` belongs to the child's own image.
    """
    mode = argv[0]
    limit_mib = int(argv[-1])
    if limit_mib > 0:
        _set_data_limit(limit_mib)  # before numpy & co. are imported: the whole process is under it
    out: dict = {"mode": mode, "limit_mib": limit_mib, "ok": False, "error": ""}
    t0 = time.perf_counter()
    sampler = None
    try:
        if mode == "ingest":
            import seti_auditor.ingest  # noqa: F401 - the imports are part of the footprint, measured apart

            out["baseline_kib"] = proc_status()
            with PeakSampler() as sampler:
                out.update(run_ingest(Path(argv[1]), Path(argv[2])))
        elif mode == "fromfile":
            import numpy as np

            out["baseline_kib"] = proc_status()
            data = np.fromfile(Path(argv[1]), dtype="<f4", offset=int(argv[2]))
            out["sum"] = float(data.sum(dtype=np.float64))
        else:
            raise SystemExit(f"unknown child mode {mode!r}")
        out["ok"] = True
    except MemoryError as exc:
        out["error"] = f"MemoryError: {exc}"
        out["where"] = _where(exc)
    except Exception as exc:  # noqa: BLE001 - reported, the parent decides
        out["error"] = f"{type(exc).__name__}: {exc}"
        out["where"] = _where(exc)
    out["wall_s"] = time.perf_counter() - t0
    end = proc_status()
    out["vmhwm_mib"] = end["VmHWM"] / 1024
    if sampler is not None:
        out["peak_vmdata_mib"] = sampler.peak["VmData"] / 1024
        out["peak_rssanon_mib"] = sampler.peak["RssAnon"] / 1024
    out["jax_imported"] = "jax" in sys.modules
    out["prefect_imported"] = "prefect" in sys.modules
    print(json.dumps(out), flush=True)
    return 0


def _where(exc: BaseException) -> str:
    """The innermost project frame of a traceback (``seti_auditor/tiling.py:163 normalise``)."""
    import traceback

    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if str(REPO) in f.filename] or frames
    f = ours[-1]
    name = Path(f.filename).resolve().relative_to(REPO) if str(REPO) in f.filename else f.filename
    return f"{name}:{f.lineno} {f.name}"


def run_child(args: list[str], log: Path) -> dict:
    """Run a child of this script and return its JSON result."""
    with open(log, "wb") as err:
        proc = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--child", *args],
                              stdout=subprocess.PIPE, stderr=err, check=False)
    lines = [ln for ln in proc.stdout.decode().splitlines() if ln.startswith("{")]
    out = json.loads(lines[-1]) if lines else {"ok": False, "error": f"no result (exit status {proc.returncode})"}
    out["returncode"] = proc.returncode
    out.setdefault("vmhwm_mib", float("nan"))
    if proc.returncode and not out.get("error"):
        out["error"] = f"exit status {proc.returncode}"
    if not out["ok"]:
        out["stderr_tail"] = log.read_text(errors="replace")[-600:]
    return out


def open_observation_cost(path: Path) -> dict:
    """What one ``formats.open_observation`` call allocates (tracemalloc) and takes.

    ``ingest_region`` opens the file once per region before slicing its channels.
    """
    import tracemalloc

    from seti_auditor import formats

    formats.open_observation(path)  # warm imports
    tracemalloc.start()
    t0 = time.perf_counter()
    arr = formats.open_observation(path)
    dt = time.perf_counter() - t0
    alive, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    nchans = arr.sizes["freq"]
    del arr
    return {"seconds": dt, "alive_mib": alive / MIB, "peak_mib": peak / MIB,
            "alive_b_per_chan": alive / nchans, "peak_b_per_chan": peak / nchans, "nchans": nchans}


def memory_test(path: Path, header_len: int, workdir: Path, limit_mib: int) -> dict:
    warm_page_cache(path)
    ingest_res = run_child(["ingest", str(path), str(workdir / "mem-ingest"), str(limit_mib)], workdir / "ingest.log")
    shutil.rmtree(workdir / "mem-ingest", ignore_errors=True)
    bare_res = run_child(["fromfile", str(path), str(header_len), str(limit_mib)], workdir / "fromfile.log")
    size = path.stat().st_size
    region_chans = min(BL_NFPC, (size - header_len) // (NINTS * 4))  # default regions: one coarse channel
    return {"file_bytes": size, "data_bytes": size - header_len, "limit_mib": limit_mib,
            "region_mib": NINTS * 4 * region_chans / MIB,
            "ingest": ingest_res, "fromfile": bare_res, "open_observation": open_observation_cost(path)}


# ----------------------------------------------------------------------------- report


def print_report(res: dict) -> None:
    tp = res.get("throughput")
    if tp:
        b = tp["best_ingest"]
        mib = tp["data_bytes"] / MIB
        print(f"\nThroughput: {NINTS} x {tp['nchans']} float32 filterbank ({mib:.0f} MiB of data), "
              f"best of {tp['reps']} interleaved reps, page cache warm for both")
        print(f"  {'path':<44}{'best s':>9}{'MB/s':>10}   all reps (s)")
        print(f"  {'bare: np.fromfile + reshape + sum':<44}{tp['bare_s']:>9.3f}{tp['bare_mb_s']:>10.0f}   "
              + " ".join(f"{x:.3f}" for x in tp["bare_all_s"]))
        print(f"  {'ingest: inspect..save_manifest (no Prefect)':<44}{tp['ingest_s']:>9.3f}"
              f"{tp['ingest_mb_s']:>10.1f}   " + " ".join(f"{x:.2f}" for x in tp["ingest_all_s"]))
        print(f"  ingest / bare time ratio: {tp['ratio']:.1f}x")
        print(f"\n  split of the best ingest rep ({b['n_regions']} regions, {b['n_tiles']} tiles):")
        rows = [
            ("inspect_file (header + hash + plan)", b["inspect_s"]),
            ("  of which content_hash (BLAKE2b)", b["hash_s"]),
            ("plan_ingest + ensure_capacity", b["plan_capacity_s"]),
            ("ingest_region x regions (tiling + write)", b["regions_s"]),
            ("  open_observation (header, coords)", b["open_s"]),
            ("  read + stats + coords (rest)", b["read_other_s"]),
            ("  normalise + cut_tiles", b["normalise_cut_s"]),
            ("  tilestore.write_region (zarr)", b["write_s"]),
            ("save_manifest", b["manifest_s"]),
            ("total", b["total_s"]),
        ]
        for name, s in rows:
            print(f"  {name:<44}{s:>9.3f}{tp['data_bytes'] / s / MB if s > 0 else float('inf'):>10.1f} MB/s"
                  f"{100 * s / b['total_s']:>7.1f}%")
    mem = res.get("memory")
    if mem:
        ing, bare, oo = mem["ingest"], mem["fromfile"], mem["open_observation"]
        fmib = mem["file_bytes"] / MIB
        print(f"\nPeak memory: {fmib:.0f} MiB file ({NINTS} x {oo['nchans']} float32), each child under "
              f"RLIMIT_DATA = {mem['limit_mib']} MiB ({mem['limit_mib'] / fmib:.2f} x file)")
        print(f"  {'child':<34}{'result':<13}{'peak RSS':>9}{'RSS/file':>9}{'peak VmData':>12}{'wall s':>8}")
        for name, r in (("ingest (inspect..save_manifest)", ing), ("bare np.fromfile (whole file)", bare)):
            status = "ok" if r["ok"] else ("MemoryError" if r["error"].startswith("MemoryError") else "FAILED")
            vmdata = f"{r['peak_vmdata_mib']:.0f}" if "peak_vmdata_mib" in r else "-"
            print(f"  {name:<34}{status:<13}{r['vmhwm_mib']:>9.0f}{r['vmhwm_mib'] / fmib:>9.2f}{vmdata:>12}"
                  f"{r.get('wall_s', float('nan')):>8.1f}")
        print("  (MiB; peak RSS = the child's VmHWM, including touched pages of the mapped file; VmData = what "
              "RLIMIT_DATA counts, sampled every 10 ms)")
        base = ing.get("baseline_kib")
        if base and "peak_vmdata_mib" in ing:
            work = ing["peak_vmdata_mib"] - base["VmData"] / 1024
            anon = ing["peak_rssanon_mib"] - base["RssAnon"] / 1024
            print(f"  ingest child after imports: VmData {base['VmData'] / 1024:.0f} MiB, "
                  f"RSS {base['VmRSS'] / 1024:.0f} MiB; "
                  f"ingest working set on top: VmData +{work:.0f} MiB, anonymous RSS +{anon:.0f} MiB "
                  f"= {anon / mem['region_mib']:.1f} x one region's data ({mem['region_mib']:.0f} MiB)")
        print(f"  open_observation of this file (once per region): {oo['seconds']:.3f} s, allocates "
              f"{oo['alive_mib']:.0f} MiB kept / {oo['peak_mib']:.0f} MiB peak = {oo['alive_b_per_chan']:.0f} / "
              f"{oo['peak_b_per_chan']:.0f} B per channel of the file (coordinates), independent of the region size")
        if ing["ok"]:
            print(f"  ingest: {ing['n_regions']} regions of <= 2**20 channels, {ing['n_tiles']} tiles; "
                  f"jax imported: {ing['jax_imported']}; prefect imported: {ing['prefect_imported']}")
        for name, r in (("ingest", ing), ("fromfile", bare)):
            if not r["ok"]:
                where = f" (at {r['where']})" if r.get("where") else ""
                print(f"  {name} error: {r['error'][:200]}{where}")
        verdict = ing["ok"] and not bare["ok"] and bare["error"].startswith("MemoryError")
        print(f"  bounded-memory check (ingest fits under the limit, the whole-file read does not): "
              f"{'PASS' if verdict else 'FAIL'}")
        if ing.get("jax_imported"):
            print("  WARNING: the ingest path imported jax")


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--child"]:
        return child_main(argv[1:])
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mb", type=int, default=None, help="throughput file, MiB of data (default 256; --quick 64)")
    p.add_argument("--reps", type=int, default=None, help="interleaved repetitions, best taken (default 3; --quick 2)")
    p.add_argument("--mem-mb", type=int, default=1024, help="memory-test file, MiB of data (default 1024)")
    p.add_argument("--mem-limit-mb", type=int, default=None,
                   help="RLIMIT_DATA of the memory-test children, MiB (default: --mem-mb minus 24)")
    p.add_argument("--quick", action="store_true",
                   help="throughput only, on 64 MiB, 2 reps (add --memory for the 1 GiB memory test)")
    p.add_argument("--memory", action=argparse.BooleanOptionalAction, default=None,
                   help="run the memory test (default: yes, no with --quick)")
    p.add_argument("--no-throughput", action="store_true", help="skip the throughput test")
    p.add_argument("--workdir", type=Path, default=None, help="parent for the temporary directory (not in the repo)")
    p.add_argument("--keep", action="store_true", help="keep the generated files")
    p.add_argument("--json", action="store_true", help="print one JSON line instead of the tables")
    args = p.parse_args(argv)
    mb = args.mb or (64 if args.quick else 256)
    reps = args.reps or (2 if args.quick else 3)
    run_memory = (not args.quick) if args.memory is None else args.memory
    limit_mib = args.mem_limit_mb or args.mem_mb - 24

    if args.workdir is not None:
        parent = args.workdir.resolve()
        if parent == REPO or REPO in parent.parents:
            p.error(f"--workdir {parent} is inside the repository {REPO}")
        parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="seti-ingest-bench-", dir=args.workdir))
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    res: dict = {"python": sys.version.split()[0], "cpus": os.cpu_count(), "workdir": str(tmp)}
    t_start = time.perf_counter()
    try:
        if not args.no_throughput:
            path = tmp / "bench.fil"
            t0 = time.perf_counter()
            nchans, header_len = make_filterbank(path, mb)
            say(f"generated {path} ({path.stat().st_size / MIB:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
            res["throughput"] = throughput(path, header_len, nchans, tmp, reps)
            path.unlink()
        if run_memory:
            path = tmp / "big.fil"
            t0 = time.perf_counter()
            _, header_len = make_filterbank(path, args.mem_mb, seed=1)
            say(f"generated {path} ({path.stat().st_size / MIB:.0f} MiB) in {time.perf_counter() - t0:.1f} s")
            res["memory"] = memory_test(path, header_len, tmp, limit_mib)
            path.unlink()
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    res["wall_s"] = time.perf_counter() - t_start
    if args.json:
        print(json.dumps(res))
    else:
        print_report(res)
        if not run_memory:
            print("\n(memory test skipped: it needs a file larger than the ~1 GiB the ingest itself needs; "
                  "run without --quick, or add --memory)")
        print(f"\n(total wall time {res['wall_s']:.0f} s; python {res['python']}, {res['cpus']} CPUs)")
    mem = res.get("memory")
    return 0 if not mem or (mem["ingest"]["ok"] and not mem["fromfile"]["ok"]) else 1


if __name__ == "__main__":
    sys.exit(main())
