"""What the benchmarks share: running a logged child, the CLI's start-up probe, the flow times from Prefect's log.

Imported by the benchmark scripts as a sibling module, before they take this folder off
``sys.path`` (its ``vae.py`` would shadow the ``vae`` package). Standard library only.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

# A child that pays what `seti-auditor run` pays before its first flow does work: the CLI's imports, its
# Prefect API (flows.cli.PrefectApi: a temporary server started at once when PREFECT_API_URL is not set),
# the local Dask cluster, and an empty flow on it. Prints the four durations.
STARTUP_CODE = """
import logging, os, time
t0 = time.perf_counter()
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
from flows import cli  # what the CLI imports first
args = cli.build_parser().parse_args(["run", "archive", "--workdir", "work"])
with cli.PrefectApi(args) as api:  # as flows.cli.main does
    from prefect import flow  # (flows.run, with Prefect, JAX, flax and zarr, came with PrefectApi)
    from infra.runtime import ClusterConfig, dask_cluster, task_runner
    logging.getLogger("distributed").setLevel(logging.WARNING)
    t1 = time.perf_counter()
    api.ready()
    t2 = time.perf_counter()

    @flow(name="noop")
    def noop():
        return 1

    with dask_cluster(ClusterConfig(processes=False if api.temporary else None)) as address:
        t3 = time.perf_counter()
        noop.with_options(task_runner=task_runner(address))()
        t4 = time.perf_counter()
print("STARTUP", t1 - t0, t2 - t1, t3 - t2, t4 - t3)
"""


def run_logged(cmd: list[str], env: dict, cwd: Path, log: Path, label: str,
               timeout_s: float | None = None) -> tuple[float, str]:
    """Run ``cmd``; (wall seconds, stdout + stderr). Both go to ``log``; a failure exits, naming ``label`` and the log."""
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=str(cwd), capture_output=True, text=True, timeout=timeout_s)
    wall = time.perf_counter() - t0
    log.write_text(f"$ {' '.join(cmd)}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-8000:])
        raise SystemExit(f"{label} failed with exit status {proc.returncode} (log: {log})")
    return wall, proc.stdout + "\n" + proc.stderr


def startup_time(env: dict, cwd: Path, timeout_s: float = 600.0) -> dict:
    """Run :data:`STARTUP_CODE`: wall time and its parts (seconds), or ``{"wall_s", "error"}``."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", STARTUP_CODE], env=env, cwd=str(cwd), capture_output=True,
                          text=True, timeout=timeout_s)
    wall = time.perf_counter() - t0
    m = re.search(r"STARTUP (\S+) (\S+) (\S+) (\S+)", proc.stdout)
    if proc.returncode != 0 or not m:
        return {"wall_s": wall, "error": proc.stderr[-500:], "output": proc.stdout + proc.stderr}
    imports, api, cluster, flow = (float(v) for v in m.groups())
    return {"wall_s": wall, "imports_s": imports, "api_wait_s": api, "dask_cluster_s": cluster, "empty_flow_s": flow,
            "output": proc.stdout + proc.stderr}


_TS = re.compile(r"^(\d\d):(\d\d):(\d\d)\.(\d{3}) \| \w+ +\| (.*)$")


def flow_times(log_text: str) -> dict:
    """Seconds of each (sub)flow run, by flow name, from Prefect's log lines ({} when none are found)."""
    starts, out = {}, {}
    for line in log_text.splitlines():
        m = _TS.match(line.strip())
        if not m:
            continue
        h, mi, s, ms, msg = m.groups()
        t = int(h) * 3600 + int(mi) * 60 + int(s) + int(ms) / 1000.0
        b = re.search(r"Beginning (?:sub)?flow run '([^']+)' for flow '([^']+)'", msg)
        if b:
            starts[b.group(1)] = (b.group(2), t)
            continue
        f = re.search(r"Flow run '([^']+)' - Finished in state", msg)
        if f and f.group(1) in starts:
            name, t_start = starts[f.group(1)]
            dt = t - t_start
            out[name] = round(dt + (86400 if dt < 0 else 0), 2)
    return out
