"""Fixtures of the fault tests: one small archive, ingested, trained and scored once per session."""

from __future__ import annotations

import shutil
import types

import pytest

from seti_auditor.archive import write_synthetic_archive
from tests.faults.support import JOB, TILING, TRAIN


@pytest.fixture(scope="session")
def trained(tmp_path_factory, prefect_server, thread_runner):
    """A one-cadence archive (6 files, 384 tiles) and two workdirs: ``unscored`` (tiles and model)
    and ``scored`` (the same, then scored with :data:`JOB`: the clean reference). Copy, never modify."""
    from flows.ingest import ingest_flow
    from flows.score import score_flow
    from flows.train import train_flow
    from infra.runtime import task_runner

    root = tmp_path_factory.mktemp("faults-trained")
    archive, scored, unscored = root / "archive", root / "scored", root / "unscored"
    write_synthetic_archive(archive, cadences=1, seed=5)
    ingest_flow.with_options(task_runner=thread_runner())(str(archive), str(scored), tiling=TILING)
    train_flow.with_options(task_runner=task_runner(None))(str(scored), TRAIN)
    shutil.copytree(scored, unscored, symlinks=True)
    summary = score_flow.with_options(task_runner=task_runner(None))(str(scored), JOB)
    return types.SimpleNamespace(archive=archive, scored=scored, unscored=unscored, summary=summary)
