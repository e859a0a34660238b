"""Two runs started on one workdir at once."""

from __future__ import annotations

import time

import pytest

from seti_auditor.workdir import WorkdirBusyError
from tests.faults.support import JOB, TILING, assert_same_catalog, copy_workdir, finish, start_driver


def test_second_run_on_a_busy_workdir_is_refused_and_the_first_is_unharmed(tmp_path, trained):
    """Injects: a second ``run`` (in this process) on a workdir while a first ``run`` (another process)
    is scoring it.

    Must hold: the second is refused at once with WorkdirBusyError naming the workdir and the first
    run's process; the first completes normally and its catalog equals the clean reference.
    """
    from flows.run import run_flow
    from infra.runtime import task_runner

    work = copy_workdir(trained.unscored, tmp_path / "work")
    log = tmp_path / "first.log"
    first = start_driver(trained.archive, work, log, "--tiles-per-task", str(JOB.tiles_per_task),
                         "--plots", str(JOB.n_plots), "--chunk-tiles", str(TILING.chunk_tiles),
                         "--channels-per-task", str(TILING.channels_per_task))
    lock = work / ".lock"
    deadline = time.monotonic() + 300
    while not (lock.exists() and lock.read_text().strip() == str(first.pid)):
        assert first.poll() is None, f"the first run ended early:\n{log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, "the first run never took the workdir lock"
        time.sleep(0.02)
    with pytest.raises(WorkdirBusyError, match=rf"{work.resolve()}: another seti-auditor run \(pid {first.pid}\)"):
        run_flow.with_options(task_runner=task_runner(None))(str(trained.archive), str(work), tiling=TILING,
                                                              score=JOB)
    summary = finish(first, log)
    assert summary["trained"] is False and len(summary["unchanged"]) == 6
    assert_same_catalog(work, trained.scored)
