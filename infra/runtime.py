"""Where flows run: the Dask task runner and the Prefect API they report to.

Cluster construction lives here, never in flow decorators: the CLI (or a deployment)
builds a task runner from configuration and passes it with ``flow.with_options``.

The default works out of the box on a fresh machine. Prefect's ephemeral API server
lives inside the flow's process, so Dask workers that are separate processes cannot
reach it (each would start its own and time out; see the README). Hence:

* ``PREFECT_API_URL`` set (a real server, e.g. ``seti-auditor ui``): a ``LocalCluster``
  of worker *processes*, or any existing scheduler given by ``--dask-address``;
* no API URL: a ``LocalCluster`` of worker *threads* in the flow's process (numpy, zarr
  and XLA release the GIL in their kernels), reporting to the ephemeral API.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

from prefect_dask import DaskTaskRunner


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """Which Dask cluster runs the tasks."""

    address: str | None = None  # scheduler address (tcp://host:port) of an existing cluster; None = local
    workers: int | None = None  # local workers; None = one per core (at least 1)
    processes: bool | None = None  # local worker processes; None = processes only when a Prefect API server is set
    threads_per_worker: int = 1  # threads in each local worker


def api_url() -> str | None:
    """The Prefect API URL flows report to, or None in ephemeral mode."""
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def _check(cfg: ClusterConfig) -> bool:
    """Validate the configuration against the Prefect API in use; returns whether workers are processes."""
    server = api_url()
    if cfg.address and not server:
        raise RuntimeError(
            "--dask-address needs a Prefect API server that the remote workers can reach: "
            "start one with `prefect server start` and set PREFECT_API_URL"
        )
    processes = bool(server) if cfg.processes is None else cfg.processes
    if processes and not server:
        raise RuntimeError("Dask worker processes need PREFECT_API_URL (a Prefect server); use threads instead")
    return processes


def _local_kwargs(cfg: ClusterConfig, processes: bool) -> dict:
    return {
        "n_workers": cfg.workers or max(1, os.cpu_count() or 1),
        "threads_per_worker": cfg.threads_per_worker,
        "processes": processes,
        "dashboard_address": ":0",  # a free port: several runs may share a machine
    }


def make_task_runner(cfg: ClusterConfig = ClusterConfig()) -> DaskTaskRunner:
    """A ``DaskTaskRunner`` with a cluster of its own (see the module docstring for the rules)."""
    processes = _check(cfg)
    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=_local_kwargs(cfg, processes))


@contextlib.contextmanager
def dask_cluster(cfg: ClusterConfig = ClusterConfig()):
    """A scheduler address for the duration of the block: the given one, or a local cluster's.

    One cluster then serves every flow of a run (ingest, train, score) instead of one each.
    """
    processes = _check(cfg)
    if cfg.address:
        yield cfg.address
        return
    from distributed import LocalCluster

    with LocalCluster(**_local_kwargs(cfg, processes)) as cluster:
        yield cluster.scheduler_address


def task_runner(address: str | None):
    """The task runner of a flow: Dask at ``address``, or Prefect's thread pool when None."""
    if address is None:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    return DaskTaskRunner(address=address)
