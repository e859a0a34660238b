"""Orchestration overhead: the same archive through ``seti-auditor run`` and through the bare
library calls that its tasks wrap, timed side by side in one run.

    python benchmarks/overhead.py              # the demo archive (2 cadences, 12 files), CLI defaults
    python benchmarks/overhead.py --reps 2     # interleaved repetitions, best of each
    python benchmarks/overhead.py --epochs 5 --json

Every variant runs in a fresh child process on a fresh work directory (under a temporary
directory, never the repository), from the page cache. The bare loop and the CLI run first,
interleaved, with nothing of the benchmark's own in the background; then the server variant,
with the benchmark's server up; then the warm variant, with its Dask cluster up too (idle, the
two use ~11 % of a core, which would slow whatever runs beside them):

* **bare**: this file with ``--bare``: a plain loop over the functions the tasks and flows
  call (``seti_auditor.ingest`` inspect / plan / ``ingest_region`` / manifest,
  ``seti_auditor.training.train_model``, ``seti_auditor.score_archive`` ``score_region`` /
  ``apply_fdr`` / ``tile_table`` / the cadence line search, ``cadence_test``,
  ``catalog.write_catalog``, the candidate plots), one after the other, with the configurations the CLI builds for
  ``seti-auditor run`` (``flows.cli``'s own parser and config builders). No Prefect, no Dask
  cluster. It exits as the CLI does (``gc.freeze()`` first, :func:`flows.cli.entry`: ~1 s less of
  interpreter shutdown here, ~2 s for the CLI);
* **cli**: ``seti-auditor run ARCHIVE --workdir W`` as a user types it on a fresh machine:
  Prefect's temporary API server (started by the CLI at once), a local Dask cluster of thread workers;
* **server**: the same command with ``PREFECT_API_URL`` pointing at a Prefect server that the
  benchmark started first (``seti-auditor ui``): a local cluster of worker processes, and
  the server's start-up paid once, outside the timed run;
* **warm**: the same against that server with ``--dask-address`` of a Dask cluster that is
  already running (a ``dask scheduler`` and one single-threaded ``dask worker`` per core, as the
  local cluster has) and has done one untimed run before, on another work directory: the
  workers have imported the code and compiled the model, as in a long-lived service.

Start-up is measured apart: for the bare loop, the child's wall time minus the work it timed
inside (interpreter + imports); for the CLI, a child that imports what the CLI imports,
starts the same local cluster and runs an empty flow (ephemeral API, and against the server).
The first of these runs in a fresh ``PREFECT_HOME`` and includes creating Prefect's database
("cold"); the timed CLI run comes after it ("warm"). Per-flow times of the CLI runs come from
Prefect's log lines. The three catalogs are compared (they must be identical: same work).

``--graph N`` adds what the scaling notes (docs/scaling.md) need from a real ``dask scheduler``
(a separate process, as on a cluster): its memory per queued task and its throughput, for N
tasks shaped like the score tasks (a path, a tile range, the ``ScoreJob``, a model version)
submitted with plain Dask, and then for ``--graph-prefect M`` such Prefect tasks submitted by
a flow through ``DaskTaskRunner`` (each carries Prefect's serialised run context), reporting to
the benchmark's Prefect server. Memory is the scheduler's RSS with all tasks queued and no
worker, minus its RSS before; throughput is tasks per second once one worker (2 threads) joins.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import runpy
import shutil
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# run as a script, this folder comes first on sys.path, and its vae.py would shadow the vae package
if sys.path and os.path.abspath(sys.path[0]) == os.path.dirname(os.path.abspath(__file__)):
    sys.path.pop(0)


# the start-up probe and the flow times, shared with detection.py (this folder is not on sys.path)
bench = types.SimpleNamespace(**runpy.run_path(str(Path(__file__).resolve().with_name("common.py"))))


# --------------------------------------------------------------------------- the bare loop (child)


def _native(row) -> dict:
    return {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}


def bare_ingest(archive: str, workdir: str, tiling, batch_size: int = 16) -> dict:
    """What flows/ingest.py does, task bodies called in a loop (tasks/ingest.py)."""
    from seti_auditor import ingest, tilestore
    from seti_auditor.errors import InputFileError

    store = tilestore.store_path(workdir)
    Path(workdir).mkdir(parents=True, exist_ok=True)
    paths = [str(p) for p in ingest.find_inputs(archive)]
    inspected = [ingest.inspect_file(p, tiling) for i in range(0, len(paths), batch_size)
                 for p in paths[i : i + batch_size]]
    manifest = tilestore.load_manifest(store)
    plan = ingest.plan_ingest(inspected, manifest, tiling, tilestore.n_tiles(store), cadence_table=None)
    manifest = plan.manifest
    tilestore.ensure_capacity(store, plan.capacity, tiling)
    for start, stop in plan.superseded_ranges:
        tilestore.write_coords(store, start, {"valid": [False] * (stop - start)}, tiling)
    for i in plan.cadence_updates:
        tilestore.write_coords(store, int(manifest.loc[i, "tile_start"]), ingest.cadence_coords(manifest.loc[i]),
                               tiling)
    failed = {}
    for r in plan.regions:
        try:
            ingest.ingest_region(str(store), types.SimpleNamespace(**_native(manifest.loc[r.file_id])), r, tiling)
        except InputFileError as exc:
            failed.setdefault(r.file_id, exc.reason)
    for i, reason in failed.items():
        start, stop = int(manifest.loc[i, "tile_start"]), int(manifest.loc[i, "tile_stop"])
        tilestore.write_coords(store, start, {"valid": [False] * (stop - start)}, tiling)
        manifest.loc[i, ["status", "reason"]] = [ingest.REJECTED, reason]
    tilestore.save_manifest(store, manifest, {"archive_dir": str(Path(archive).resolve())})
    return {"files": len(paths), "regions": len(plan.regions), "rejected": len(failed)}


def bare_train(workdir: str, job) -> dict:
    """What flows/train.py does (tasks/train.py without the progress callback)."""
    from seti_auditor.training import train_model

    report = train_model(workdir, job)
    return {"model_version": report.model_version, "n_train": report.n_train}


def bare_score(workdir: str, job, times: dict) -> dict:
    """What flows/score.py does on a fresh work directory (its "full" path), task bodies called in
    a loop (tasks/score.py): score regions, archive-wide BH, tile table, cadence test, cadence line
    search (one call per cadence) and the joint fast-line search when enabled (one call per complete cadence),
    catalog, plots."""
    import uuid

    import pandas as pd

    from seti_auditor import __version__, catalog, score_archive, tilestore
    from seti_auditor.cadence_test import cadence_test
    from seti_auditor.plots import candidate_plots

    t, c = time.perf_counter(), time.process_time()
    run = score_archive.prepare_scores(workdir, job)
    meta, version, tiling, n, key = run.meta, run.version, run.tiling, run.n_tiles, run.key
    manifest = tilestore.load_manifest(tilestore.store_path(workdir))
    if not run.fresh:
        raise SystemExit(f"{workdir}: the bare loop times a fresh work directory only")
    regions = score_archive.plan_regions(n, tiling.chunk_tiles, job.tiles_per_task)
    results = [score_archive.score_region(workdir, a, b, job, version) for a, b in regions]
    times["score_regions_s"], times["score_regions_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    t = time.perf_counter()
    fdr = score_archive.apply_fdr(workdir, results, job)
    table = score_archive.tile_table(workdir)
    candidates, rfi, rejected = cadence_test(table, job.cadence)
    lines = {}
    if job.lines.enabled:
        plan = score_archive.plan_lines(table, job)
        measured = [score_archive.follow_lines(workdir, version, rows, plan.seeds[plan.seeds["cadence_id"] == cad],
                                               plan.m_tests, len(plan.seeds), job)
                    for cad, rows in plan.cadences.items()]
        measured = pd.concat(measured, ignore_index=True) if measured else pd.DataFrame()
        candidates, rfi, rejected, lines = score_archive.finish_lines(plan, measured, candidates, rfi, rejected, job)
        if score_archive.joint_enabled(job):  # the joint line searches: one call per complete cadence
            results = [score_archive.search_joint(workdir, version, rows, job)
                       for rows in score_archive.plan_joint(table).values()]
            candidates, rfi, rejected, joint_counts = score_archive.finish_joints(results, table, candidates, rfi,
                                                                                rejected, job)
            lines.update(joint_counts)
    candidates, rfi, rejected = (frame.assign(model_version=version) for frame in (candidates, rfi, rejected))
    run_id = str(uuid.uuid4())
    batch = {"run_id": run_id, "mode": "full", "reason": "bare loop", "code_version": __version__,
             "files": [{"name": str(r.name), "content_hash": str(r.content_hash)} for r in manifest.itertuples()
                       if r.status == "ingested"],
             "method": job.thresholds.method, "q": job.thresholds.q, **fdr, "line_search": lines,
             "rows": {"candidates": [0, len(candidates)], "rfi": [0, len(rfi)], "rejected": [0, len(rejected)]}}
    attrs = {"title": "seti-auditor candidate catalog", "code_version": __version__, "run_id": run_id,
             "score_job": dataclasses.asdict(job), "score_key": key,
             "calibration": meta["extra"].get("calibrations", {}), "fdr": fdr, "line_search": lines,
             "model_config": meta["config"],
             "inputs": manifest[["name", "content_hash", "status", "reason"]].to_dict(orient="records"),
             "covered": score_archive.covered_inputs(manifest), "batches": [batch]}
    catalog.write_catalog(workdir, candidates, rfi, rejected, attrs=attrs, model_version=version)
    times["fdr_cadence_catalog_s"] = time.perf_counter() - t
    t = time.perf_counter()
    out_dir = Path(workdir) / "plots" / version
    plots = candidate_plots(workdir, candidates.head(job.n_plots).to_dict("records"), str(out_dir))
    times["plots_s"] = time.perf_counter() - t
    return {"regions": len(regions), "tiles": fdr["m"] // job.score.subbands, "candidates": len(candidates),
            "plots": len(plots)}


def run_bare(archive: str, workdir: str, cli_args: list[str]) -> dict:
    """The child of the "bare" variant: imports, then ingest -> train -> score in a loop."""
    t0 = time.perf_counter()
    from flows.cli import _score_job, _tiling, _train_job, build_parser  # no Prefect: imports are lazy there
    from seti_auditor import workdir as wd

    args = build_parser().parse_args(["run", archive, "--workdir", workdir, *cli_args])
    tiling, train_job, score_job = _tiling(args), _train_job(args), _score_job(args)
    import seti_auditor.cadence_test  # noqa: F401  what the steps below import, imported here to time it apart
    import seti_auditor.ingest  # noqa: F401
    import seti_auditor.plots  # noqa: F401
    import seti_auditor.score_archive  # noqa: F401
    import seti_auditor.training  # noqa: F401

    times = {"imports_s": time.perf_counter() - t0}
    with wd.locked(workdir):
        t, c = time.perf_counter(), time.process_time()  # CPU seconds of all threads: robust to a busy machine
        out = {"ingest": bare_ingest(archive, workdir, tiling)}
        times["ingest_s"], times["ingest_cpu_s"] = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        out["train"] = bare_train(workdir, train_job)
        times["train_s"], times["train_cpu_s"] = time.perf_counter() - t, time.process_time() - c
        t, c = time.perf_counter(), time.process_time()
        out["score"] = bare_score(workdir, score_job, times)
        times["score_s"], times["score_cpu_s"] = time.perf_counter() - t, time.process_time() - c
    times["work_s"] = times["ingest_s"] + times["train_s"] + times["score_s"]
    return {**out, "times": times}


# --------------------------------------------------------------------------- the parent


def _child(cmd: list[str], env: dict, cwd: Path, log: Path, timeout: float) -> tuple[float, str]:
    return bench.run_logged(cmd, env, cwd, log, " ".join(cmd[:4]) + " ...", timeout)


def startup(env: dict, cwd: Path, log: Path) -> dict:
    """Imports of the CLI, its Prefect API, the local Dask cluster, an empty flow (:mod:`common`)."""
    res = bench.startup_time(env, cwd)
    log.write_text(res.pop("output", ""))
    if "error" in res:
        raise SystemExit(f"the start-up probe failed (log: {log}): {res['error']}")
    return res


def start_dask(env: dict, root: Path, n_workers: int) -> tuple[str, list[subprocess.Popen]]:
    """A ``dask scheduler`` and ``n_workers`` single-threaded ``dask worker`` processes on loopback."""
    from distributed import Client

    sched_file = root / "warm-scheduler.json"
    procs = []
    quiet = {**env, "DASK_LOGGING__DISTRIBUTED": "warning"}
    with open(root / "warm-scheduler.log", "wb") as log:
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                                       "--port", "0", "--no-dashboard", "--scheduler-file", str(sched_file)],
                                      env=quiet, stdout=log, stderr=subprocess.STDOUT))
    while not sched_file.exists():
        time.sleep(0.1)
    address = json.loads(sched_file.read_text())["address"]
    for i in range(n_workers):
        with open(root / f"warm-worker-{i}.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads",
                                           "1", "--no-dashboard", "--name", f"warm-{i}"], env=quiet, stdout=log,
                                          stderr=subprocess.STDOUT))
    with Client(address) as client:
        client.wait_for_workers(n_workers, timeout=300)
    return address, procs


def run_cli(archive: Path, work: Path, cli_args: list[str], env: dict, log: Path) -> dict:
    wall, out = _child([sys.executable, "-m", "flows.cli", "run", str(archive), "--workdir", str(work), *cli_args],
                       env, work.parent, log, 3600)
    return {"wall_s": wall, "flows_s": bench.flow_times(out)}


def run_bare_child(archive: Path, work: Path, cli_args: list[str], env: dict, log: Path) -> dict:
    wall, out = _child([sys.executable, str(Path(__file__).resolve()), "--bare", str(archive), str(work), *cli_args],
                       env, work.parent, log, 3600)
    res = json.loads(next(line for line in out.splitlines()[::-1] if line.startswith("{")))
    res["wall_s"] = wall
    res["times"]["startup_s"] = wall - res["times"]["work_s"]  # interpreter + imports (+ lock, exit)
    return res


def start_server(env: dict, root: Path, log_path: Path) -> tuple[subprocess.Popen, str, float]:
    from infra.server import free_port, wait_healthy

    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    has_ui = "ui" in subprocess.run([sys.executable, "-m", "flows.cli", "--help"], env=env, capture_output=True,
                                    text=True).stdout
    cmd = ([sys.executable, "-m", "flows.cli", "ui", "--port", str(port)] if has_ui else
           [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)])
    t0 = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, env=env, cwd=str(root), stdout=log, stderr=subprocess.STDOUT)
    wait_healthy(url, timeout_s=300, alive=lambda: proc.poll() is None)
    return proc, url, time.perf_counter() - t0


def catalog_rows(work: Path) -> list[tuple]:
    """The candidate rows of a work directory's catalog (sorted), for comparing the variants."""
    import xarray as xr

    ds = xr.open_zarr(str(work / "catalog.zarr"), consolidated=False).load()
    cols = ["source_file", "freq_min_mhz", "freq_max_mhz", "peak_freq_mhz", "drift_hz_s", "score", "p_value",
            "n_on_scans"]
    values = [ds[c].values.tolist() for c in cols]
    return sorted(zip(*values))


def _noop(workdir, start, stop, job, version):
    return stop - start


GRAPH_PREFECT_CODE = """
import json, os, sys, time
from pathlib import Path
from distributed import Client
from prefect import flow, task
from prefect_dask import DaskTaskRunner
from seti_auditor.score_archive import ScoreJob

address, m, marker, go = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])

def scheduler_state(dask_scheduler):
    import psutil
    return len(dask_scheduler.tasks), psutil.Process().memory_info().rss

@task(name="score-like")
def score_like(workdir: str, start: int, stop: int, job: ScoreJob, version: str) -> int:
    return stop - start

@flow(name="graph", validate_parameters=False)
def graph(workdir: str, job: ScoreJob):
    probe = Client(address)
    n0, rss0 = probe.run_on_scheduler(scheduler_state)
    t0 = time.perf_counter()
    futures = [score_like.submit(workdir, a * 4096, (a + 1) * 4096, job, "0123456789abcdef") for a in range(m)]
    submit_s = time.perf_counter() - t0
    deadline = time.time() + 600
    while probe.run_on_scheduler(scheduler_state)[0] < n0 + m and time.time() < deadline:
        time.sleep(0.2)
    n1, rss1 = probe.run_on_scheduler(scheduler_state)
    marker.write_text("queued")
    while not go.exists():
        time.sleep(0.05)
    t1 = time.perf_counter()
    total = sum(f.result() for f in futures)
    drain_s = time.perf_counter() - t1
    print("GRAPH " + json.dumps({"tasks": n1 - n0, "rss_before": rss0, "rss_queued": rss1, "submit_s": submit_s,
                                 "drain_s": drain_s, "ok": total == m * 4096}), flush=True)
    probe.close()

graph.with_options(task_runner=DaskTaskRunner(address=address))("/survey/work", ScoreJob())
"""


def _scheduler_state(dask_scheduler):
    import psutil

    return len(dask_scheduler.tasks), psutil.Process().memory_info().rss


def graph_benchmark(n: int, m: int, env: dict, senv: dict | None, root: Path, say) -> dict:
    """Scheduler memory per queued task and task throughput, plain Dask and Prefect-on-Dask."""
    import pickle

    from distributed import Client

    from infra.server import stop_process
    from seti_auditor.score_archive import ScoreJob

    out: dict = {}
    procs = []
    quiet = {**(senv or env), "DASK_LOGGING__DISTRIBUTED": "warning"}  # no log line per task

    def start_scheduler(name: str) -> str:
        sched_file = root / f"{name}.json"
        with open(root / f"{name}.log", "wb") as log:
            procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_scheduler", "--host",
                                           "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                                           str(sched_file)], env=quiet, stdout=log, stderr=subprocess.STDOUT))
        while not sched_file.exists():
            time.sleep(0.1)
        return json.loads(sched_file.read_text())["address"]

    def stop(p: subprocess.Popen) -> None:
        stop_process(p)
        procs.remove(p)

    try:
        address = start_scheduler("graph-scheduler-memory")

        def start_worker(name: str) -> subprocess.Popen:
            with open(root / f"graph-{name}.log", "wb") as log:
                p = subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "2",
                                      "--no-dashboard", "--name", name], env=quiet, stdout=log,
                                     stderr=subprocess.STDOUT)
            procs.append(p)
            return p

        job = ScoreJob()
        args = ("/survey/work", 0, 4096, job, "0123456789abcdef")
        out["args_pickled_bytes"] = len(pickle.dumps(args))
        say(f"[overhead] graph: {n} plain Dask tasks on a real scheduler")
        def submit(client, a0: int, a1: int):
            k = a1 - a0
            return client.map(_noop, ["/survey/work"] * k, [a * 4096 for a in range(a0, a1)],
                              [(a + 1) * 4096 for a in range(a0, a1)], [job] * k, ["0123456789abcdef"] * k,
                              pure=False)

        def queued(client, count: int):
            while (state := client.run_on_scheduler(_scheduler_state))[0] < count:
                time.sleep(0.2)
            return state

        with Client(address) as client:
            n0, rss0 = client.run_on_scheduler(_scheduler_state)
            first = max(1, n // 5)
            t0 = time.perf_counter()
            futures = submit(client, 0, first)
            n1, rss1 = queued(client, n0 + first)
            futures += submit(client, first, n)
            submit_s = time.perf_counter() - t0
            n2, rss2 = queued(client, n0 + n)
        stop(procs[0])  # a fresh scheduler for the throughput: cancelling n tasks takes long
        address = start_scheduler("graph-scheduler-throughput")
        with Client(address) as client:
            worker = start_worker("graph-dask")
            k = min(n, 5000)  # throughput on a batch small enough to drain quickly
            client.wait_for_workers(1, timeout=120)
            t1 = time.perf_counter()
            total = sum(client.gather(submit(client, 0, k)))
            drain_s = time.perf_counter() - t1
            out["dask"] = {"tasks": n2 - n0, "submit_s": submit_s, "drain_s": drain_s, "ok": total == k * 4096,
                           "bytes_per_task": (rss2 - rss0) / max(1, n2 - n0),
                           "marginal_bytes_per_task": (rss2 - rss1) / max(1, n2 - n1),
                           "tasks_per_s": k / drain_s}
            stop(worker)
        if m and senv is not None:
            say(f"[overhead] graph: {m} Prefect tasks through DaskTaskRunner")
            marker, go = root / "graph-queued", root / "graph-go"
            code = root / "graph_prefect.py"
            code.write_text(GRAPH_PREFECT_CODE)
            child = subprocess.Popen([sys.executable, str(code), address, str(m), str(marker), str(go)], env=senv,
                                     cwd=str(root), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            while not marker.exists() and child.poll() is None:
                time.sleep(0.2)
            start_worker("graph-prefect")
            go.write_text("go")
            text, _ = child.communicate(timeout=3600)
            line = next((x for x in text.splitlines() if x.startswith("GRAPH ")), None)
            if line is None:
                out["prefect"] = {"error": text[-2000:]}
            else:
                g = json.loads(line[6:])
                g["bytes_per_task"] = (g["rss_queued"] - g["rss_before"]) / max(1, g["tasks"])
                g["tasks_per_s"] = m / g["drain_s"]
                out["prefect"] = g
    finally:
        for p in reversed(list(procs)):
            stop(p)
    return out


def print_report(res: dict) -> None:
    b, a = res["bare"], res.get("cli", {"flows_s": {}})
    print(f"archive: {res['archive']['files']} files, {res['archive']['mb']:.1f} MB; "
          f"seti-auditor run {' '.join(res['cli_args']) or '(defaults)'}; reps {res['reps']} (best of each)")
    print(f"{'':34s}{'wall s':>9s}{'ratio':>8s}")
    print(f"{'bare functions in a loop':34s}{b['wall_s']:9.1f}{1.0:8.2f}")
    if "cli" in res:
        print(f"{'seti-auditor run (ephemeral API)':34s}{a['wall_s']:9.1f}{res['ratio_cli']:8.2f}")
    if "server" in res:
        print(f"{'seti-auditor run (Prefect server)':34s}{res['server']['wall_s']:9.1f}{res['ratio_server']:8.2f}")
    if "warm" in res:
        print(f"{'  ... and a warm Dask cluster':34s}{res['warm']['wall_s']:9.1f}{res['ratio_warm']:8.2f}")
    st = res["startup"]
    print("start-up (measured apart):")
    print(f"  bare: interpreter + imports {b['times']['startup_s']:.1f} s (imports {b['times']['imports_s']:.1f} s)")
    for key, label in (("cold", "CLI, fresh PREFECT_HOME (creates the database)"), ("warm", "CLI, ephemeral API"),
                       ("server", "CLI, against the running server")):
        if key in st:
            s = st[key]
            print(f"  {label}: {s['wall_s']:.1f} s = imports {s['imports_s']:.1f} + waiting for the API "
                  f"{s.get('api_wait_s', 0.0):.1f} + Dask cluster {s['dask_cluster_s']:.1f} + empty flow "
                  f"{s['empty_flow_s']:.1f} (+ interpreter, exit)")
    if "server_start_s" in res:
        print(f"  Prefect server (seti-auditor ui) until healthy: {res['server_start_s']:.1f} s (paid once)")
    if "ratio_cli_no_startup" in res or "ratio_server_no_startup" in res:
        print("ratio without start-up (wall - start-up on both sides): " + ", ".join(
            f"{label} {res[key]:.2f}" for key, label in (("ratio_cli_no_startup", "ephemeral"),
                                                         ("ratio_server_no_startup", "server")) if key in res))
    print("where the time goes (s):")
    t = b["times"]
    print(f"  {'step':10s}{'bare':>8s}{'flow (ephemeral)':>18s}{'flow (server)':>15s}{'flow (warm)':>13s}")
    for step, key in (("ingest", "ingest_s"), ("train", "train_s"), ("score", "score_s"), ("run", "work_s")):
        fa = a["flows_s"].get(step, float("nan"))
        fs = res.get("server", {}).get("flows_s", {}).get(step, float("nan"))
        fw = res.get("warm", {}).get("flows_s", {}).get(step, float("nan"))
        print(f"  {step if step != 'run' else 'run (all)':10s}{t[key]:8.1f}{fa:18.1f}{fs:15.1f}{fw:13.1f}")
    print(f"  score split (bare): regions {t['score_regions_s']:.1f}, FDR + cadence test + line search + catalog "
          f"{t['fdr_cadence_catalog_s']:.1f}, plots {t['plots_s']:.1f}")
    tp = res["throughput"]
    print(f"bare step throughput (one process, serial): ingest {tp['ingest_mb_s']:.1f} MB/s "
          f"({tp['ingest_mb_per_cpu_s']:.1f} MB per CPU second); scoring {tp['score_tiles_s']:.0f} tiles/s "
          f"({tp['score_tiles_per_cpu_s']:.0f} per CPU second; {tp['tiles']} tiles, model load and compilation "
          f"included); training {t['train_s']:.1f} s ({t['train_cpu_s']:.1f} CPU s)")
    print(f"catalogs identical across variants: {res['catalogs_identical']} ({res['n_candidates']} candidates)")
    if res.get("graph"):
        print_report_graph(res)


def print_report_graph(res: dict) -> None:
    """The --graph section alone."""
    g = res["graph"]
    print(f"real dask scheduler, tasks shaped like score tasks (arguments pickle to {g['args_pickled_bytes']} B):")
    for key, label in (("dask", "plain Dask"), ("prefect", "Prefect tasks (DaskTaskRunner)")):
        if key in g and "error" not in g[key]:
            x = g[key]
            marginal = (f" (the last 80%: {x['marginal_bytes_per_task'] / 1024:.1f} KiB)"
                        if "marginal_bytes_per_task" in x else "")
            print(f"  {label}: {x['tasks']} tasks queued: scheduler +{x['bytes_per_task'] / 1024:.1f} KiB per task"
                  f"{marginal}; submitted in {x['submit_s']:.1f} s; one worker (2 threads) ran "
                  f"{x['tasks_per_s']:.0f} tasks/s")
        elif key in g:
            print(f"  {label}: failed: {g[key]['error'][-300:]}")


def main(argv: list[str] | None = None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["--bare"]:
        archive, work, *cli_args = argv[1:]
        print(json.dumps(run_bare(archive, work, cli_args)))
        gc.freeze()  # the CLI's exit (flows.cli.entry): the two differ by their orchestration, not their shutdown
        return 0
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cadences", type=int, default=2, help="ABACAD cadences of the archive (default 2: the demo's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--nfpc", type=int, help="fine channels per coarse channel of the archive (default: the demo's)")
    p.add_argument("--variants", default="bare,cli,server,warm",
                   help="comma-separated subset of bare,cli,server,warm (default all; bare alone gives step "
                        "throughputs)")
    p.add_argument("--epochs", type=int, help="training epochs (default: the CLI's)")
    p.add_argument("--reps", type=int, default=1, help="interleaved repetitions of each variant (best is kept)")
    p.add_argument("--no-server", action="store_true", help="skip the variant against a running Prefect server")
    p.add_argument("--graph", type=int, default=0, metavar="N",
                   help="also measure a real scheduler's memory and throughput with N plain Dask tasks")
    p.add_argument("--graph-prefect", type=int, default=0, metavar="M",
                   help="... and with M Prefect tasks (needs the server variant)")
    p.add_argument("--graph-only", action="store_true", help="only the --graph measurements")
    p.add_argument("--workdir", help="parent of the temporary directory (never inside the repository)")
    p.add_argument("--keep", action="store_true", help="keep the temporary directory")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    args = p.parse_args(argv)
    parent = Path(args.workdir).resolve() if args.workdir else None
    if parent is not None and (parent == REPO or REPO in parent.parents):
        raise SystemExit(f"--workdir {parent} is inside the repository; choose a directory outside it")
    cli_args = ["--epochs", str(args.epochs)] if args.epochs else []
    root = Path(tempfile.mkdtemp(prefix="seti-overhead-", dir=parent))
    say = (lambda *a: None) if args.json else (lambda *a: print(*a, file=sys.stderr, flush=True))
    pythonpath = os.pathsep.join(x for x in (str(REPO), os.environ.get("PYTHONPATH", "")) if x)
    env = {**os.environ, "PYTHONPATH": pythonpath, "PREFECT_HOME": str(root / "prefect-home"),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180"}
    env.pop("PREFECT_API_URL", None)
    server = None
    dask_procs: list[subprocess.Popen] = []
    try:
        sys.path.insert(0, str(REPO))
        from seti_auditor.archive import write_synthetic_archive

        archive = root / "archive"
        from seti_auditor.synth import ObsConfig, SynthConfig

        config = None
        if args.nfpc:  # cadences on bands far enough apart for the wider files
            band = args.nfpc * ObsConfig().n_coarse * abs(ObsConfig().foff_mhz)
            config = SynthConfig(obs=ObsConfig(nfpc=args.nfpc, band_step_mhz=max(1.0, 1.25 * band)))
        write_synthetic_archive(archive, cadences=args.cadences, seed=args.seed, config=config)
        files = [f for f in archive.iterdir() if f.suffix in (".fil", ".h5")]
        for f in files:  # into the page cache, like every later read
            f.read_bytes()
        res: dict = {"archive": {"files": len(files), "mb": sum(f.stat().st_size for f in files) / 1e6},
                     "cli_args": cli_args, "reps": args.reps, "startup": {}}
        wanted = set(args.variants.split(","))
        if not wanted <= {"bare", "cli", "server", "warm"} or "bare" not in wanted:
            raise SystemExit(f"--variants {args.variants!r}: a subset of bare,cli,server,warm that includes bare")
        if not wanted & {"server", "warm"}:
            args.no_server = args.no_server or not args.graph_prefect
        if not args.graph_only and wanted != {"bare"}:
            say("[overhead] start-up, fresh PREFECT_HOME")
            res["startup"]["cold"] = startup(env, root, root / "startup-cold.log")
            say("[overhead] start-up, warm")
            res["startup"]["warm"] = startup(env, root, root / "startup-warm.log")
        best: dict = {}

        def repeat(variants: list) -> None:  # interleaved repetitions, the best wall time of each variant kept
            for rep in range(args.reps):
                for name, fn, e, a in variants:
                    work = root / f"work-{name}-{rep}"
                    say(f"[overhead] rep {rep + 1}/{args.reps}: {name}")
                    r = fn(archive, work, a, e, root / f"{name}-{rep}.log")
                    r["workdir"] = str(work)
                    if name not in best or r["wall_s"] < best[name]["wall_s"]:
                        best[name] = r

        # the command as a user types it, beside the bare loop, before the benchmark starts its own server and
        # cluster: idle, those use ~11 % of a core, and the command's threads would compete with them
        if not args.graph_only:
            repeat([("bare", run_bare_child, env, cli_args)] + ([("cli", run_cli, env, cli_args)] if "cli" in wanted else []))
        senv = None
        if not args.no_server:
            say("[overhead] starting a Prefect server")
            senv = {**env, "PREFECT_HOME": str(root / "prefect-server-home")}
            server, url, res["server_start_s"] = start_server(senv, root, root / "server.log")
            senv["PREFECT_API_URL"] = url
            if not args.graph_only and "server" in wanted:
                res["startup"]["server"] = startup(senv, root, root / "startup-server.log")
        if args.graph:
            res["graph"] = graph_benchmark(args.graph, args.graph_prefect, env, senv, root, say)
        if args.graph_only:
            print(json.dumps(res, default=str)) if args.json else print_report_graph(res)
            return 0
        if senv and "server" in wanted:
            repeat([("server", run_cli, senv, cli_args)])
        if senv and "warm" in wanted:
            say("[overhead] warm: starting a Dask cluster and running once, untimed")
            address, dask_procs = start_dask(senv, root, max(1, os.cpu_count() or 1))
            warm_args = [*cli_args, "--dask-address", address]
            run_cli(archive, root / "work-warmup", warm_args, senv, root / "warmup.log")
            repeat([("warm", run_cli, senv, warm_args)])
        res.update(best)
        rows = {name: catalog_rows(Path(r["workdir"])) for name, r in best.items()}
        res["catalogs_identical"] = all(v == rows["bare"] for v in rows.values())
        res["n_candidates"] = len(rows["bare"])
        b = best["bare"]
        t = b["times"]
        res["throughput"] = {"ingest_mb_s": res["archive"]["mb"] / t["ingest_s"],
                             "ingest_mb_per_cpu_s": res["archive"]["mb"] / t["ingest_cpu_s"],
                             "score_tiles_s": b["score"]["tiles"] / t["score_regions_s"],
                             "score_tiles_per_cpu_s": b["score"]["tiles"] / t["score_regions_cpu_s"],
                             "tiles": b["score"]["tiles"]}
        bare_work = b["wall_s"] - t["startup_s"]
        if "cli" in best:
            res["ratio_cli"] = best["cli"]["wall_s"] / b["wall_s"]
            res["ratio_cli_no_startup"] = (best["cli"]["wall_s"] - res["startup"]["warm"]["wall_s"]) / bare_work
        if "server" in best:
            res["ratio_server"] = best["server"]["wall_s"] / b["wall_s"]
            res["ratio_server_no_startup"] = (best["server"]["wall_s"] - res["startup"]["server"]["wall_s"]) / bare_work
        if "warm" in best:
            res["ratio_warm"] = best["warm"]["wall_s"] / b["wall_s"]
        res["machine"] = {"cpus": os.cpu_count(), "load_avg_1m_end": os.getloadavg()[0]}
        if args.json:
            print(json.dumps(res, default=str))
        else:
            print_report(res)
    finally:
        from infra.server import stop_process

        for proc in [*reversed(dask_procs), *([server] if server is not None else [])]:
            stop_process(proc)
        if args.keep:
            say(f"[overhead] kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
