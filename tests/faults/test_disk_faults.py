"""A work directory on a full file system, and on a read-only one (a real tmpfs; needs root)."""

from __future__ import annotations

import contextlib
import errno
import shutil
import subprocess

import numpy as np
import pytest

from seti_auditor import ingest, modeldir, tilestore
from seti_auditor.archive import write_synthetic_archive
from seti_auditor.synth import ObsConfig, SynthConfig
from tests.faults.support import TILING, catalog_groups, copy_workdir, read_every_chunk


@contextlib.contextmanager
def tmpfs(path, size_bytes: int):
    """A tmpfs of ``size_bytes`` mounted at ``path`` (skips the test where mounting is not allowed)."""
    path.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_bytes}", "tmpfs", str(path)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _du(path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def _snapshot(work) -> dict:
    return {"manifest": tilestore.load_manifest(tilestore.store_path(work)),
            "tiles": read_every_chunk(tilestore.store_path(work)),
            "catalog": catalog_groups(work), "model": modeldir.read_meta(work)["model_version"]}


def _assert_intact(work, before: dict) -> None:
    """Earlier outputs unchanged: the old manifest rows, the old tiles, the catalog, the model."""
    manifest = tilestore.load_manifest(tilestore.store_path(work))
    old = before["manifest"]
    assert manifest.iloc[: len(old)].drop(columns="stat_key").equals(old.drop(columns="stat_key"))
    n = before["tiles"]["tiles"].shape[0]
    now = read_every_chunk(tilestore.store_path(work))
    for name, values in before["tiles"].items():
        if not name.startswith("manifest"):
            np.testing.assert_array_equal(now[name][:n], values, err_msg=name)
    groups = catalog_groups(work)
    for name, ds in before["catalog"].items():
        assert ds.identical(groups[name]), name
    assert modeldir.load_current(work)[2]["model_version"] == before["model"]


def _extra_archive(tmp_path, trained):
    """The fixture's archive plus one more cadence (another day, another seed)."""
    archive = tmp_path / "archive"
    shutil.copytree(trained.archive, archive)
    write_synthetic_archive(archive / "day2", cadences=1, seed=21,
                            config=SynthConfig(obs=ObsConfig(mjd_start=60010.0)))
    return archive


def test_full_disk_gives_a_clear_error_and_keeps_earlier_outputs(tmp_path, trained, thread_runner):
    """Injects: ingesting a new cadence into a workdir on a tmpfs with ~150 kB left (ENOSPC on the first
    tile chunk, 256 kB).

    Must hold: the failure names ENOSPC (the flow raises it, or each new file is rejected with a
    transient reason saying "No space left on device"); the earlier manifest rows, tiles, catalog and
    model are unchanged; with space freed, the same ingest takes every new file once.
    """
    from flows.ingest import ingest_flow

    archive = _extra_archive(tmp_path, trained)
    size = _du(trained.scored) + (32 << 20)  # room for the new cadence (6.3 MB of tiles) once the filler goes
    with tmpfs(tmp_path / "mnt", size) as mnt:
        work = copy_workdir(trained.scored, mnt / "work")
        before = _snapshot(work)
        free = shutil.disk_usage(mnt).free
        filler = mnt / "filler"
        filler.write_bytes(b"\0" * (free - 150_000))
        try:
            summary = ingest_flow.with_options(task_runner=thread_runner())(str(archive), str(work), tiling=TILING)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC, exc
        else:
            new = {k: v for k, v in summary.rejected.items()}
            assert len(new) == 6 and summary.ingested == [], summary
            assert all(r.startswith(ingest.TRANSIENT) and "No space left on device" in r for r in new.values()), new
        _assert_intact(work, before)

        filler.unlink()
        again = ingest_flow.with_options(task_runner=thread_runner())(str(archive), str(work), tiling=TILING)
        assert len(again.ingested) == 6 and len(again.unchanged) == 6 and not again.rejected
        ds = tilestore.open_tiles(tilestore.store_path(work)).load()
        counts = ds.source_file.values[ds.valid.values]
        names, per_file = np.unique(counts, return_counts=True)
        assert len(names) == 12 and (per_file == 64).all()  # every file once, no orphan counted twice
        _assert_intact(work, before)


def test_read_only_workdir_gives_a_clear_error_and_keeps_earlier_outputs(tmp_path, trained, thread_runner):
    """Injects: a run of the ingest flow on a workdir whose file system is remounted read-only.

    Must hold: it fails at once with EROFS naming the workdir (before any work), and every earlier
    output still reads the same.
    """
    from flows.ingest import ingest_flow

    archive = _extra_archive(tmp_path, trained)
    with tmpfs(tmp_path / "mnt", _du(trained.scored) + (4 << 20)) as mnt:
        work = copy_workdir(trained.scored, mnt / "work")
        before = _snapshot(work)
        subprocess.run(["mount", "-o", "remount,ro", str(mnt)], check=True)
        try:
            with pytest.raises(OSError) as info:
                ingest_flow.with_options(task_runner=thread_runner())(str(archive), str(work), tiling=TILING)
            assert info.value.errno == errno.EROFS and str(work) in str(info.value)
            _assert_intact(work, before)
        finally:
            subprocess.run(["mount", "-o", "remount,rw", str(mnt)], check=True)


def test_a_refusing_file_system_is_not_retried_and_other_failures_are():
    """The tasks' retry condition: ENOSPC / EROFS / EDQUOT (also as the cause of another error) fail at once."""
    from prefect.states import Failed

    from tasks.retries import retry_unless_disk_refuses

    def state(exc):
        return Failed(data=exc)

    full = OSError(errno.ENOSPC, "No space left on device")
    assert not retry_unless_disk_refuses(None, None, state(full))
    assert not retry_unless_disk_refuses(None, None, state(OSError(errno.EROFS, "Read-only file system")))
    try:
        try:
            raise full
        except OSError as inner:
            raise RuntimeError("writing the region failed") from inner
    except RuntimeError as outer:
        assert not retry_unless_disk_refuses(None, None, state(outer))
    assert retry_unless_disk_refuses(None, None, state(OSError(errno.EIO, "I/O error")))
    assert retry_unless_disk_refuses(None, None, state(ConnectionError("worker lost")))
