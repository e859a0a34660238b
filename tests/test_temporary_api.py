"""Without a Prefect server, a command starts Prefect's temporary API server first, uses it, and stops it.

These run without the session's server: a fresh ``PREFECT_HOME`` and no ``PREFECT_API_URL``,
as on a fresh machine.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _fresh_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    path = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return {**env, "PREFECT_HOME": str(home), "PYTHONPATH": path, "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
            return resp.status == 200
    except (urllib.error.URLError, OSError):
        return False


def _gone(url: str, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _answers(url):
            return True
        time.sleep(0.2)
    return False


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prefect-home-temporary")


def test_a_command_without_a_server_runs_on_a_temporary_one_and_stops_it(home, tmp_path):
    from seti_auditor import tilestore
    from tests.test_ingest import _cadence

    archive = tmp_path / "archive"
    archive.mkdir()
    _cadence(archive)
    work = tmp_path / "work"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "ingest", str(archive), "--workdir", str(work),
                           "--workers", "1"], env=_fresh_env(home), cwd=tmp_path, capture_output=True, text=True,
                          timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    found = re.search(r"temporary Prefect API at (http://127\.0\.0\.1:\d+/api)", proc.stderr)
    assert found, proc.stderr[-4000:]
    assert "Error logging to API" not in proc.stderr  # logs were sent before the server stopped
    assert not _answers(found.group(1))  # stopped with the command
    assert (home / "prefect.db").exists()  # runs stored where Prefect's ephemeral mode stores them
    assert tilestore.load_manifest(tilestore.store_path(work)).status.eq("ingested").sum() == 6


def test_the_temporary_server_dies_with_a_killed_command(home, tmp_path):
    script = ("import sys, time\nfrom infra.server import TemporaryServer\n"
              "server = TemporaryServer()\nprint(server.wait(180), flush=True)\ntime.sleep(600)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], env=_fresh_env(home), cwd=tmp_path,
                            stdout=subprocess.PIPE, text=True)
    try:
        url = proc.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:") and _answers(url)
    finally:
        proc.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only the kernel's parent-death signal
        proc.wait()
    assert _gone(url), f"the temporary server at {url} outlived its command"


def test_a_configured_server_or_cluster_needs_no_temporary_one(monkeypatch):
    from flows.cli import PrefectApi, build_parser

    parse = build_parser().parse_args
    assert PrefectApi(parse(["score", "--workdir", "w"]), env={"PREFECT_API_URL": "http://x/api"}).server is None
    assert PrefectApi(parse(["score", "--workdir", "w", "--dask-address", "tcp://h:1"]), env={}).server is None
    assert PrefectApi(parse(["synth", "out"]), env={}).server is None  # runs no flow
    off = {"PREFECT_SERVER_ALLOW_EPHEMERAL_MODE": "false"}
    assert PrefectApi(parse(["score", "--workdir", "w"]), env=off).server is None  # Prefect's own switch


def test_the_temporary_api_clients_load_one_certificate():
    """Plain HTTP on loopback: the clients' CA file is one certificate, which ssl loads; gone after the command."""
    import ssl

    from flows.cli import _one_certificate

    with _one_certificate() as path:
        text = Path(path).read_text()
        assert text.count("BEGIN CERTIFICATE") == 1
        ctx = ssl.create_default_context(cafile=path)
        assert len(ctx.get_ca_certs()) == 1
    assert not Path(path).exists()
