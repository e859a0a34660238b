"""The Prefect server behind ``seti-auditor ui``: the API that flows report to, and its UI.

It is ``prefect server start`` in the foreground, configured to work out of the box:

* bound to 127.0.0.1 unless told otherwise (the API has no authentication);
* the UI is told where its API is (``PREFECT_SERVER_UI_API_URL``): without it, the UI
  served on any port but 4200 shows "Can't connect to Server API";
* SQLite in ``PREFECT_HOME`` by default; PostgreSQL (or another SQLite file) when a database
  URL is configured, by argument or by ``PREFECT_SERVER_DATABASE_CONNECTION_URL`` (Prefect 3
  also reads the older name ``PREFECT_API_DATABASE_CONNECTION_URL``). Credentials belong in
  that environment variable, not on a command line that ``ps`` shows.

:class:`TemporaryServer` is the other kind: Prefect's own temporary API server (what Prefect
starts in "ephemeral mode" when no ``PREFECT_API_URL`` is set), started by the CLI at once,
before Prefect and JAX are imported, so that its start-up overlaps theirs.
"""

from __future__ import annotations

import atexit
import dataclasses
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

DB_ENV = "PREFECT_SERVER_DATABASE_CONNECTION_URL"  # the name Prefect 3.9 documents
DB_ENV_LEGACY = "PREFECT_API_DATABASE_CONNECTION_URL"  # still accepted by Prefect 3.9
DB_SCHEMES = ("postgresql+asyncpg://", "sqlite+aiosqlite://")  # Prefect needs async drivers
WILDCARDS = ("0.0.0.0", "::", "")


@dataclasses.dataclass(frozen=True)
class ServerConfig:
    """Where the Prefect server listens and what it stores runs in."""

    host: str = "127.0.0.1"  # interface to bind; 0.0.0.0 exposes the API (no auth) to the network
    port: int = 4200  # TCP port of the API (/api) and the UI (/)
    database_url: str | None = None  # SQLAlchemy URL; None: DB_ENV (or DB_ENV_LEGACY), else SQLite in PREFECT_HOME


def _public_host(host: str) -> str:
    """The host name clients use: the machine's name when bound to every interface."""
    return socket.gethostname() if host in WILDCARDS else host


def base_url(cfg: ServerConfig) -> str:
    """The UI's URL."""
    host = _public_host(cfg.host)
    return f"http://{f'[{host}]' if ':' in host else host}:{cfg.port}"


def api_url(cfg: ServerConfig) -> str:
    """The value of ``PREFECT_API_URL`` that points flows at this server."""
    return f"{base_url(cfg)}/api"


def database_url(cfg: ServerConfig, env: dict[str, str]) -> str | None:
    """The configured database URL (None: Prefect's SQLite file in PREFECT_HOME); checks its driver."""
    url = cfg.database_url or env.get(DB_ENV) or env.get(DB_ENV_LEGACY)
    if url and not url.startswith(DB_SCHEMES):
        scheme = url.split("://", 1)[0]
        raise ValueError(f"database URL scheme {scheme!r}: Prefect needs an async driver, one of "
                         f"{', '.join(s[:-3] for s in DB_SCHEMES)} (e.g. postgresql+asyncpg://user@host:5432/prefect)")
    return url


def describe_database(url: str | None, env: dict[str, str]) -> str:
    """Where runs are stored, without the password."""
    if url is None:
        home = env.get("PREFECT_HOME") or os.path.expanduser("~/.prefect")
        return f"SQLite {os.path.join(home, 'prefect.db')}"
    scheme, _, rest = url.partition("://")
    return f"{scheme}://{rest.rpartition('@')[2]}"


def server_env(cfg: ServerConfig, env: dict[str, str]) -> dict[str, str]:
    """The environment of the server process: ``env`` plus the settings above."""
    out = dict(env)
    url = database_url(cfg, env)
    if url:
        out[DB_ENV] = url
        out.pop(DB_ENV_LEGACY, None)
    out.setdefault("PREFECT_SERVER_UI_API_URL", api_url(cfg))  # a user's own value wins (a proxy, say)
    out.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")  # no telemetry (it fails offline anyway)
    out.pop("PREFECT_API_URL", None)  # the server is the API: it must not point elsewhere
    return out


def server_command(cfg: ServerConfig) -> list[str]:
    """``prefect server start`` in the foreground; ``--no-prompt``: never ask to edit the user's profile."""
    return [sys.executable, "-m", "prefect", "--no-prompt", "server", "start",
            "--host", cfg.host, "--port", str(cfg.port)]


def serve(cfg: ServerConfig) -> None:
    """Print how to use the server, then become it (exec: signals reach the server directly)."""
    env = server_env(cfg, dict(os.environ))
    print(f"Prefect server with its UI at {base_url(cfg)}  (runs stored in {describe_database(env.get(DB_ENV), env)})")
    print("Point flows at it (in each shell that runs seti-auditor, prefect deploy or a worker):")
    print(f"    export PREFECT_API_URL={api_url(cfg)}")
    if cfg.host in WILDCARDS:
        print("Listening on every interface: the API has no authentication.")
    print("Stop it with Ctrl-C.", flush=True)
    cmd = server_command(cfg)
    os.execve(cmd[0], cmd, env)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_healthy(url: str, timeout_s: float = 180.0, alive=lambda: True, poll_s: float = 0.5) -> None:
    """Wait until ``url``/health answers true; ``alive()`` returning False stops the wait early."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError(f"the Prefect server for {url} exited before it was healthy")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5) as resp:
                if resp.read().strip() == b"true":
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(poll_s)
    raise TimeoutError(f"the Prefect server at {url} was not healthy after {timeout_s:.0f} s")


# Prefect's ephemeral mode runs exactly this server (prefect.server.api.server.SubprocessASGIServer):
# uvicorn with the API app factory, no UI, the ephemeral settings, the database of PREFECT_HOME.
TEMPORARY_ENV = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
UVICORN_STARTUP_FAILURE = 3  # uvicorn's exit status when it cannot bind (the port was taken meanwhile)


def temporary_command(port: int) -> list[str]:
    """The command of Prefect's temporary API server on ``127.0.0.1:port``."""
    spec = importlib.util.find_spec("prefect")  # found without importing Prefect (seconds)
    site = os.path.dirname(os.path.dirname(spec.origin))
    return [sys.executable, "-m", "uvicorn", "--app-dir", site, "--factory", "prefect.server.api.server:create_app",
            "--host", "127.0.0.1", "--port", str(port), "--log-level", "error", "--lifespan", "on"]


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the server gets SIGTERM when the CLI process dies, even by SIGKILL (no orphan servers)."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


class TemporaryServer:
    """Prefect's temporary API server for one command, started before Prefect is imported.

    Without a configured ``PREFECT_API_URL``, Prefect would import its server code in the
    command's process (~5 s of CPU) when the first flow starts, then start this same server in
    a subprocess and wait for it (~5-10 s more). Started first, the subprocess boots on another
    core while the command imports Prefect, JAX and the flows; :meth:`wait` then usually returns
    at once. Runs are stored where Prefect's ephemeral mode stores them (``PREFECT_HOME``). The
    server stops with the command (:meth:`stop`, at exit, or by the kernel if the command is killed).
    """

    def __init__(self, env: dict[str, str] | None = None):
        self.env = {**(os.environ if env is None else env), **TEMPORARY_ENV}
        self.env.pop("PREFECT_API_URL", None)
        self.process: subprocess.Popen | None = None
        self.port = 0
        self._warm: threading.Thread | None = None
        self._launch()
        atexit.register(self.stop)

    def _launch(self) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(temporary_command(self.port), env=self.env, stdin=subprocess.DEVNULL,
                                        preexec_fn=_die_with_parent if sys.platform == "linux" else None)
        proc = self.process
        self._warm = threading.Thread(target=self._warm_up, args=(self.url, proc), daemon=True, name="prefect-api-warm-up")
        self._warm.start()

    @staticmethod
    def _warm_up(url: str, proc: subprocess.Popen) -> None:
        """As soon as the server answers, make its first API request (its first costs ~0.7 s more than the next)."""
        try:
            wait_healthy(url, 180.0, alive=lambda: proc.poll() is None, poll_s=0.1)
            with urllib.request.urlopen(f"{url}/admin/version", timeout=30) as resp:
                resp.read()
        except (RuntimeError, TimeoutError, urllib.error.URLError, OSError):
            pass  # wait() reports a server that does not answer

    @property
    def url(self) -> str:
        """Its ``PREFECT_API_URL``."""
        return f"http://127.0.0.1:{self.port}/api"

    def wait(self, timeout_s: float = 180.0) -> str:
        """Wait until it answers (a taken port is retried on another); returns its API URL."""
        for attempt in range(3):
            try:
                wait_healthy(self.url, timeout_s, alive=lambda: self.process.poll() is None, poll_s=0.1)
                if self._warm is not None:  # its first request made (usually while the command was importing)
                    self._warm.join(timeout=30)
                return self.url
            except RuntimeError:
                if self.process.poll() != UVICORN_STARTUP_FAILURE or attempt == 2:
                    raise RuntimeError(f"Prefect's temporary API server on port {self.port} exited with status "
                                       f"{self.process.poll()} before it answered") from None
                self._launch()
        raise AssertionError("unreachable")

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        proc, self.process = self.process, None
        if proc is not None:
            stop_process(proc, timeout_s=10)


def stop_process(proc: subprocess.Popen, timeout_s: float = 30.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout_s``; returns once the process is gone."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
