"""``seti-auditor run`` with smaller units of work, for the fault tests (run as a subprocess).

It does what :func:`flows.cli.cmd_run` does (one Dask cluster, the parent flow with its
subflows) with knobs the command line does not expose, so that a small archive still has
many ingest regions, training epochs and score regions to kill in the middle of::

    python -m tests.faults.run_driver ARCHIVE --workdir W [--epochs 40] [--chunk-tiles 16]
        [--channels-per-task 4096] [--tiles-per-task 32] [--plots 1] [--workers 2]

Workers are threads of this process (``processes=False``), with or without PREFECT_API_URL.
The last line printed is a JSON summary.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="run_driver", description=__doc__.splitlines()[0])
    p.add_argument("archive_dir")
    p.add_argument("--workdir", required=True)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--chunk-tiles", type=int, default=16)
    p.add_argument("--channels-per-task", type=int, default=4096)
    p.add_argument("--tiles-per-task", type=int, default=32)
    p.add_argument("--plots", type=int, default=1)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--dask-address", help="an existing scheduler (needs PREFECT_API_URL)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("DASK_LOGGING__DISTRIBUTED", "warning")
    args = parse(argv)

    from flows.run import run_flow
    from infra.runtime import ClusterConfig, dask_cluster, task_runner
    from seti_auditor.cadence_search import LineSearchConfig
    from seti_auditor.score_archive import ScoreJob
    from seti_auditor.tiling import TilingConfig
    from seti_auditor.training import TrainJob

    tiling = TilingConfig(chunk_tiles=args.chunk_tiles, channels_per_task=args.channels_per_task)
    train = TrainJob(epochs=args.epochs)
    score = ScoreJob(tiles_per_task=args.tiles_per_task, n_plots=args.plots, lines=LineSearchConfig(enabled=False))  # as support.JOB
    cluster = ClusterConfig(address=args.dask_address, workers=args.workers,
                            processes=None if args.dask_address else False)
    with dask_cluster(cluster) as address:
        result = run_flow.with_options(task_runner=task_runner(address))(
            args.archive_dir, args.workdir, tiling=tiling, train=train, score=score, dask_address=address)
    summary = {
        "ingested": result.ingest.ingested, "unchanged": result.ingest.unchanged, "rejected": result.ingest.rejected,
        "trained": result.train is not None,
        "resumed_from": result.train.resumed_from if result.train is not None else None,
        "model_version": result.score.model_version if result.score is not None else None,
        "n_candidates": result.score.n_candidates if result.score is not None else None,
    }
    print(json.dumps(summary))
    return 0 if result.score is not None else 1


if __name__ == "__main__":
    sys.exit(main())
