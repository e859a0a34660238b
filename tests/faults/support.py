"""Shared helpers of the fault tests: small archives, the run driver as a subprocess, comparisons."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import xarray as xr
import zarr

from seti_auditor import catalog
from seti_auditor.cadence_search import LineSearchConfig
from seti_auditor.score_archive import ScoreJob
from seti_auditor.tiling import TilingConfig
from seti_auditor.training import TrainJob

REPO = Path(__file__).resolve().parents[2]
TILING = TilingConfig(chunk_tiles=16, channels_per_task=4096)  # 4 ingest regions per file, 24 chunks in all
# one chunk per score task (24 tasks); no cadence line search: these tests are about faults, not the search
JOB = ScoreJob(tiles_per_task=16, n_plots=0, lines=LineSearchConfig(enabled=False))
TRAIN = TrainJob(epochs=2)  # few epochs: the faults, not the model, are under test


def copy_workdir(src: Path, dst: Path) -> Path:
    """A private copy of a fixture workdir (the ``W/model`` link stays relative), without its lock file."""
    shutil.copytree(src, dst, symlinks=True)
    (dst / ".lock").unlink(missing_ok=True)
    return dst


def start_driver(archive: Path, workdir: Path, log: Path, *args: str, env: dict | None = None) -> subprocess.Popen:
    """``python -m tests.faults.run_driver ARCHIVE --workdir W ...`` in its own process."""
    cmd = [sys.executable, "-m", "tests.faults.run_driver", str(archive), "--workdir", str(workdir), *args]
    with open(log, "ab") as fh:
        return subprocess.Popen(cmd, cwd=REPO, env={**os.environ, **(env or {})}, stdout=fh, stderr=subprocess.STDOUT)


def finish(proc: subprocess.Popen, log: Path, timeout: float = 600) -> dict:
    """Wait for a driver to end successfully; its JSON summary."""
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"driver still running after {timeout} s; log tail:\n"
                             f"{log.read_text(errors='replace')[-4000:]}") from None
    text = log.read_text(errors="replace")
    assert rc == 0, f"driver exited {rc}; log tail:\n{text[-4000:]}"
    return json.loads(text.strip().splitlines()[-1])


def kill_when(proc: subprocess.Popen, log: Path, ready, what: str, timeout: float = 600, poll: float = 0.005) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true (polled); fail if it ends first."""
    deadline = time.monotonic() + timeout
    while not ready():
        if proc.poll() is not None:
            raise AssertionError(f"the run ended (rc {proc.returncode}) before {what}; log tail:\n"
                                 f"{log.read_text(errors='replace')[-4000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def catalog_groups(workdir: Path) -> dict[str, xr.Dataset]:
    """The current catalog's three nodes, without attributes (run ids and times differ between runs)."""
    return {g or "root": catalog.open_catalog(workdir, group=g).drop_attrs() for g in (None, "rfi", "rejected")}


def assert_same_catalog(a: Path, b: Path) -> None:
    ga, gb = catalog_groups(a), catalog_groups(b)
    for name in ga:
        xr.testing.assert_identical(ga[name], gb[name])


def read_every_chunk(store: Path) -> dict[str, np.ndarray]:
    """Every array of a Zarr store read whole (a torn chunk would fail to decode here)."""
    out = {}

    def visit(group: zarr.Group, prefix: str) -> None:
        for name, node in group.members():
            if isinstance(node, zarr.Group):
                visit(node, f"{prefix}{name}/")
            else:
                out[prefix + name] = np.asarray(node[...])

    visit(zarr.open_group(str(store), mode="r"), "")
    return out


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray], skip: tuple[str, ...] = ()) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        if name in skip:
            continue
        x, y = a[name], b[name]
        if x.dtype.kind in "fc":
            np.testing.assert_array_equal(x, y, err_msg=name)
        else:
            assert x.shape == y.shape and (x == y).all(), name


def chunk_mtimes(array_dir: Path) -> dict[str, int]:
    """mtime (ns) of every chunk file of one Zarr v3 array directory."""
    root = array_dir / "c"
    if not root.is_dir():
        return {}
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
