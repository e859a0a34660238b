"""Shared fixtures: a private Prefect home, one real Prefect server per session, small archives."""

from __future__ import annotations

import os
import tempfile

# Before Prefect is imported anywhere: a private home (never ~/.prefect or the repo), no telemetry.
os.environ["PREFECT_HOME"] = tempfile.mkdtemp(prefix="seti-auditor-prefect-")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="seti-auditor-hypothesis-"))
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """The session's one Prefect server: ``seti-auditor ui`` on a free loopback port; yields its API URL.

    Its home and SQLite database live in a temporary directory. ``PREFECT_API_URL`` is set in
    ``os.environ`` (inherited by subprocesses: Dask worker processes, ``prefect worker``, the
    CLI) and in Prefect's settings of this process, so flows here report to it too.
    """
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL, temporary_settings

    from infra.server import free_port, stop_process, wait_healthy

    home = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    with open(home / "server.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "ui", "--port", str(port)], env=env,
                                stdout=log, stderr=subprocess.STDOUT)
    before = os.environ.get("PREFECT_API_URL")
    try:
        try:
            wait_healthy(url, timeout_s=240, alive=lambda: proc.poll() is None)
        except (RuntimeError, TimeoutError) as exc:
            raise RuntimeError(f"{exc}; its log:\n{(home / 'server.log').read_text()[-4000:]}") from None
        os.environ["PREFECT_API_URL"] = url
        with temporary_settings({PREFECT_API_URL: url}):
            yield url
    finally:
        os.environ.pop("PREFECT_API_URL", None)
        if before is not None:
            os.environ["PREFECT_API_URL"] = before
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=30, at_exit=False)  # the session's last logs, while the server is up
        EventsWorker.drain_all(timeout=30, at_exit=False)
        stop_process(proc)


@pytest.fixture(scope="session")
def ui_demo(prefect_server, tmp_path_factory):
    """``seti-auditor demo`` (one cadence, 3 epochs) run once against ``prefect_server``, as a user would.

    Returns its work directory and its terminal output. With a server set, the CLI's Dask
    workers are processes (infra.runtime), so this is the real multi-process path.
    """
    import subprocess
    import sys

    work = tmp_path_factory.mktemp("ui") / "ui-demo"
    out = subprocess.run([sys.executable, "-m", "flows.cli", "demo", "--workdir", str(work), "--cadences", "1",
                          "--epochs", "3", "--workers", "2"], capture_output=True, text=True, timeout=900,
                         env={**os.environ, "PREFECT_LOGGING_LEVEL": "INFO"})  # INFO: the progress lines
    assert out.returncode == 0, f"demo exited {out.returncode}:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return {"work": work, "stdout": out.stdout + out.stderr}


@pytest.fixture(scope="session")
def prefect_harness(prefect_server):
    """Flow tests report to the session's one Prefect server (see ``prefect_server``)."""
    yield prefect_server


@pytest.fixture(scope="session")
def thread_runner():
    """A real Dask ``LocalCluster`` of two thread workers (see infra.runtime for why threads)."""
    from infra.runtime import ClusterConfig, make_task_runner

    return lambda: make_task_runner(ClusterConfig(workers=2, processes=False))
