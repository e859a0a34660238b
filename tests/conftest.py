"""Shared fixtures: a private Prefect home, one Prefect test harness per session, small archives."""

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
def prefect_harness():
    """One real Prefect API (temporary database) for every flow test of the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=180):
        yield


@pytest.fixture(scope="session")
def thread_runner():
    """A real Dask ``LocalCluster`` of two thread workers (see infra.runtime for why threads)."""
    from infra.runtime import ClusterConfig, make_task_runner

    return lambda: make_task_runner(ClusterConfig(workers=2, processes=False))
