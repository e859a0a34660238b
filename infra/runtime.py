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

A cluster spec file (``--cluster-config``, :mod:`infra.clusters`) selects the cluster by
configuration instead: a local one, an existing scheduler, or SLURM / PBS jobs and
Kubernetes pods (the ``cluster`` extra), whose workers get this process's ``PREFECT_API_URL``.
It may also pin the training task to workers that advertise a resource (``train_resources``,
e.g. ``{GPU: 4}``): :func:`train_annotations` gives the flow that Dask annotation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from urllib.parse import urlparse

import dask
from prefect_dask import DaskTaskRunner

from infra import clusters
from infra.clusters import ClusterSpec

log = logging.getLogger(__name__)

TRAIN_RESOURCES = "seti-auditor.train-resources"  # Dask config key (env DASK_SETI_AUDITOR__TRAIN_RESOURCES)

# Dask settings of the local clusters built here (the workers read them when they start; worker processes get
# them from their nanny). All are diagnostics for the dashboard, which nobody watches on a command's own cluster:
# the statistical profiler samples the stack of every worker thread each 10 ms, the system monitor reads /proc
# every 0.5 s, and the event-loop tick is timed every 20 ms, in the scheduler and in each worker. With thread
# workers all of it runs in the flow's own process, on its cores and under its GIL (an idle local cluster of two
# thread workers: 3.6 % of a core with Dask's ticks, 1.1 % with 500 ms ones). A value changed in the user's Dask
# configuration (a file or a DASK_* variable) is kept.
LOCAL_DASK_DEFAULTS = {
    "distributed.worker.profile.enabled": False,  # the dashboard's Profile page stays empty
    "distributed.admin.system-monitor.interval": "2s",  # CPU / memory / network graphs every 2 s
    "distributed.admin.tick.interval": "500ms",  # event-loop latency sampled twice a second (blocked-loop
    # warnings still come after distributed.admin.tick.limit, 3 s)
}


@dataclasses.dataclass(frozen=True)
class ClusterConfig:
    """Which Dask cluster runs the tasks."""

    address: str | None = None  # scheduler address (tcp://host:port) of an existing cluster; None = local
    workers: int | None = None  # local workers; None = one per core (at least 1)
    processes: bool | None = None  # local worker processes; None = processes only when a Prefect API server is set
    threads_per_worker: int = 1  # threads in each local worker
    spec: ClusterSpec | None = None  # a cluster spec file's content (--cluster-config); None = the fields above

    def resolved(self) -> ClusterConfig:
        """The spec's local/address kinds folded into the plain fields; remote kinds keep the spec."""
        spec = self.spec
        if spec is None:
            return self
        if self.address and self.address != spec.address:  # (a resolved address-kind config is fine)
            raise ValueError("give either --dask-address or --cluster-config, not both")
        if spec.kind == "address":
            return dataclasses.replace(self, address=spec.address)
        if spec.kind != "local" and self.workers is not None:
            raise ValueError(f"--workers applies to a local cluster; set n_workers in the {spec.kind} cluster spec")
        if spec.kind == "local":
            return dataclasses.replace(self, workers=self.workers or spec.n_workers,
                                       threads_per_worker=spec.threads_per_worker)
        return self


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
    if cfg.spec is not None and cfg.spec.kind in clusters.JOBQUEUE + ("kubernetes",):
        if not server:
            raise RuntimeError(f"a {cfg.spec.kind} cluster needs a Prefect API server that its workers can reach: "
                               "start one (`seti-auditor ui --host 0.0.0.0`) and set PREFECT_API_URL")
        if urlparse(server).hostname in ("127.0.0.1", "localhost", "::1"):
            log.warning("PREFECT_API_URL %s is a loopback address: %s workers on other hosts cannot reach it",
                        server, cfg.spec.kind)
        return True
    processes = bool(server) if cfg.processes is None else cfg.processes
    if processes and not server:
        raise RuntimeError("Dask worker processes need PREFECT_API_URL (a Prefect server); use threads instead")
    return processes


def _local_kwargs(cfg: ClusterConfig, processes: bool) -> dict:
    kw = {
        "n_workers": cfg.workers or max(1, os.cpu_count() or 1),
        "threads_per_worker": cfg.threads_per_worker,
        "processes": processes,
        # free loopback ports (several runs may share a machine; the dashboards have no authentication)
        "dashboard_address": "127.0.0.1:0",
        "worker_dashboard_address": "127.0.0.1:0",  # thread workers otherwise serve on every interface
    }
    if cfg.spec is not None and cfg.spec.kind == "local":  # its worker resources, scratch directory
        spec_kw = clusters.cluster_kwargs(cfg.spec)
        kw.update({k: v for k, v in spec_kw.items() if k in ("resources", "local_directory")})
    return kw


def _local_dask_config() -> dict:
    """:data:`LOCAL_DASK_DEFAULTS` for the settings that are still at Dask's own defaults (a user's value is kept)."""
    from dask.config import defaults, merge

    shipped = merge(*defaults)
    return {k: v for k, v in LOCAL_DASK_DEFAULTS.items()
            if dask.config.get(k, None) == dask.config.get(k, None, config=shipped)}


def _remote_spec(cfg: ClusterConfig) -> ClusterSpec | None:
    return cfg.spec if cfg.spec is not None and cfg.spec.kind in clusters.JOBQUEUE + ("kubernetes",) else None


def _set_train_resources(cfg: ClusterConfig):
    """A context that sets the training task's resource request from the spec (no-op without one)."""
    if cfg.spec is None or not cfg.spec.train_resources:
        return contextlib.nullcontext()
    return dask.config.set({TRAIN_RESOURCES: dict(cfg.spec.train_resources)})


def train_annotations() -> dict:
    """Dask annotations for the training task: ``{"resources": {...}}`` when configured, else ``{}``.

    Set by a cluster spec's ``train_resources`` (for the duration of the run), or by the Dask
    config key ``seti-auditor.train-resources`` (e.g. ``DASK_SETI_AUDITOR__TRAIN_RESOURCES='{"GPU": 4}'``
    for a deployment). Only workers started with those resources (``dask worker --resources
    GPU=4``) then take the task.
    """
    resources = dask.config.get(TRAIN_RESOURCES, None)
    return {"resources": {str(k): float(v) for k, v in dict(resources).items()}} if resources else {}


def make_task_runner(cfg: ClusterConfig = ClusterConfig()) -> DaskTaskRunner:
    """A ``DaskTaskRunner`` with a cluster of its own (see the module docstring for the rules).

    A spec's ``train_resources`` are set in the Dask config for the rest of the process, and so, for a local
    cluster (which the runner starts with the flow), are :data:`LOCAL_DASK_DEFAULTS`.
    """
    cfg = cfg.resolved()
    processes = _check(cfg)
    if cfg.spec is not None and cfg.spec.train_resources:
        dask.config.set({TRAIN_RESOURCES: dict(cfg.spec.train_resources)})
    if cfg.address:
        return DaskTaskRunner(address=cfg.address)
    if (spec := _remote_spec(cfg)) is not None:
        return DaskTaskRunner(cluster_class=clusters.cluster_class(spec),
                              cluster_kwargs=clusters.cluster_kwargs(spec, {"PREFECT_API_URL": api_url()}),
                              adapt_kwargs=clusters.adapt_kwargs(spec))
    dask.config.set(_local_dask_config())  # the runner starts its cluster later, with the flow
    return DaskTaskRunner(cluster_class="distributed.LocalCluster", cluster_kwargs=_local_kwargs(cfg, processes),
                          adapt_kwargs=clusters.adapt_kwargs(cfg.spec) if cfg.spec is not None else None)


@contextlib.contextmanager
def dask_cluster(cfg: ClusterConfig = ClusterConfig()):
    """A scheduler address for the duration of the block: the given one, or a local or spec'd cluster's.

    One cluster then serves every flow of a run (ingest, train, score) instead of one each.
    """
    cfg = cfg.resolved()
    processes = _check(cfg)
    with _set_train_resources(cfg):
        if cfg.address:
            yield cfg.address
            return
        if (spec := _remote_spec(cfg)) is not None:
            with clusters.start_cluster(spec, {"PREFECT_API_URL": api_url()}) as cluster:
                yield cluster.scheduler_address
            return
        from distributed import LocalCluster

        with dask.config.set(_local_dask_config()), LocalCluster(**_local_kwargs(cfg, processes)) as cluster:
            if cfg.spec is not None and (adapt := clusters.adapt_kwargs(cfg.spec)) is not None:
                cluster.adapt(**adapt)
            yield cluster.scheduler_address


def task_runner(address: str | None):
    """The task runner of a flow: Dask at ``address``, or Prefect's thread pool when None."""
    if address is None:
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner()
    return DaskTaskRunner(address=address)
