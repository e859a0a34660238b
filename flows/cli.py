"""The ``seti-auditor`` command line.

Every command is a thin shell over a flow (or, for ``synth``, a library call). Flows are
imported inside the commands so that ``--help`` is instant and the Prefect settings below
are in place before Prefect loads.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


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
    return parser


def _cluster(args):
    from infra.runtime import ClusterConfig

    return ClusterConfig(address=args.dask_address, workers=args.workers)


def _tiling(args):
    from seti_auditor.tiling import TilingConfig

    t, f = args.tile
    return TilingConfig(tile_time=t, tile_freq=f, overlap_freq=args.overlap,
                        coarse_channel_width=args.coarse_channel_width)


def cmd_synth(args) -> int:
    from seti_auditor.archive import write_synthetic_archive

    truth = write_synthetic_archive(args.out_dir, cadences=args.cadences, seed=args.seed, formats=args.format)
    print(f"synthetic archive written to {Path(args.out_dir).resolve()} (ground truth: {truth})")
    return 0


def cmd_ingest(args) -> int:
    from flows.ingest import ingest_flow
    from infra.runtime import make_task_runner

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


COMMANDS = {"synth": cmd_synth, "ingest": cmd_ingest}


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    return COMMANDS[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
