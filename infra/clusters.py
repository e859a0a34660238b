"""Cluster specs selected by configuration: local, an existing scheduler, SLURM, PBS, Kubernetes.

A spec is a small YAML or TOML file (examples in ``infra/clusters/``) loaded into a frozen
:class:`ClusterSpec` and checked before anything starts::

    seti-auditor run ARCHIVE --workdir W --cluster-config infra/clusters/slurm.yaml

:mod:`infra.runtime` turns the spec into a Dask cluster for the length of a run; flows never
build clusters themselves. The batch-system and Kubernetes classes come from the ``cluster``
extra (``pip install 'seti-auditor[cluster]'``: dask-jobqueue, dask-kubernetes) and are
imported only when such a spec is used.

Remote workers (SLURM, PBS, Kubernetes, an existing scheduler) report their task runs to a
Prefect server that they must be able to reach: its ``PREFECT_API_URL`` is put into their
environment by :func:`cluster_kwargs`. They also read and write the archive and the work
directory by the same paths as the flow's process: a shared file system (or the same volume
mounted at the same place in every pod).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import re
import shlex
from pathlib import Path
from typing import Any, Iterator, Mapping

KINDS = ("local", "address", "slurm", "pbs", "kubernetes")
JOBQUEUE = ("slurm", "pbs")
REMOTE = ("address", "slurm", "pbs", "kubernetes")  # workers that are not this machine's processes
EXTRA_HINT = "pip install 'seti-auditor[cluster]'"


class ClusterConfigError(ValueError):
    """A cluster spec that cannot be used; the message starts with the file (or ``<spec>``)."""

    def __init__(self, source: str | os.PathLike, reason: str) -> None:
        self.source = os.fspath(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")

    def __reduce__(self):
        return (type(self), (self.source, self.reason))


@dataclasses.dataclass(frozen=True)
class ClusterSpec:
    """Which Dask cluster runs the tasks, and how its workers are shaped."""

    kind: str = "local"  # local | address (an existing scheduler) | slurm | pbs | kubernetes
    name: str = "seti-auditor"  # job name (slurm/pbs) or cluster name (kubernetes)
    address: str | None = None  # scheduler to connect to, tcp://HOST:PORT (kind "address" only)
    n_workers: int | None = None  # workers started up front; local: None = one per core; others: None = 1
    adaptive_minimum: int | None = None  # adaptive scaling: fewest workers (set both bounds, not n_workers)
    adaptive_maximum: int | None = None  # adaptive scaling: most workers
    threads_per_worker: int = 1  # threads in each local worker (kind "local")
    cores: int | None = None  # cores per batch job (split over its worker processes) / CPU limit of a pod
    memory: str | None = None  # memory per batch job / pod, e.g. "64GB" (split over the job's processes)
    processes: int | None = None  # worker processes per batch job (default 1: one worker holds the whole job)
    gpus: int | None = None  # GPUs per pod (kubernetes limit nvidia.com/gpu); for slurm/pbs request them in
    #                          job_extra_directives / resource_spec and advertise them in worker_resources
    walltime: str | None = None  # batch job time limit, HH:MM:SS (or D-HH:MM:SS on SLURM)
    queue: str | None = None  # SLURM partition / PBS queue
    account: str | None = None  # account or project charged for the jobs (-A)
    resource_spec: str | None = None  # PBS "-l" resource line, e.g. "select=1:ncpus=32:ngpus=4:mem=256gb"
    job_extra_directives: tuple[str, ...] = ()  # extra #SBATCH / #PBS directives, e.g. "--gres=gpu:4"
    job_script_prologue: tuple[str, ...] = ()  # shell lines run before the worker starts (module load, venv)
    interface: str | None = None  # network interface for scheduler and workers on a batch system (e.g. ib0)
    local_directory: str | None = None  # node-local scratch directory for worker spill files
    log_directory: str | None = None  # where batch jobs write their stdout and stderr
    python: str | None = None  # interpreter on the compute nodes (default: the one running this)
    image: str | None = None  # worker container image (kubernetes), built from infra/docker/Dockerfile
    namespace: str | None = None  # kubernetes namespace (default: the current context's)
    worker_resources: Mapping[str, float] = dataclasses.field(default_factory=dict)  # abstract resources each
    #                                       worker advertises (dask worker --resources), e.g. {GPU: 4}
    train_resources: Mapping[str, float] = dataclasses.field(default_factory=dict)  # what the training task
    #                                       asks of its worker (a Dask annotation), e.g. {GPU: 4}
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)  # extra environment of the workers

    @property
    def adaptive(self) -> bool:
        """Whether the worker count follows the load between the two bounds."""
        return self.adaptive_maximum is not None

    @property
    def remote(self) -> bool:
        """Whether the workers are processes beyond this machine's control (need a Prefect server)."""
        return self.kind in REMOTE


# which kinds each field applies to (fields absent here apply to every kind)
_APPLIES = {
    "address": ("address",),
    "n_workers": ("local", "slurm", "pbs", "kubernetes"),
    "adaptive_minimum": ("local", "slurm", "pbs", "kubernetes"),
    "adaptive_maximum": ("local", "slurm", "pbs", "kubernetes"),
    "threads_per_worker": ("local",),
    "cores": ("slurm", "pbs", "kubernetes"),
    "memory": ("slurm", "pbs", "kubernetes"),
    "processes": JOBQUEUE,
    "gpus": ("kubernetes",),
    "walltime": JOBQUEUE,
    "queue": JOBQUEUE,
    "account": JOBQUEUE,
    "resource_spec": ("pbs",),
    "job_extra_directives": JOBQUEUE,
    "job_script_prologue": JOBQUEUE,
    "interface": JOBQUEUE,
    "local_directory": ("local", "slurm", "pbs"),
    "log_directory": JOBQUEUE,
    "python": JOBQUEUE,
    "image": ("kubernetes",),
    "namespace": ("kubernetes",),
    "worker_resources": ("local", "slurm", "pbs", "kubernetes"),
    "env": ("slurm", "pbs", "kubernetes"),
}
_INT = ("n_workers", "adaptive_minimum", "adaptive_maximum", "threads_per_worker", "cores", "processes", "gpus")
_STR = ("kind", "name", "address", "memory", "walltime", "queue", "account", "resource_spec", "interface",
        "local_directory", "log_directory", "python", "image", "namespace")
_LIST = ("job_extra_directives", "job_script_prologue")
_MAP = ("worker_resources", "train_resources", "env")
_MEMORY = re.compile(r"^\d+(\.\d+)?\s*([kKmMgGtTpP]i?)?[bB]?$")
_WALLTIME = re.compile(r"^(\d+-)?\d+(:\d{2}){0,2}$")
_ADDRESS = re.compile(r"^[a-z][a-z0-9+.-]*://[^\s/:]+(:\d+)?$")
_RESOURCE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*$")


def _fail(source: str, reason: str) -> None:
    raise ClusterConfigError(source, reason)


def _coerce(raw: Mapping[str, Any], source: str) -> dict:
    """Type-check the raw mapping of a file and convert lists to tuples, numbers to floats."""
    if not isinstance(raw, Mapping):
        _fail(source, f"expected a mapping of settings at the top level, got {type(raw).__name__}")
    known = {f.name for f in dataclasses.fields(ClusterSpec)}
    unknown = sorted(set(raw) - known)
    if unknown:
        _fail(source, f"unknown setting(s) {unknown}; known: {sorted(known)}")
    out: dict = {}
    for key, value in raw.items():
        if value is None:
            continue
        if key in _INT:
            if isinstance(value, bool) or not isinstance(value, int):
                _fail(source, f"{key} must be an integer, got {value!r}")
            if value < (0 if key == "adaptive_minimum" else 1):
                _fail(source, f"{key} must be {'>= 0' if key == 'adaptive_minimum' else 'positive'}, got {value}")
        elif key in _STR:
            if isinstance(value, (int, float)) and not isinstance(value, bool) and key == "memory":
                _fail(source, f"memory needs a unit, e.g. \"{value}GB\"")
            if isinstance(value, int) and not isinstance(value, bool) and key == "walltime":
                _fail(source, f"walltime read as the number {value}: quote it, e.g. walltime: \"04:00:00\"")
            if not isinstance(value, str) or not value.strip():
                _fail(source, f"{key} must be a non-empty string, got {value!r}")
        elif key in _LIST:
            if isinstance(value, str):
                value = [value]
            if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
                _fail(source, f"{key} must be a list of strings, got {value!r}")
            value = tuple(value)
        elif key in _MAP:
            if not isinstance(value, Mapping):
                _fail(source, f"{key} must be a mapping, got {value!r}")
            if key == "env":
                value = {str(k): str(v) for k, v in value.items()}
            else:
                for k, v in value.items():
                    if not _RESOURCE.match(str(k)):
                        _fail(source, f"{key}: resource name {k!r} must be a word such as GPU")
                    if isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0:
                        _fail(source, f"{key}.{k} must be a positive number, got {v!r}")
                value = {str(k): float(v) for k, v in value.items()}
        out[key] = value
    return out


def validate(spec: ClusterSpec, source: str = "<spec>") -> ClusterSpec:
    """Check a spec for consistency; returns it unchanged or raises :class:`ClusterConfigError`."""
    if spec.kind not in KINDS:
        _fail(source, f"kind {spec.kind!r}; expected one of {list(KINDS)}")
    defaults = ClusterSpec()
    for name, kinds in _APPLIES.items():
        if getattr(spec, name) != getattr(defaults, name) and spec.kind not in kinds:
            _fail(source, f"{name} does not apply to kind {spec.kind!r} (only to {', '.join(kinds)})")
    if spec.kind == "address":
        if not spec.address:
            _fail(source, "kind 'address' needs address: tcp://HOST:PORT of a running scheduler")
        if not _ADDRESS.match(spec.address):
            _fail(source, f"address {spec.address!r} does not look like tcp://HOST:PORT")
    if spec.kind in JOBQUEUE:
        for need in ("cores", "memory"):
            if getattr(spec, need) is None:
                _fail(source, f"kind {spec.kind!r} needs {need} (per batch job)")
        if spec.processes is not None and spec.processes > spec.cores:
            _fail(source, f"processes ({spec.processes}) exceeds cores ({spec.cores}): each process needs a core")
        if spec.walltime is not None and not _WALLTIME.match(spec.walltime):
            _fail(source, f"walltime {spec.walltime!r}: expected HH:MM:SS (or D-HH:MM:SS)")
    if spec.kind == "kubernetes" and not spec.image:
        _fail(source, "kind 'kubernetes' needs image: the worker image (infra/docker/Dockerfile)")
    if spec.memory is not None and not _MEMORY.match(spec.memory):
        _fail(source, f"memory {spec.memory!r}: expected a size such as 64GB or 16GiB")
    if (spec.adaptive_minimum is None) != (spec.adaptive_maximum is None):
        _fail(source, "adaptive scaling needs both adaptive_minimum and adaptive_maximum")
    if spec.adaptive:
        if spec.adaptive_minimum > spec.adaptive_maximum:
            _fail(source, f"adaptive_minimum ({spec.adaptive_minimum}) > adaptive_maximum ({spec.adaptive_maximum})")
        if spec.n_workers is not None:
            _fail(source, "give either n_workers (a fixed cluster) or the adaptive bounds, not both")
    if spec.kind != "address":  # the workers are ours: the training task must fit one of them
        for res, amount in spec.train_resources.items():
            have = spec.worker_resources.get(res)
            if have is None or have < amount:
                _fail(source, f"train_resources asks {res}={amount:g} but each worker advertises "
                              f"{res}={have if have is not None else 0:g} (worker_resources): the task would never run")
    if "PREFECT_API_URL" in spec.env:
        _fail(source, "env must not set PREFECT_API_URL: the workers get the flow's own API URL")
    return spec


def spec_from_mapping(raw: Mapping[str, Any], source: str = "<spec>") -> ClusterSpec:
    """A validated :class:`ClusterSpec` from a mapping (a parsed YAML/TOML file)."""
    return validate(ClusterSpec(**_coerce(raw, source)), source)


def load_cluster_spec(path: str | os.PathLike) -> ClusterSpec:
    """Read a cluster spec from a ``.yaml``/``.yml`` or ``.toml`` file (a flat mapping of settings)."""
    p = Path(path)
    if not p.is_file():
        _fail(str(p), "no such cluster config file")
    text = p.read_text()
    suffix = p.suffix.lower()
    try:
        if suffix in (".yaml", ".yml"):
            import yaml

            raw = yaml.safe_load(text)
        elif suffix == ".toml":
            import tomllib

            raw = tomllib.loads(text)
        else:
            _fail(str(p), f"unknown cluster config format {suffix!r}; use .yaml, .yml or .toml")
    except ClusterConfigError:
        raise
    except Exception as exc:  # yaml.YAMLError, tomllib.TOMLDecodeError: report the file and the parser's reason
        _fail(str(p), f"cannot parse: {exc}")
    return spec_from_mapping(raw if raw is not None else {}, str(p))


# ---------------------------------------------------------------------------------------------
# building


def _resources_arg(resources: Mapping[str, float]) -> list[str]:
    return ["--resources", ",".join(f"{k}={v:g}" for k, v in resources.items())] if resources else []


def _import_cluster_class(spec: ClusterSpec):
    try:
        if spec.kind == "slurm":
            from dask_jobqueue import SLURMCluster as cls
        elif spec.kind == "pbs":
            from dask_jobqueue import PBSCluster as cls
        elif spec.kind == "kubernetes":
            from dask_kubernetes.operator import KubeCluster as cls
        else:
            from distributed import LocalCluster as cls
    except ImportError as exc:
        package = "dask-kubernetes" if spec.kind == "kubernetes" else "dask-jobqueue"
        raise ImportError(f"a {spec.kind} cluster needs {package}, from the 'cluster' extra: {EXTRA_HINT} "
                          f"({exc})") from exc
    return cls


def cluster_class(spec: ClusterSpec):
    """The Dask cluster class of a spec (imported now: the ``cluster`` extra for slurm/pbs/kubernetes)."""
    if spec.kind == "address":
        raise ValueError("kind 'address' connects to an existing scheduler: there is no cluster to build")
    return _import_cluster_class(spec)


def cluster_kwargs(spec: ClusterSpec, env: Mapping[str, str] | None = None) -> dict:
    """Keyword arguments of :func:`cluster_class` for this spec.

    ``env`` is added to the workers' environment (the runtime passes ``PREFECT_API_URL``);
    only settings given in the spec are passed, so dask-jobqueue's and dask-kubernetes' own
    Dask configuration still fills the rest. Nothing is imported or started here.
    """
    env = {**spec.env, **(env or {})}
    n = None if spec.adaptive else spec.n_workers
    if spec.kind == "local":
        kw = {"n_workers": n if n is not None else max(1, os.cpu_count() or 1),
              "threads_per_worker": spec.threads_per_worker, "dashboard_address": ":0"}
        if spec.worker_resources:
            kw["resources"] = dict(spec.worker_resources)
        if spec.local_directory:
            kw["local_directory"] = spec.local_directory
        return kw
    if spec.kind in JOBQUEUE:
        kw: dict = {"cores": spec.cores, "memory": spec.memory, "processes": spec.processes or 1,
                    "job_name": spec.name, "n_workers": n if n is not None else (0 if spec.adaptive else 1),
                    "scheduler_options": {"dashboard_address": ":0"}}
        for key in ("walltime", "queue", "account", "interface", "local_directory", "log_directory", "python"):
            if getattr(spec, key) is not None:
                kw[key] = getattr(spec, key)
        if spec.kind == "pbs" and spec.resource_spec:
            kw["resource_spec"] = spec.resource_spec
        if spec.job_extra_directives:
            kw["job_extra_directives"] = list(spec.job_extra_directives)
        prologue = [f"export {k}={shlex.quote(v)}" for k, v in env.items()] + list(spec.job_script_prologue)
        if prologue:
            kw["job_script_prologue"] = prologue
        if spec.worker_resources:
            kw["worker_extra_args"] = _resources_arg(spec.worker_resources)
        return kw
    if spec.kind == "kubernetes":
        limits: dict = {}
        if spec.cores:
            limits["cpu"] = str(spec.cores)
        if spec.memory:
            limits["memory"] = spec.memory
        if spec.gpus:
            limits["nvidia.com/gpu"] = str(spec.gpus)
        command = ["dask", "worker"] + (["--nthreads", str(spec.cores)] if spec.cores else []) + \
            _resources_arg(spec.worker_resources)
        kw = {"name": spec.name, "image": spec.image, "n_workers": n if n is not None else (0 if spec.adaptive else 1),
              "worker_command": command, "env": dict(env)}
        if limits:
            kw["resources"] = {"limits": limits, "requests": dict(limits)}
        if spec.namespace:
            kw["namespace"] = spec.namespace
        return kw
    raise ValueError(f"kind {spec.kind!r} has no cluster to build")


def adapt_kwargs(spec: ClusterSpec) -> dict | None:
    """Arguments of ``cluster.adapt`` (in workers), or None for a fixed-size cluster."""
    if not spec.adaptive:
        return None
    return {"minimum": spec.adaptive_minimum, "maximum": spec.adaptive_maximum}


@contextlib.contextmanager
def start_cluster(spec: ClusterSpec, env: Mapping[str, str] | None = None) -> Iterator[Any]:
    """Build the spec's cluster, scale it (fixed or adaptive), and close it after the block."""
    cls = cluster_class(spec)
    with cls(**cluster_kwargs(spec, env)) as cluster:
        if (adapt := adapt_kwargs(spec)) is not None:
            cluster.adapt(**adapt)
        yield cluster
