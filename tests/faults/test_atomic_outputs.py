"""Writers of the catalog, the training checkpoints and the models, SIGKILLed in the middle of a write."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pandas as pd
import pytest

from seti_auditor import catalog, modeldir
from tests.faults.support import REPO

# a hook on a rename function that SIGKILLs this process right before (or after) the rename matching ``cond``
KILL_AT_RENAME = """
import os, signal
_real = {fn}
def _hooked(src, dst, *a, **k):
    if {cond} and not {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    out = _real(src, dst, *a, **k)
    if {cond} and {after}:
        os.kill(os.getpid(), signal.SIGKILL)
    return out
{fn} = _hooked
"""


def _python(code: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _events(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(n)
    return pd.DataFrame({"source_file": [f"f{i}.fil" for i in range(n)], "score": rng.random(n),
                         "tile_first": np.arange(n, dtype=np.int64), "peak_freq_mhz": 1400 + rng.random(n)})


WRITE_VERSIONS = """
import sys, numpy as np, pandas as pd
from seti_auditor.catalog import write_catalog
from tests.faults.test_atomic_outputs import _events
work = sys.argv[1]
for i in range(1, 10**6):
    n = 5000 + 37 * (i % 50)
    write_catalog(work, _events(n), _events(3), _events(0), attrs={"n": n}, model_version=f"v{i % 5}")
    print(i, flush=True)
"""


def _check_catalog(work) -> str:
    """The current catalog and every listed version open whole and are self-consistent."""
    cur = catalog.open_catalog(work)
    assert cur.sizes["candidate"] == cur.attrs["n"]
    np.testing.assert_array_equal(cur["score"].values, _events(cur.attrs["n"])["score"].values)
    for v in catalog.list_versions(work):
        old = catalog.open_catalog(work, v)
        assert old.sizes["candidate"] == old.attrs["n"] and old.attrs["model_version"] == v
    return cur.attrs["model_version"]


def test_catalog_writer_killed_at_random_times(tmp_path):
    """Injects: SIGKILL of a process publishing catalog versions in a loop, at three different moments.

    Must hold: after each kill the current catalog and every listed version open whole (row count
    and values match what was written for them), and the next write clears what the killed writer
    left and publishes normally.
    """
    work = tmp_path / "w"
    rng = np.random.default_rng(0)
    for trial in range(3):
        proc = _python(WRITE_VERSIONS, work)
        for line in proc.stdout:  # at least one more publish completed in this trial
            if line.strip().isdigit():
                break
        time.sleep(float(rng.uniform(0.0, 0.4)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        _check_catalog(work)
    catalog.write_catalog(work, _events(5), _events(1), _events(0), attrs={"n": 5}, model_version="final")
    assert _check_catalog(work) == "final"
    assert sorted(os.listdir(work)) == ["catalog.zarr"]


def test_readers_see_whole_versions_while_a_writer_publishes(tmp_path):
    """Injects: a process publishing catalog versions back to back while this one reads the catalog 40 times.

    Must hold: every read is one whole version (row count and values as written for its ``n``),
    never a mix of two or a partial one.
    """
    work = tmp_path / "w"
    catalog.write_catalog(work, _events(5), _events(1), _events(0), attrs={"n": 5}, model_version="v0")
    proc = _python(WRITE_VERSIONS, work)
    try:
        for line in proc.stdout:
            if line.strip().isdigit():
                break
        seen = {_check_catalog(work) for _ in range(40)}
    finally:
        proc.kill()
        proc.wait()
    assert len(seen) > 1  # the reads did overlap publishes


def test_catalog_writer_killed_between_its_two_renames(tmp_path):
    """Injects: SIGKILL of the writer right after it moved the current store aside and before it renamed the
    new one into place (the one instant when no store exists), via a hook on ``os.rename``.

    Must hold: readers still get the old version whole (from the writer's trash); the new version is
    absent; the next write restores the old store first, so no version is lost from the history.
    """
    work = tmp_path / "w"
    catalog.write_catalog(work, _events(7), _events(1), _events(0), attrs={"n": 7}, model_version="v1")
    code = KILL_AT_RENAME.format(fn="os.rename", cond="'.old-' in str(dst)", after=True) + """
import sys
from seti_auditor.catalog import write_catalog
from tests.faults.test_atomic_outputs import _events
write_catalog(sys.argv[1], _events(9), _events(1), _events(0), attrs={"n": 9}, model_version="v2")
"""
    proc = _python(code, work)
    proc.wait(timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    assert not (work / "catalog.zarr").exists()
    assert _check_catalog(work) == "v1"  # falls back to the trash: the previous complete store
    catalog.write_catalog(work, _events(11), _events(1), _events(0), attrs={"n": 11}, model_version="v3")
    assert _check_catalog(work) == "v3" and catalog.list_versions(work) == ["v1", "v3"]
    assert sorted(os.listdir(work)) == ["catalog.zarr"]


SAVE_STEPS = """
import sys, numpy as np
from vae.checkpoint import TrainCheckpointer
ck = TrainCheckpointer(sys.argv[1], keep=2)
for step in range((ck.latest_step() or 0) + 1, 10**6):  # as training resumes: after the latest step
    ck.save(step, {"w": np.full(2_000_000, step, np.float32), "step": np.full(1, step, np.int32)})
    print(step, flush=True)
"""


def test_training_checkpointer_killed_at_random_times(tmp_path):
    """Injects: SIGKILL of a process saving orbax training checkpoints (8 MB each) in a loop, at three moments.

    Must hold: the latest step listed always restores whole (every value equals its step); an
    unfinished step is never listed. Each new process continues after the latest step, as training
    resumes (one that restarted at step 1 made the manager delete the *newer* steps as the oldest
    by number, and a kill during that deletion left a half-deleted step listed as the latest).
    """
    from vae.checkpoint import TrainCheckpointer

    folder = tmp_path / "ck"
    rng = np.random.default_rng(1)
    target = {"w": np.zeros(2_000_000, np.float32), "step": np.zeros(1, np.int32)}
    for trial in range(3):
        proc = _python(SAVE_STEPS, folder)
        for line in proc.stdout:
            if line.strip().isdigit() and int(line) >= 2:
                break
        time.sleep(float(rng.uniform(0.0, 0.3)))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        ck = TrainCheckpointer(folder)
        step = ck.latest_step()
        state = ck.restore(step, target)
        ck.close()
        assert int(state["step"][0]) == step and (np.asarray(state["w"]) == step).all()


PUBLISH = """
import sys, numpy as np
from seti_auditor import modeldir
from vae.config import preset
from vae.model import build
cfg = preset("default", (16, 64), channels=(4, 8, 8), latent=4)
null = {"tile": np.arange(4), "score": np.ones((4, 2), np.float32), "freq_mhz": np.full(4, 1400.0)}
print(modeldir.publish(sys.argv[1], build(cfg, int(sys.argv[2])), cfg, selection=None, calibration=None,
                       extra={}, null_scores=null), flush=True)
"""


@pytest.mark.parametrize("moment", ["model directory", "current link"])
def test_model_publish_killed(tmp_path, moment):
    """Injects: SIGKILL of a process publishing a second model, right before it renames the finished model
    directory into ``W/models/`` or right before it swaps the ``W/model`` link (hooks on ``os.replace``).

    Must hold: ``W/model`` is still the first model and loads whole; the next publish removes the
    half-made directory and makes the second model current.
    """
    work = tmp_path / "w"
    first = _python(PUBLISH, work, 0)
    first.wait(timeout=300)
    v1 = first.stdout.read().strip().splitlines()[-1]
    cond = "'.tmp-' in str(src) and 'models' in str(dst)" if moment == "model directory" else \
        "str(dst).endswith('/model')"
    proc = _python(KILL_AT_RENAME.format(fn="os.replace", cond=cond, after=False) + PUBLISH, work, 1)
    proc.wait(timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stdout.read()
    assert modeldir.read_meta(work)["model_version"] == v1
    _, _, meta, null = modeldir.load_current(work)
    assert meta["model_version"] == v1 and null["score"].shape == (4, 2)
    again = _python(PUBLISH, work, 1)
    again.wait(timeout=300)
    v2 = again.stdout.read().strip().splitlines()[-1]
    assert v2 != v1 and modeldir.read_meta(work)["model_version"] == v2
    assert not list((work / "models").glob(".tmp-*"))
    assert sorted(p.name for p in (work / "models").iterdir()) == sorted([v1, v2])
