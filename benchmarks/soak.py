"""Soak: the whole pipeline over a few hundred small files, with bad files and killed Dask workers.

Two runs of ``ingest -> train -> score`` over the same synthetic archive (whole ABACAD
cadences of small files, plus ~10% bad files of every kind the readers refuse):

* **clean**: Dask worker threads in this process, nothing injected;
* **faulted**: a real ``dask scheduler`` and ``dask worker`` processes (with nannies) on
  loopback, flows reporting to a real Prefect server (``seti-auditor ui`` on a free
  loopback port, private ``PREFECT_HOME``), and a thread that SIGKILLs a random worker
  process every few seconds while the run goes on (the nanny starts a new one).

It prints files in, files processed, files rejected (grouped by reason), candidates lost
or duplicated in the faulted catalog against the clean one (both must be 0), whether the
two catalogs, tile stores and score stores are identical, and the peak memory (RSS,
sampled) of the scheduler, the workers and this (flow) process::

    python benchmarks/soak.py            # 240 good files + 24 bad, 6 worker kills
    python benchmarks/soak.py --quick    # 36 good files + 4 bad, 3 worker kills (one per phase)
    python benchmarks/soak.py --json     # one JSON line at the end

Everything is written under a temporary directory (``--workdir`` chooses its parent).
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


@dataclasses.dataclass(frozen=True)
class SoakConfig:
    """What the soak runs."""

    files: int = 240  # good observation files (rounded up to whole cadences of six)
    bad_fraction: float = 0.1  # bad files added, as a fraction of the good ones
    kills: int = 6  # worker processes SIGKILLed during the faulted run, dealt over ingest, train, score
    kill_pause_s: tuple[float, float] = (0.5, 3.0)  # pause (uniform) between a phase's start and its kill
    workers: int = 2  # Dask worker processes (one thread each)
    epochs: int = 4  # training epochs
    chunk_tiles: int = 4  # tiles per Zarr chunk (one file of 1024 channels = 4 tiles = one chunk)
    tiles_per_task: int = 16  # tiles per score task
    seed: int = 0  # archive, bad files and kill times
    sample_s: float = 0.2  # memory sampling period (s)


QUICK = SoakConfig(files=36, kills=3, epochs=2)


# ----------------------------------------------------------------------------- the archive


def write_archive(root: Path, cfg: SoakConfig) -> tuple[int, dict[str, str]]:
    """Good cadences of small files plus bad files; returns (good files, bad file -> kind)."""
    from seti_auditor.archive import write_synthetic_archive
    from seti_auditor.synth import ObsConfig, RfiConfig, SignalSpec, SynthConfig

    cadences = -(-cfg.files // 6)
    synth = SynthConfig(obs=ObsConfig(nfpc=1024, n_coarse=1, band_step_mhz=0.01),
                        rfi=RfiConfig(n_zero_drift=1, n_drifting=0, n_impulses=0),
                        eti=(SignalSpec(kind="linear", snr=60.0, drift_hz_s=-0.3, width_hz=1.4),))
    write_synthetic_archive(root, cadences=cadences, seed=cfg.seed, config=synth, formats="mixed")
    (root / "truth.json").rename(root.parent / "truth.json")  # not an input
    good = sorted(p for p in root.iterdir())
    rng = np.random.default_rng(cfg.seed + 1)
    kinds = list(BAD_KINDS)
    bad = {}
    for i in range(int(round(cfg.bad_fraction * len(good)))):
        kind = kinds[i % len(kinds)]
        name = f"bad_{i:03d}_{kind}{'.h5' if kind.startswith('h5') else '.fil'}"
        BAD_KINDS[kind](root / name, good[int(rng.integers(len(good)))], rng)
        bad[name] = kind
    return len(good), bad


def _raw_fil(path: Path, header: dict, payload: bytes) -> None:
    from seti_auditor.formats.filterbank import encode_header

    path.write_bytes(encode_header(header) + payload)


def _fil_header(rng, **over) -> dict:
    """A header for a bad file; its own start time, so that no two bad files are byte-identical."""
    hdr = {"source_name": "BAD", "tstart": 59000.0 + rng.random(), "tsamp": 18.253611008, "fch1": 1500.0,
           "foff": -2.7939677238464355e-06, "nchans": 1024, "nbits": 32, "nifs": 1}
    return {**hdr, **over}


def _h5(path: Path, rng, data, **attrs) -> None:
    import h5py

    with h5py.File(path, "w") as fh:
        fh.attrs["CLASS"] = "FILTERBANK"
        dset = fh.create_dataset("data", data=data)
        for k, v in {**_fil_header(rng), **attrs}.items():
            dset.attrs[k] = v


def _noise(rng, shape=(16, 1024)) -> np.ndarray:
    return (rng.chisquare(64, size=shape) / 64).astype(np.float32)


BAD_KINDS = {  # kind -> writer(path, a good file to derive from, rng)
    "empty": lambda p, g, r: p.write_bytes(b""),
    "garbage": lambda p, g, r: p.write_bytes(r.bytes(4096)),
    "truncated": lambda p, g, r: p.write_bytes(g.read_bytes()[: g.stat().st_size // 2 + 1]),
    "nsamples_lies": lambda p, g, r: _raw_fil(p, _fil_header(r, nsamples=999), _noise(r).tobytes()),
    "nchans_absurd": lambda p, g, r: _raw_fil(p, _fil_header(r, nchans=2**31 - 1), _noise(r).tobytes()),
    "nbits3": lambda p, g, r: _raw_fil(p, _fil_header(r, nbits=3), _noise(r).tobytes()),
    "nifs2": lambda p, g, r: _raw_fil(p, _fil_header(r, nifs=2), _noise(r).tobytes()),
    "all_nan": lambda p, g, r: _raw_fil(p, _fil_header(r), np.full((16, 1024), np.nan, np.float32).tobytes()),
    "constant": lambda p, g, r: _raw_fil(p, _fil_header(r), np.full((16, 1024), 3.0, np.float32).tobytes()),
    "too_short": lambda p, g, r: _raw_fil(p, _fil_header(r), _noise(r, (4, 1024)).tobytes()),
    "h5_garbage": lambda p, g, r: p.write_bytes(b"\x89HDF\r\n\x1a\n" + r.bytes(2048)),
    "h5_nifs2": lambda p, g, r: _h5(p, r, np.stack([_noise(r), _noise(r)], axis=1), nifs=2),
    "h5_nchans_lies": lambda p, g, r: _h5(p, r, _noise(r)[:, None, :], nchans=4096),
}


# ----------------------------------------------------------------------------- processes


class MemorySampler(threading.Thread):
    """Peak RSS of processes, sampled every ``period`` seconds.

    ``roots``: role -> (pid, whole tree?). For a tree (a worker CLI with its nannies and worker
    processes) it records the largest single process and the largest sum over the tree.
    """

    def __init__(self, roots: dict[str, tuple[int, bool]], period: float):
        super().__init__(daemon=True)
        self.roots, self.period = roots, period
        self.peak: dict[str, int] = collections.defaultdict(int)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period):
            for role, (pid, tree) in self.roots.items():
                try:
                    root = psutil.Process(pid)
                    procs = [root] + (root.children(recursive=True) if tree else [])
                except psutil.NoSuchProcess:
                    continue
                rss = []
                for proc in procs:
                    try:
                        rss.append(proc.memory_info().rss)
                    except psutil.NoSuchProcess:
                        continue
                if rss:
                    self.peak[role] = max(self.peak[role], max(rss))
                    if tree:
                        self.peak[f"{role} (sum)"] = max(self.peak[f"{role} (sum)"], sum(rss))


def start_server(home: Path, log) -> tuple[subprocess.Popen, str]:
    """``seti-auditor ui`` on a free loopback port with a private home; (process, API URL)."""
    from infra.server import free_port, wait_healthy

    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "ui", "--port", str(port)], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/api"
    wait_healthy(url, timeout_s=300, alive=lambda: proc.poll() is None)
    return proc, url


def start_dask(tmp: Path, workers: int, log) -> tuple[subprocess.Popen, subprocess.Popen, str]:
    """A scheduler and ``workers`` worker processes (nannies restart killed ones) on loopback."""
    sched_file = tmp / "scheduler.json"
    scheduler = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                  "--port", "0", "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
                                  str(sched_file)], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not sched_file.exists():
        if scheduler.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the Dask scheduler did not start")
        time.sleep(0.1)
    worker = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", "--scheduler-file",
                               str(sched_file), "--nworkers", str(workers), "--nthreads", "1", "--host", "127.0.0.1",
                               "--dashboard-address", "127.0.0.1:0"], cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    return scheduler, worker, json.loads(sched_file.read_text())["address"]


PHASES = ("ingest", "train", "score")


def _phase_started(workdir: Path, phase: str) -> bool:
    """Whether a phase of the faulted run is visibly under way (read from its workdir).

    Training counts once its first epoch is checkpointed (so a kill there tests the resume),
    scoring once its first region is in scores.zarr.
    """
    if phase == "ingest":
        return True
    if phase == "train":
        return any(p.name.isdigit() for p in (workdir / "train_state").glob("*/steps/*"))
    return any((workdir / "scores.zarr" / "scored" / "c").glob("*"))


def killer(address: str, workdir: Path, cfg: SoakConfig, done: threading.Event, record: list) -> None:
    """SIGKILL ``cfg.kills`` worker processes, dealt over the phases (ingest, train, score) in turn.

    Each kill waits for its phase to start, then a random pause, then kills a worker that is
    running a task (any worker when none is).
    """
    from distributed import Client

    rng = random.Random(cfg.seed)
    with Client(address, timeout=60) as client:
        for k in range(cfg.kills):
            phase = PHASES[k % len(PHASES)]
            while not _phase_started(workdir, phase):
                if done.wait(0.05):
                    return
            if done.wait(0.0 if phase == "train" else rng.uniform(*cfg.kill_pause_s)):  # epochs are short
                return
            try:
                pids = client.run(os.getpid, on_error="ignore")
                busy = [a for a, keys in client.processing().items() if keys and a in pids]
            except Exception:  # noqa: BLE001 - a worker mid-restart: skip this kill
                continue
            pids = {a: p for a, p in pids.items() if isinstance(p, int)}
            if not pids:
                continue
            addr = rng.choice(sorted(busy)) if busy else rng.choice(sorted(pids))
            os.kill(pids[addr], signal.SIGKILL)
            during = [ph for ph in PHASES if _phase_started(workdir, ph)][-1]  # the latest phase under way
            record.append({"phase": during, "t_s": round(time.monotonic() - T0, 1), "pid": pids[addr],
                           "busy": bool(busy)})


T0 = time.monotonic()


# ----------------------------------------------------------------------------- runs and comparison


def run_pipeline(archive: Path, workdir: Path, cfg: SoakConfig, address: str | None) -> dict:
    """ingest -> train -> score as ``seti-auditor run`` does, with the soak's small work units."""
    from flows.run import run_flow
    from infra.runtime import ClusterConfig, dask_cluster, task_runner
    from seti_auditor.score_archive import ScoreJob
    from seti_auditor.tiling import TilingConfig
    from seti_auditor.training import TrainJob

    tiling = TilingConfig(chunk_tiles=cfg.chunk_tiles)
    train, score = TrainJob(epochs=cfg.epochs, seed=cfg.seed), ScoreJob(tiles_per_task=cfg.tiles_per_task, n_plots=0)
    t0 = time.monotonic()
    cluster = ClusterConfig(address=address, workers=cfg.workers, processes=None if address else False)
    with dask_cluster(cluster) as addr:
        result = run_flow.with_options(task_runner=task_runner(addr))(
            str(archive), str(workdir), tiling=tiling, train=train, score=score, dask_address=addr)
    return {"result": result, "wall_s": time.monotonic() - t0}


def reason_kind(reason: str) -> str:
    """A rejection reason with its numbers and paths taken out, for grouping."""
    reason = re.sub(r"/\S+", "<path>", reason)
    return re.sub(r"-?\d+(\.\d+)?(e-?\d+)?", "N", reason)


def compare(clean: Path, faulted: Path) -> dict:
    from seti_auditor import catalog, scorestore, tilestore

    key = ["source_file", "tile_first", "tile_last"]
    a = catalog.open_catalog(clean).to_dataframe()
    b = catalog.open_catalog(faulted).to_dataframe()
    ca = collections.Counter(map(tuple, a[key].to_numpy().tolist()))
    cb = collections.Counter(map(tuple, b[key].to_numpy().tolist()))
    lost = sum((ca - cb).values())
    duplicated = sum((cb - ca).values())
    same = {}
    for name in (None, "rfi", "rejected"):
        same[name or "candidates"] = catalog.open_catalog(clean, group=name).drop_attrs().identical(
            catalog.open_catalog(faulted, group=name).drop_attrs())
    ta = tilestore.open_tiles(tilestore.store_path(clean)).load()
    tb = tilestore.open_tiles(tilestore.store_path(faulted)).load()
    sa = scorestore.open_scores(scorestore.store_path(clean)).load()
    sb = scorestore.open_scores(scorestore.store_path(faulted)).load()
    return {"candidates_clean": len(a), "candidates_faulted": len(b), "candidates_lost": lost,
            "candidates_duplicated": duplicated, "catalog_identical": same,
            "tiles_identical": ta.drop_attrs().identical(tb.drop_attrs()),
            "scores_identical": sa.drop_attrs().identical(sb.drop_attrs()),
            "all_tiles_scored": bool(sb.scored.values[: tb.sizes["tile"]].all())}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help=f"{QUICK.files} files, {QUICK.kills} kills (< 3 min)")
    p.add_argument("--files", type=int, help="good files (default 240)")
    p.add_argument("--kills", type=int, help="worker kills (default 6)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", help="parent of the temporary directory")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--json", action="store_true", help="print one JSON line at the end")
    args = p.parse_args(argv)
    cfg = QUICK if args.quick else SoakConfig()
    cfg = dataclasses.replace(cfg, seed=args.seed, **{k: v for k, v in (("files", args.files), ("kills", args.kills))
                                                        if v is not None})
    tmp = Path(tempfile.mkdtemp(prefix="seti-auditor-soak-", dir=args.workdir))
    log = open(tmp / "processes.log", "ab")
    procs: list[subprocess.Popen] = []
    try:
        return _soak(cfg, tmp, log, procs, args)
    finally:
        for proc in reversed(procs):
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


def _soak(cfg: SoakConfig, tmp: Path, log, procs: list, args) -> int:
    global T0
    archive = tmp / "archive"
    archive.mkdir()
    n_good, bad = write_archive(archive, cfg)
    print(f"archive: {n_good} good files + {len(bad)} bad ({archive})", flush=True)

    server, url = start_server(tmp / "prefect-home", log)
    procs.append(server)
    os.environ.update(PREFECT_HOME=str(tmp / "prefect-home"), PREFECT_API_URL=url,
                      PREFECT_SERVER_ANALYTICS_ENABLED="false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "error")
    print(f"Prefect server: {url}", flush=True)

    clean = run_pipeline(archive, tmp / "clean", cfg, None)
    print(f"clean run: {clean['wall_s']:.1f} s", flush=True)

    scheduler, worker, address = start_dask(tmp, cfg.workers, log)
    procs += [scheduler, worker]
    from distributed import Client

    with Client(address, timeout=120) as client:
        client.wait_for_workers(cfg.workers, timeout=180)
    sampler = MemorySampler({"scheduler": (scheduler.pid, False), "workers": (worker.pid, True),
                             "flow process": (os.getpid(), False)}, cfg.sample_s)
    sampler.start()
    done, kills = threading.Event(), []
    T0 = time.monotonic()
    kill_thread = threading.Thread(target=killer, args=(address, tmp / "faulted", cfg, done, kills), daemon=True)
    kill_thread.start()
    try:
        faulted = run_pipeline(archive, tmp / "faulted", cfg, address)
    finally:
        done.set()
        kill_thread.join(timeout=60)
        sampler.stop.set()
        sampler.join()
    print(f"faulted run: {faulted['wall_s']:.1f} s, {len(kills)} worker kills", flush=True)

    from seti_auditor import modeldir

    ing = faulted["result"].ingest
    groups = collections.Counter(reason_kind(r) for r in ing.rejected.values())
    unexpected = sorted(set(ing.rejected) - set(bad))
    missed = sorted(set(bad) - set(ing.rejected))
    report = {
        "files_in": ing.n_inputs, "files_processed": len(ing.ingested) + len(ing.unchanged),
        "files_rejected": len(ing.rejected), "good_files_rejected": unexpected, "bad_files_accepted": missed,
        "rejected_by_reason": dict(groups.most_common()),
        "model_version_same": clean["result"].score.model_version == faulted["result"].score.model_version,
        "training_resumed_from_step": modeldir.read_meta(tmp / "faulted")["extra"].get("resumed_from"),
        **compare(tmp / "clean", tmp / "faulted"),
        "worker_kills": kills,
        "peak_rss_mb": {k: round(v / 2**20, 1) for k, v in sorted(sampler.peak.items())},
        "wall_s": {"clean": round(clean["wall_s"], 1), "faulted": round(faulted["wall_s"], 1)},
        "config": dataclasses.asdict(cfg),
    }
    print(f"\nfiles in {report['files_in']}, processed {report['files_processed']}, "
          f"rejected {report['files_rejected']} (good files rejected: {len(unexpected)}, bad accepted: {len(missed)})")
    for reason, n in groups.most_common():
        print(f"  {n:4d}  {reason}")
    print(f"candidates: clean {report['candidates_clean']}, faulted {report['candidates_faulted']}; "
          f"lost {report['candidates_lost']}, duplicated {report['candidates_duplicated']}")
    print(f"identical to the clean run: catalog {report['catalog_identical']}, tiles {report['tiles_identical']}, "
          f"scores {report['scores_identical']}; every tile scored: {report['all_tiles_scored']}; "
          f"same model: {report['model_version_same']} (training resumed from step "
          f"{report['training_resumed_from_step']})")
    print(f"worker kills (phase, s after start, busy): {[(k['phase'], k['t_s'], k['busy']) for k in kills]}")
    print(f"peak RSS (MB): {report['peak_rss_mb']}")
    if args.json:
        print(json.dumps(report, default=str))
    ok = (report["candidates_lost"] == 0 and report["candidates_duplicated"] == 0 and not unexpected and not missed
          and report["all_tiles_scored"])
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
