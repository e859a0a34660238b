"""The ``seti-auditor`` command line.

Every command is a thin shell over a flow (or, for ``synth``, a library call). Flows are
imported inside the commands so that ``--help`` is instant and the Prefect settings below
are in place before Prefect loads. With no Prefect server configured, a command that runs
flows starts Prefect's temporary API server first thing (:class:`PrefectApi`), so that the
server boots while Prefect, JAX and the flows are imported.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import importlib
import logging
import os
import sys
from pathlib import Path

FLOW_MODULES = {"ingest": "flows.ingest", "train": "flows.train", "score": "flows.score", "run": "flows.run",
                "demo": "flows.run"}  # commands that run flows, and the module each imports


class PrefectApi:
    """The Prefect API a command's flows report to.

    A configured server (``PREFECT_API_URL``) is used as it is. Without one, Prefect would start
    its temporary ("ephemeral") API server when the first flow runs, after importing its server
    code in this process; here the same server is started before anything is imported
    (:class:`infra.server.TemporaryServer`) and this process is pointed at it by :meth:`ready`,
    just before the first flow. Flows then run on a local cluster of worker *threads*, as they
    do in Prefect's ephemeral mode (the server dies with the command: worker processes or remote
    workers need a server of their own, ``seti-auditor ui``). ``--dask-address`` and
    ``--cluster-config`` keep Prefect's own behaviour (a clear error without a server).
    """

    def __init__(self, args: argparse.Namespace, env=os.environ):
        self.command = args.command
        self.server = None  # the temporary server, when this command uses one
        self._stack = contextlib.ExitStack()
        self._url: str | None = None
        ephemeral = env.get("PREFECT_SERVER_ALLOW_EPHEMERAL_MODE", "true").lower() not in ("0", "false", "no", "off")
        if (args.command in FLOW_MODULES and ephemeral and not env.get("PREFECT_API_URL")
                and not getattr(args, "dask_address", None) and not getattr(args, "cluster_config", None)):
            from infra.server import TemporaryServer  # the standard library only: no Prefect yet

            self.server = TemporaryServer()

    @property
    def temporary(self) -> bool:
        """Whether flows report to a temporary server of this command's own."""
        return self.server is not None

    def __enter__(self) -> PrefectApi:
        if self.server is not None:
            importlib.import_module(FLOW_MODULES[self.command])  # Prefect, JAX, the flows: while the server boots
            from prefect.settings import get_current_settings

            settings = get_current_settings()
            if settings.api.url or not settings.server.ephemeral.enabled:  # set by a profile or a .env file
                self.server.stop()
                self.server = None
        return self

    def ready(self) -> None:
        """Before the first flow: wait for the temporary server and point this process (and its threads) at it."""
        if self.server is None or self._url is not None:
            return
        from prefect.settings import (PREFECT_API_SSL_CERT_FILE, PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY,
                                      get_current_settings, temporary_settings)

        self._url = self.server.wait(get_current_settings().server.ephemeral.startup_timeout_seconds)
        print(f"seti-auditor: runs report to a temporary Prefect API at {self._url} (stored in PREFECT_HOME); "
              "for the UI, start `seti-auditor ui` and export PREFECT_API_URL", file=sys.stderr, flush=True)
        self._stack.enter_context(_environ("PREFECT_API_URL", self._url))  # new threads read the environment
        updates = {PREFECT_API_URL: self._url,
                   # no flow-run heartbeats: they let a lasting server mark a run as crashed when its process dies,
                   # but this server dies with the process; each flow run would wait up to 1 s at its end for the thread
                   PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}
        # plain HTTP on loopback: the CA file of the clients' TLS contexts is never used (see _one_certificate)
        cafile = self._stack.enter_context(_one_certificate())
        self._stack.enter_context(_environ("PREFECT_API_SSL_CERT_FILE", cafile))
        updates[PREFECT_API_SSL_CERT_FILE] = cafile
        self._stack.enter_context(temporary_settings(updates=updates))

    def __exit__(self, *exc) -> None:
        if self._url is not None:  # send the logs and events still queued while the server is there
            from prefect.events.worker import EventsWorker
            from prefect.logging.handlers import APILogWorker

            APILogWorker.drain_all(timeout=30, at_exit=False)
            EventsWorker.drain_all(timeout=30, at_exit=False)
        self._stack.close()
        if self.server is not None:
            self.server.stop()


@contextlib.contextmanager
def _one_certificate():
    """A CA file of one certificate (the first of certifi's bundle), for the API clients of the temporary server.

    That server speaks plain HTTP on loopback, so no certificate is ever checked, but Prefect builds a TLS context
    for every API client it makes (two per task run, one or more per flow run) from ``PREFECT_API_SSL_CERT_FILE``
    (by default ``SSL_CERT_FILE`` or certifi's bundle): ~150 certificates parsed, ~17 ms of CPU each time, under
    the GIL (a third of a short task's overhead). One certificate takes ~0.1 ms. The file is removed when the
    command ends.
    """
    import re
    import tempfile

    import certifi

    bundle = Path(certifi.where()).read_text()
    first = re.search(r"-----BEGIN CERTIFICATE-----.+?-----END CERTIFICATE-----\n?", bundle, re.S)
    with tempfile.TemporaryDirectory(prefix="seti-auditor-api-") as tmp:
        path = Path(tmp) / "loopback-ca.pem"
        path.write_text(first.group(0) if first else bundle)
        yield str(path)


@contextlib.contextmanager
def _environ(name: str, value: str):
    old = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = old


def _ready(args) -> None:
    """Wait for the command's Prefect API (when it is a temporary one of its own); see :class:`PrefectApi`."""
    api = getattr(args, "api", None)
    if api is not None:
        api.ready()


def _tile(text: str) -> tuple[int, int]:
    try:
        t, f = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"tile shape must look like 16x256, got {text!r}") from None
    if t < 1 or f < 1:
        raise argparse.ArgumentTypeError(f"tile shape must be positive, got {text!r}")
    return t, f


def _add_cluster_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dask-address", help="scheduler of an existing Dask cluster (tcp://HOST:PORT); "
                   "needs PREFECT_API_URL pointing at a Prefect server")
    p.add_argument("--cluster-config", metavar="FILE", help="cluster spec, YAML or TOML (infra/clusters/*.yaml): "
                   "local, an existing scheduler, SLURM, PBS or Kubernetes; see docs/scaling.md")
    p.add_argument("--workers", type=int, help="local Dask workers (default: one per core)")


def _add_tiling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tile", type=_tile, default=(16, 256), help="tile shape TIMExFREQ (default 16x256)")
    p.add_argument("--overlap", type=int, default=0, help="channels shared by neighbouring tiles")
    p.add_argument("--coarse-channel-width", type=int, default=0,
                   help="fine channels per coarse channel (default: from the header, or the BL rule)")
    p.add_argument("--cadence-table", help="CSV with file,cadence_id,scan_index,on_source to override the grouping")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seti-auditor", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("synth", help="write a synthetic ON/OFF archive with its ground truth")
    p.add_argument("out_dir")
    p.add_argument("--cadences", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--format", choices=("mixed", "fil", "h5"), default="mixed")

    p = sub.add_parser("ingest", help="tile an archive into WORKDIR/tiles.zarr")
    p.add_argument("archive_dir")
    p.add_argument("--workdir", required=True)
    _add_tiling_args(p)
    _add_cluster_args(p)

    p = sub.add_parser("train", help="train the VAE on the noise and RFI tiles of WORKDIR/tiles.zarr")
    p.add_argument("--workdir", required=True)
    _add_train_args(p)
    _add_cluster_args(p)

    p = sub.add_parser("score", help="score every tile with the current model and write WORKDIR/catalog.zarr")
    p.add_argument("--workdir", required=True)
    _add_score_args(p)
    _add_cluster_args(p)

    p = sub.add_parser("run", help="ingest, train (when needed) and score an archive")
    p.add_argument("archive_dir")
    p.add_argument("--workdir", required=True)
    p.add_argument("--model-policy", choices=("auto", "reuse", "retrain"), default="auto",
                   help="auto (default): keep the current model unless the noise of the new files drifted beyond "
                   "the bound (seti_auditor.drift); reuse: keep it (train only when there is none); retrain")
    _add_tiling_args(p)
    _add_train_args(p)
    _add_score_args(p)
    _add_cluster_args(p)

    p = sub.add_parser("demo", help="synthesise a small archive and run the whole pipeline on it")
    p.add_argument("--workdir", default="seti-auditor-demo", help="where the archive and outputs go")
    p.add_argument("--cadences", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    _add_train_args(p)
    _add_score_args(p)
    _add_cluster_args(p)

    p = sub.add_parser("ui", help="start a Prefect server and its UI (foreground); flows report to it via PREFECT_API_URL")
    p.add_argument("--host", default="127.0.0.1", help="interface to bind (default 127.0.0.1; the API has no auth)")
    p.add_argument("--port", type=int, default=4200, help="port of the API and the UI (default 4200)")
    p.add_argument("--database-url", help="SQLAlchemy URL, e.g. postgresql+asyncpg://user@host/prefect (default: "
                   "PREFECT_SERVER_DATABASE_CONNECTION_URL, else SQLite in PREFECT_HOME)")
    return parser


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=("default", "article"), default="default", help="VAE architecture")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--known-signal", action="append", default=[], metavar="FMIN:FMAX",
                   help="MHz range excluded from training (repeatable)")


def _add_score_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--score", choices=("line", "mse"), default="line",
                   help="anomaly score: residual line search, or the article's mean squared error")
    p.add_argument("--threshold", choices=("bh", "empirical", "article", "robust"), default="bh",
                   help="bh: Benjamini-Hochberg at --fdr; article: mu + k sigma")
    p.add_argument("--fdr", type=float, default=0.05, help="false discovery rate q of the tile tests (--threshold bh)")
    p.add_argument("--min-on-scans", type=int, default=2,
                   help="ON scans of a cadence that must show a candidate (a lone noise peak shows in one)")
    p.add_argument("--line-search", action=argparse.BooleanOptionalAction, default=True,
                   help="the cadence line search (default on; --no-line-search: the tile-level test alone): weak and "
                        "fast-drifting lines followed through their cadence; see docs/statistics.md")
    p.add_argument("--joint-search", action=argparse.BooleanOptionalAction, default=True,
                   help="the joint line searches (default on, with the line search): the three ON scans of a "
                        "cadence summed along drifting tracks, fast (0.6-2.5 Hz/s, 2-channel bins) and slow "
                        "(0-0.6 Hz/s, full resolution); see docs/statistics.md")


def _cluster(args):
    from infra.clusters import load_cluster_spec
    from infra.runtime import ClusterConfig

    try:
        spec = load_cluster_spec(args.cluster_config) if args.cluster_config else None
        api = getattr(args, "api", None)
        threads = api is not None and api.temporary  # the temporary server dies with the command: keep workers in it
        cfg = ClusterConfig(address=args.dask_address, workers=args.workers, spec=spec,
                            processes=False if threads else None)
        cfg.resolved()  # conflicting options fail here, before anything starts
    except ValueError as exc:  # ClusterConfigError included: names the file and the reason
        raise SystemExit(f"seti-auditor: {exc}") from None
    return cfg


def _tiling(args):
    from seti_auditor.tiling import TilingConfig

    t, f = args.tile
    return TilingConfig(tile_time=t, tile_freq=f, overlap_freq=args.overlap,
                        coarse_channel_width=args.coarse_channel_width)


def _train_job(args):
    from seti_auditor.training import TrainJob

    signals = []
    for text in args.known_signal:
        lo, _, hi = text.partition(":")
        signals.append((float(lo), float(hi)))
    return TrainJob(preset=args.preset, epochs=args.epochs, batch_size=args.batch_size, known_signals=tuple(signals))


def _score_job(args):
    from seti_auditor.cadence_search import LineSearchConfig
    from seti_auditor.cadence_test import CadenceConfig
    from seti_auditor.joint_search import SLOW_JOINT, JointSearchConfig
    from seti_auditor.score_archive import ScoreJob
    from seti_auditor.scoring import ScoreConfig
    from seti_auditor.stats import ThresholdConfig

    # the line score's null is Gumbel-like (a maximum of track sums); the MSE's is not
    tail = "gumbel" if args.score == "line" else "exponential"
    # the cadence line search follows line tracks: it belongs to the line score, not the article's baseline
    lines = LineSearchConfig(enabled=args.score == "line" and args.line_search,
                             joint=JointSearchConfig(enabled=args.joint_search),
                             joint_slow=dataclasses.replace(SLOW_JOINT, enabled=args.joint_search))
    return ScoreJob(score=ScoreConfig(score=args.score),
                    thresholds=ThresholdConfig(method=args.threshold, q=args.fdr, tail=tail),
                    cadence=CadenceConfig(min_on_scans=args.min_on_scans), lines=lines)


def cmd_synth(args) -> int:
    from seti_auditor.archive import write_synthetic_archive

    truth = write_synthetic_archive(args.out_dir, cadences=args.cadences, seed=args.seed, formats=args.format)
    print(f"synthetic archive written to {Path(args.out_dir).resolve()} (ground truth: {truth})")
    return 0


def cmd_ingest(args) -> int:
    from flows.ingest import ingest_flow
    from infra.runtime import make_task_runner

    _ready(args)
    runner = make_task_runner(_cluster(args))
    summary = ingest_flow.with_options(task_runner=runner)(
        archive_dir=args.archive_dir, workdir=args.workdir, tiling=_tiling(args), cadence_table=args.cadence_table)
    print_ingest(summary)
    return 0 if summary.ok else 1


def print_ingest(summary) -> None:
    print(f"tile store: {summary.store}")
    print(f"files found {summary.n_inputs}, tiled now {len(summary.ingested)}, unchanged {len(summary.unchanged)}, "
          f"rejected {len(summary.rejected)}; valid tiles {summary.n_tiles}")
    for name, reason in summary.rejected.items():
        print(f"  rejected {name}: {reason}")


def cmd_train(args) -> int:
    from flows.train import train_flow
    from infra.runtime import make_task_runner

    _ready(args)
    report = train_flow.with_options(task_runner=make_task_runner(_cluster(args)))(args.workdir, _train_job(args))
    print(f"model {report.model_version} in {report.model_dir} ({report.n_train} training tiles, "
          f"{report.n_null} null tiles); loss {report.history[-1]['loss']:.4g} after {len(report.history)} epochs"
          if report.history else f"model {report.model_version} in {report.model_dir}")
    return 0


def cmd_score(args) -> int:
    from flows.score import score_flow
    from infra.runtime import make_task_runner

    _ready(args)
    summary = score_flow.with_options(task_runner=make_task_runner(_cluster(args)))(args.workdir, _score_job(args))
    print_score(summary)
    return 0


def cmd_run(args, archive_dir: str | None = None) -> int:
    from flows.run import run_flow
    from infra.runtime import dask_cluster, task_runner

    _ready(args)
    with dask_cluster(_cluster(args)) as address:
        result = run_flow.with_options(task_runner=task_runner(address))(
            archive_dir or args.archive_dir, args.workdir, tiling=_tiling(args), train=_train_job(args),
            score=_score_job(args), model_policy=getattr(args, "model_policy", "reuse"),
            cadence_table=getattr(args, "cadence_table", None), dask_address=address)
    print_ingest(result.ingest)
    if result.train is not None:
        print(f"model {result.train.model_version} trained on {result.train.n_train} tiles")
    if result.score is None:
        return 1
    print_score(result.score)
    return 0


def cmd_demo(args) -> int:
    from seti_auditor.archive import write_synthetic_archive

    work = Path(args.workdir).resolve()
    archive = work / "archive"
    if not (archive / "truth.json").exists():
        write_synthetic_archive(archive, cadences=args.cadences, seed=args.seed)
    print(f"synthetic archive: {archive} ({args.cadences} ABACAD cadences, ground truth in truth.json)")
    args.tile, args.overlap, args.coarse_channel_width, args.cadence_table = (16, 256), 0, 0, None
    args.model_policy = "reuse"
    args.workdir = str(work)
    return cmd_run(args, archive_dir=str(archive))


def cmd_ui(args) -> int:
    from infra.server import ServerConfig, serve

    try:
        serve(ServerConfig(host=args.host, port=args.port, database_url=args.database_url))  # becomes the server
    except ValueError as exc:  # a database URL Prefect cannot use
        print(f"seti-auditor ui: {exc}", file=sys.stderr)
    return 2


def print_score(summary) -> None:
    print(f"catalog: {summary.catalog}  (xarray.open_zarr(path, consolidated=False))")
    print(f"model {summary.model_version}: {summary.n_tiles} tiles scored, {summary.n_flagged} flagged; "
          f"{summary.n_candidates} candidates, {summary.n_rfi} RFI events, {summary.n_rejected} rejected")
    if summary.n_candidates:
        import pandas as pd

        cols = ["source_name", "freq_min_mhz", "freq_max_mhz", "drift_hz_s", "score", "q_value", "n_on_scans"]
        with pd.option_context("display.width", 120, "display.float_format", "{:.6g}".format):
            print(summary.candidates[cols].head(15).to_string(index=False))
    if summary.plots:
        print(f"plots: {Path(summary.plots[0]).parent}")


COMMANDS = {"synth": cmd_synth, "ingest": cmd_ingest, "train": cmd_train, "score": cmd_score, "run": cmd_run,
            "demo": cmd_demo, "ui": cmd_ui}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the first run in a fresh PREFECT_HOME migrates a database before the API answers
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")  # Dask's own config, read at import
    args = build_parser().parse_args(argv)
    with PrefectApi(args) as args.api:
        logging.getLogger("prefect.task_runner.dask").setLevel(logging.WARNING)
        return COMMANDS[args.command](args)


def entry() -> None:
    """The ``seti-auditor`` console script: :func:`main`, then the interpreter's shutdown without its last
    garbage collections.

    When :func:`main` returns, everything is written and closed: the flows have finished, their logs and events
    are sent, the temporary server is stopped. Python's shutdown then spent 2.0-2.3 s (the demo, measured) in
    the collector, walking the objects that Prefect, Dask, JAX and pandas leave behind; :func:`gc.freeze` puts
    them out of its reach (0.25 s). Everything else of a normal exit still happens: threads are joined,
    ``atexit`` handlers run, streams are flushed, objects are freed by reference counting. Not in :func:`main`,
    which tests call in their own process.
    """
    code = main()
    gc.freeze()
    sys.exit(code)


if __name__ == "__main__":
    entry()
