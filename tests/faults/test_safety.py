"""Safety: loopback servers, no pickles from the archive or workdir, sanitised names, no secrets."""

from __future__ import annotations

import ast
import json
import pickle
import re
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pandas as pd
import psutil
import pytest

from seti_auditor import catalog, formats, tilestore
from seti_auditor.cadence import sanitise
from tests.faults.support import REPO

LOOPBACK = {"127.0.0.1", "::1"}
SOURCE_DIRS = ("seti_auditor", "vae", "flows", "tasks", "infra", "benchmarks")
HOSTILE = "../../etc/x<script>alert(1)</script>"


def _listening(pids) -> set[tuple[str, int]]:
    out = set()
    for pid in pids:
        try:
            conns = psutil.Process(pid).net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        out |= {(c.laddr.ip, c.laddr.port) for c in conns if c.status == psutil.CONN_LISTEN}
    return out


# ------------------------------------------------------------------------------------ loopback


def test_ui_server_defaults_to_loopback_and_listens_only_there(prefect_server):
    """Injects nothing: reads the defaults of ``seti-auditor ui`` and the sockets of the session's server
    (started with ``seti-auditor ui --port N`` and no --host).

    Must hold: the default host is 127.0.0.1 (config and command line), and the running server listens
    on loopback only.
    """
    from flows.cli import build_parser
    from infra.server import ServerConfig

    assert ServerConfig().host == "127.0.0.1"
    assert build_parser().parse_args(["ui"]).host == "127.0.0.1"
    port = urlparse(prefect_server).port
    sockets = [c for c in psutil.net_connections(kind="inet")
               if c.status == psutil.CONN_LISTEN and c.laddr.port == port]
    assert sockets and {c.laddr.ip for c in sockets} <= LOOPBACK, sockets


@pytest.mark.parametrize("processes", [False, True], ids=["thread-workers", "process-workers"])
def test_local_dask_cluster_and_dashboards_bind_to_loopback(processes, prefect_server):
    """Injects nothing: starts the local cluster of ``infra.runtime`` (as every command does) and lists the
    sockets its scheduler, workers and dashboards listen on.

    Must hold: every one of them is on a loopback address.
    """
    from infra.runtime import ClusterConfig, dask_cluster

    me = psutil.Process()
    before = _listening([me.pid])
    with dask_cluster(ClusterConfig(workers=1, processes=processes)):
        pids = [me.pid] + [p.pid for p in me.children(recursive=True)]
        opened = _listening(pids) - before
    assert opened, "the cluster opened no socket?"
    assert {ip for ip, _ in opened} <= LOOPBACK, opened


# ------------------------------------------------------------------------ no pickles, no code


def _sources():
    for folder in SOURCE_DIRS:
        yield from sorted((REPO / folder).rglob("*.py"))


LOADER_MODULES = {"pickle", "cPickle", "_pickle", "cloudpickle", "dill", "marshal", "shelve", "joblib", "torch"}
LOADER_CALLS = {"load", "loads", "Unpickler", "open"}  # what deserialises (dumping is harmless)


def _unsafe_loads(tree: ast.AST) -> list[str]:
    """Calls that can run code from a file's bytes."""
    found = []
    aliases = {}  # local name -> module, for "import pickle as pk" and "from pickle import loads"
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            aliases.update({(a.asname or a.name): a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in LOADER_MODULES:
            found += [f"from {node.module} import {a.name}" for a in node.names if a.name in LOADER_CALLS]
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = ast.unparse(node.func)
            kw = {k.arg: k.value for k in node.keywords}
            head, _, attr = name.rpartition(".")
            if attr in LOADER_CALLS and aliases.get(head, head).split(".")[0] in LOADER_MODULES:
                found.append(name)
            if name in ("eval", "exec", "pd.read_pickle", "pandas.read_pickle", "yaml.load", "yaml.unsafe_load"):
                found.append(name)
            if name.endswith(("np.load", "numpy.load")) and not (
                    isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is False):
                found.append(f"{name} without allow_pickle=False")
            if isinstance(kw.get("allow_pickle"), ast.Constant) and kw["allow_pickle"].value is True:
                found.append(f"{name}(allow_pickle=True)")
    return found


def test_unsafe_loader_scan_catches_what_it_should():
    code = ("import pickle as pk\nimport numpy as np\nnp.load(p)\nnp.load(p, allow_pickle=True)\nx = eval('1')\n"
            "pk.loads(b)\nfrom cloudpickle import load\n")
    assert len(_unsafe_loads(ast.parse(code))) == 6  # np.load(allow_pickle=True) counts twice
    safe = "import pickle\nimport numpy as np\nnp.load(p, allow_pickle=False)\nn = len(pickle.dumps(x))\n"
    assert _unsafe_loads(ast.parse(safe)) == []


def test_no_source_file_loads_pickles_or_code():
    """Injects nothing: parses every module of the package, the flows, tasks, infra and benchmarks.

    Must hold: no load/loads/Unpickler of pickle, cloudpickle, dill, marshal, shelve, joblib or torch,
    no eval/exec, no read_pickle or yaml.load, and every np.load says allow_pickle=False (model files, null scores and
    selections are plain arrays; stores are Zarr v3, checkpoints orbax/tensorstore: no pickles).
    """
    bad = {str(p.relative_to(REPO)): hits for p in _sources() if (hits := _unsafe_loads(ast.parse(p.read_text())))}
    assert not bad, bad


class _Payload:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _pickle_store(path: Path, marker: Path) -> None:
    """A Zarr v2 store whose one object array is encoded with the numcodecs pickle codec."""
    (path / "x").mkdir(parents=True)
    (path / ".zgroup").write_text(json.dumps({"zarr_format": 2}))
    (path / "x" / ".zarray").write_text(json.dumps({
        "zarr_format": 2, "shape": [1], "chunks": [1], "dtype": "|O", "compressor": None, "fill_value": None,
        "filters": [{"id": "pickle"}], "order": "C", "dimension_separator": "."}))
    (path / "x" / ".zattrs").write_text(json.dumps({"_ARRAY_DIMENSIONS": ["candidate"]}))
    (path / "x" / "0").write_bytes(pickle.dumps(np.array([_Payload(str(marker))], dtype=object)))


def test_planted_pickle_stores_in_the_workdir_are_not_unpickled(tmp_path):
    """Injects: a workdir whose catalog.zarr and tiles.zarr are Zarr v2 stores holding a pickled object
    that creates a file when unpickled.

    Must hold: opening them through the project's readers fails, and the payload never runs.
    """
    marker = tmp_path / "payload-ran"
    _pickle_store(tmp_path / "catalog.zarr", marker)
    _pickle_store(tmp_path / "tiles.zarr", marker)
    with pytest.raises(Exception):
        catalog.open_catalog(tmp_path)
    with pytest.raises(Exception):
        tilestore.open_tiles(tmp_path / "tiles.zarr").load()
    assert not marker.exists()


# ------------------------------------------------------------------------ names from headers


def test_sanitise_makes_hostile_names_inert():
    for name in (HOSTILE, "..", "/", "a/../../b", "x\x00y", "名前", " " * 5, "~root", "$(rm -rf)", "a" * 300):
        safe = sanitise(name)
        assert re.fullmatch(r"[A-Za-z0-9._+-]*", safe), safe  # no separator, no markup, no control character
        assert not safe.startswith(".") and len(safe) <= 64  # never "." / ".." / a hidden file
    assert sanitise(HOSTILE) == "etc_x_script_alert_1_script"


def test_hostile_source_name_becomes_no_path_or_key(tmp_path, prefect_harness, thread_runner):
    """Injects: a cadence whose target's header source name is ``../../etc/x<script>alert(1)</script>``.

    Must hold: it is kept verbatim as data (tile coordinates, manifest), but the cadence id built from
    it and the candidate plot's file name are sanitised: the PNG lands inside the plot directory with
    a name of letters, digits and ``._+-`` only.
    """
    from flows.ingest import ingest_flow
    from seti_auditor.plots import candidate_plot
    from seti_auditor.tiling import TilingConfig

    archive = tmp_path / "archive"
    archive.mkdir()
    rng = np.random.default_rng(0)
    for i, name in enumerate([HOSTILE, "OFF1", HOSTILE, "OFF2", HOSTILE, "OFF3"]):
        hdr = {"source_name": name, "tstart": 60000.0 + i * 320 / 86400, "tsamp": 18.253611008, "fch1": 1100.0,
               "foff": -2.7939677238464355e-06, "nbits": 32, "nfpc": 1024}
        formats.write_filterbank(archive / f"scan{i}.fil", hdr, (rng.chisquare(64, (16, 1024)) / 64).astype(np.float32))
    work = tmp_path / "work"
    tiling = TilingConfig(chunk_tiles=4)
    summary = ingest_flow.with_options(task_runner=thread_runner())(str(archive), str(work), tiling=tiling)
    assert len(summary.ingested) == 6
    ds = tilestore.open_tiles(tilestore.store_path(work)).load()
    on = ds.isel(tile=ds.valid.values & ds.on_source.values)
    assert set(on.source_name.values) == {HOSTILE}
    (cid,) = set(on.cadence_id.values)
    assert re.fullmatch(r"[A-Za-z0-9._+-]+", cid) and "/" not in cid
    t = 0
    row = pd.Series({"cadence_id": cid, "source_file": str(on.source_file.values[t]), "source_name": HOSTILE,
                     "freq_min_mhz": float(on.freq_min_mhz.values[t]), "freq_max_mhz": float(on.freq_max_mhz.values[t]),
                     "tstart_mjd": float(on.tstart_mjd.values[t]), "tstop_mjd": float(on.tstart_mjd.values[t]) + 0.003,
                     "peak_freq_mhz": float(on.freq_min_mhz.values[t]), "drift_hz_s": 0.0, "score": 9.0,
                     "q_value": 0.001, "tile_first": 0})
    out_dir = work / "plots" / "v1"
    png = candidate_plot(work, row, out_dir)
    assert png.exists() and png.resolve().parent == out_dir.resolve()
    assert re.fullmatch(r"[A-Za-z0-9._+-]+\.png", png.name)
    assert sorted(p.name for p in (work / "plots").rglob("*") if p.is_file()) == [png.name]


def test_artifact_keys_never_come_from_data():
    """Injects nothing: parses flows/ and tasks/.

    Must hold: every Prefect artifact ``key=`` is a literal, or an f-string of literals and loop
    counters: nothing from a header or a file name can become a key.
    """
    bad = []
    for path in sorted((REPO / "flows").rglob("*.py")) + sorted((REPO / "tasks").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or "artifact" not in ast.unparse(node.func):
                continue
            for kw in node.keywords:
                if kw.arg != "key":
                    continue
                value = kw.value
                ok = isinstance(value, ast.Constant) or (isinstance(value, ast.JoinedStr) and all(
                    isinstance(v, ast.Constant) or (isinstance(v, ast.FormattedValue) and isinstance(v.value, ast.Name)
                                                    and v.value.id in {"i", "k", "n", "index"})
                    for v in value.values)) or isinstance(value, ast.Name)
                if not ok:
                    bad.append(f"{path.relative_to(REPO)}:{node.lineno}: {ast.unparse(value)}")
    assert not bad, bad


# ------------------------------------------------------------------------------------ secrets

SECRET_PATTERNS = {
    "private key": r"-----BEGIN (?:RSA |EC |OPENSSH |DSA |PGP )?PRIVATE KEY( BLOCK)?-----",
    "AWS access key": r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    "GitHub token": r"\bgh[pousr]_[A-Za-z0-9]{36,}\b",
    "Slack token": r"\bxox[abprs]-[A-Za-z0-9-]{10,}",
    "Prefect Cloud key": r"\bpnu_[A-Za-z0-9]{30,}\b",
    "OpenAI-style key": r"\bsk-[A-Za-z0-9_-]{32,}\b",
    "Google API key": r"\bAIza[0-9A-Za-z_-]{35}\b",
    # user:password@ in a URL, unless the password is a placeholder ({var}, $VAR, <pw>, ***, PASSWORD)
    "password in a URL": r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:(?!\{|\$|<|\*\*\*|[A-Z_]+@)[^@\s/'\"]{3,}@",
    "assigned secret": r"(?i)\b(?:password|passwd|secret|api[_-]?key|token)\b\s*[:=]\s*['\"][^'\"\s{}$<]{8,}['\"]",
}


def _secret_hits(text: str) -> list[str]:
    return [name for name, pattern in SECRET_PATTERNS.items() if re.search(pattern, text)]


def test_secret_patterns_catch_examples():
    samples = {
        "private key": "-----BEGIN " + "RSA PRIVATE KEY-----",
        "AWS access key": "AKIA" + "ABCDEFGHIJKLMNOP",
        "GitHub token": "ghp_" + "a" * 36,
        "Prefect Cloud key": "pnu_" + "b" * 36,
        "password in a URL": "postgresql+asyncpg://prefect:" + "hunter22" + "@db:5432/prefect",
        "assigned secret": "password = '" + "correct-horse-battery" + "'",
    }
    for name, text in samples.items():
        assert name in _secret_hits(text), name
    assert _secret_hits("postgresql+asyncpg://user@host:5432/prefect") == []
    assert _secret_hits("postgresql+asyncpg://USER:PASSWORD@HOST/prefect") == []
    assert _secret_hits("url = f'postgresql+asyncpg://{user}:{password}@db/prefect'") == []


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True).stdout
        names = [n for n in out.decode().split("\0") if n]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout: every file but build outputs
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*") if p.is_file()
                 and not any(part.startswith(".") or part in ("__pycache__", "build", "dist") for part in
                             p.relative_to(REPO).parts)]
    return [REPO / n for n in names if (REPO / n).is_file()]


def test_no_secret_in_any_committed_file():
    """Injects nothing: reads every tracked file (text ones) of the repository.

    Must hold: none holds a private key, a cloud or API token, a password in a URL or a literal
    password assignment (deployments take credentials from Prefect blocks or the environment).
    """
    hits = {}
    for path in _tracked_files():
        data = path.read_bytes()
        if b"\0" in data[:8192]:
            continue
        found = _secret_hits(data.decode("utf-8", errors="replace"))
        if found:
            hits[str(path.relative_to(REPO))] = found
    assert not hits, hits
