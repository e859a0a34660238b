"""Cluster specs (infra/clusters.py): loading, validation, the batch job scripts and pod specs they
produce, the missing-extra error, and how infra.runtime uses them (a real LocalCluster)."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from infra import clusters
from infra.clusters import ClusterConfigError, ClusterSpec, cluster_kwargs, load_cluster_spec

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "infra" / "clusters"
API = {"PREFECT_API_URL": "http://head-node:4200/api"}


@pytest.mark.parametrize("name, kind", [("slurm", "slurm"), ("pbs", "pbs"), ("kubernetes", "kubernetes")])
def test_example_specs_load_and_validate(name, kind):
    spec = load_cluster_spec(EXAMPLES / f"{name}.yaml")
    assert spec.kind == kind
    assert spec.remote
    # whatever the training task asks for, a worker of the spec advertises
    for res, amount in spec.train_resources.items():
        assert spec.worker_resources[res] >= amount


def test_yaml_and_toml_give_the_same_spec(tmp_path):
    yaml_spec = load_cluster_spec(EXAMPLES / "slurm.yaml")
    raw = yaml.safe_load((EXAMPLES / "slurm.yaml").read_text())
    lines = []
    tables = {}
    for key, value in raw.items():
        if isinstance(value, dict):
            tables[key] = value
        elif isinstance(value, list):
            lines.append(f"{key} = [" + ", ".join(f'"{v}"' for v in value) + "]")
        elif isinstance(value, str):
            lines.append(f'{key} = "{value}"')
        else:
            lines.append(f"{key} = {value}")
    for key, table in tables.items():
        lines.append(f"[{key}]")
        lines.extend(f"{k} = {v}" for k, v in table.items())
    path = tmp_path / "slurm.toml"
    path.write_text("\n".join(lines) + "\n")
    assert load_cluster_spec(path) == yaml_spec
    assert yaml_spec.job_extra_directives == ("--gres=gpu:4", "--exclusive")  # lists become tuples
    assert yaml_spec.worker_resources == {"GPU": 4.0}


BAD = [
    ({"kind": "slurm", "cores": 8, "memory": "32GB", "quue": "gpu"}, "unknown setting(s) ['quue']"),
    ({"kind": "lsf"}, "kind 'lsf'"),
    ({"kind": "slurm", "cores": 8}, "needs memory"),
    ({"kind": "pbs", "memory": "32GB"}, "needs cores"),
    ({"kind": "kubernetes", "image": "w:1", "queue": "gpu"}, "queue does not apply to kind 'kubernetes'"),
    ({"kind": "kubernetes", "cores": 4}, "needs image"),
    ({"kind": "address"}, "needs address"),
    ({"kind": "address", "address": "localhost:8786"}, "does not look like tcp://HOST:PORT"),
    ({"kind": "local", "adaptive_minimum": 4, "adaptive_maximum": 2}, "adaptive_minimum (4) > adaptive_maximum (2)"),
    ({"kind": "local", "adaptive_maximum": 2}, "needs both adaptive_minimum and adaptive_maximum"),
    ({"kind": "local", "n_workers": 2, "adaptive_minimum": 1, "adaptive_maximum": 2}, "not both"),
    ({"kind": "slurm", "cores": 8, "memory": "32GB", "train_resources": {"GPU": 4}}, "would never run"),
    ({"kind": "slurm", "cores": 8, "memory": "32GB", "worker_resources": {"GPU": 2},
      "train_resources": {"GPU": 4}}, "GPU=2"),
    ({"kind": "slurm", "cores": 8, "memory": 32}, "memory needs a unit"),
    ({"kind": "slurm", "cores": 8, "memory": "32 gigs"}, "expected a size"),
    ({"kind": "slurm", "cores": 4, "memory": "32GB", "processes": 8}, "exceeds cores"),
    ({"kind": "slurm", "cores": 0, "memory": "32GB"}, "cores must be positive"),
    ({"kind": "slurm", "cores": "8", "memory": "32GB"}, "cores must be an integer"),
    ({"kind": "slurm", "cores": 8, "memory": "32GB", "walltime": "four hours"}, "expected HH:MM:SS"),
    ({"kind": "slurm", "cores": 8, "memory": "32GB", "env": {"PREFECT_API_URL": "http://x/api"}},
     "must not set PREFECT_API_URL"),
    ({"kind": "local", "worker_resources": {"GPU": -1}}, "must be a positive number"),
    ({"kind": "local", "worker_resources": ["GPU"]}, "must be a mapping"),
    (["kind", "local"], "expected a mapping"),
]


@pytest.mark.parametrize("raw, reason", BAD, ids=[r for _, r in BAD])
def test_bad_specs_are_refused_with_the_file_and_the_reason(tmp_path, raw, reason):
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ClusterConfigError) as info:
        load_cluster_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}: ")
    assert reason in message


def test_unquoted_walltime_and_unparsable_files_are_explained(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: slurm\ncores: 8\nmemory: 32GB\nwalltime: 4:00:00\n")  # YAML 1.1: 14400 (sexagesimal)
    with pytest.raises(ClusterConfigError, match="quote it"):
        load_cluster_spec(path)
    path.write_text("kind: [slurm\n")
    with pytest.raises(ClusterConfigError, match="cannot parse"):
        load_cluster_spec(path)
    bad_toml = tmp_path / "c.toml"
    bad_toml.write_text("kind = \n")
    with pytest.raises(ClusterConfigError, match=f"{bad_toml}: cannot parse"):
        load_cluster_spec(bad_toml)
    with pytest.raises(ClusterConfigError, match="no such cluster config file"):
        load_cluster_spec(tmp_path / "missing.yaml")
    other = tmp_path / "c.json"
    other.write_text("{}")
    with pytest.raises(ClusterConfigError, match="use .yaml, .yml or .toml"):
        load_cluster_spec(other)


def _no_network_paths(spec: ClusterSpec, tmp_path: Path) -> ClusterSpec:
    """The example as it would run here: no ib0 interface, logs in tmp_path (jobqueue creates the folder)."""
    return dataclasses.replace(spec, interface=None, log_directory=str(tmp_path / "logs"))


def test_slurm_spec_produces_the_expected_job_script(tmp_path):
    pytest.importorskip("dask_jobqueue")
    spec = _no_network_paths(load_cluster_spec(EXAMPLES / "slurm.yaml"), tmp_path)
    cls = clusters.cluster_class(spec)
    assert cls.__name__ == "SLURMCluster"
    with cls(**cluster_kwargs(spec, API)) as cluster:  # starts a scheduler, submits no job
        script = cluster.job_script()
        assert not cluster.workers  # adaptive from 0: nothing submitted before adapt()
    header = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for directive in ("-J seti-auditor", "-p gpu", "-A breakthrough", "--cpus-per-task=32", "-t 04:00:00",
                      "--gres=gpu:4", "--exclusive", f"-e {tmp_path / 'logs'}/"):
        assert any(line.endswith(directive) or f" {directive}" in line for line in header), (directive, header)
    assert "#SBATCH --mem=" in script
    body = script.split("\n\n", 2)[-1]
    assert body.index("export PREFECT_API_URL=http://head-node:4200/api") < body.index("dask_worker")
    assert "source /shared/venvs/seti-auditor/bin/activate" in body
    worker = next(line for line in body.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--nthreads 32" in worker and "--resources GPU=4" in worker and "--local-directory /tmp" in worker
    assert "--nworkers" not in worker  # one process per job: it holds every GPU of the node


def test_pbs_spec_produces_the_expected_job_script(tmp_path):
    pytest.importorskip("dask_jobqueue")
    spec = _no_network_paths(load_cluster_spec(EXAMPLES / "pbs.yaml"), tmp_path)
    kwargs = cluster_kwargs(spec, API)
    assert kwargs["n_workers"] == 96
    kwargs["n_workers"] = 0  # build the cluster without submitting 16 jobs (qsub is not here)
    with clusters.cluster_class(spec)(**kwargs) as cluster:
        script = cluster.job_script()
    for line in ("#PBS -N seti-auditor", "#PBS -q workq", "#PBS -A seti", "#PBS -l select=1:ncpus=36:mem=180gb",
                 "#PBS -l walltime=02:00:00", "module load python/3.11",
                 "export PREFECT_API_URL=http://head-node:4200/api"):
        assert line in script, line
    worker = next(line for line in script.splitlines() if "distributed.cli.dask_worker" in line)
    assert "--nworkers 6" in worker and "--nthreads 6" in worker  # 36 cores over 6 processes


def test_kubernetes_spec_gives_the_operator_the_worker_pod(tmp_path):
    operator = pytest.importorskip("dask_kubernetes.operator")
    spec = load_cluster_spec(EXAMPLES / "kubernetes.yaml")
    kw = cluster_kwargs(spec, API)
    assert clusters.adapt_kwargs(spec) == {"minimum": 0, "maximum": 16}
    # the operator's own spec builder, fed what KubeCluster gets (KubeCluster itself needs a cluster)
    doc = operator.make_cluster_spec(name=kw["name"], image=kw["image"], n_workers=kw["n_workers"],
                                     resources=kw["resources"], env=kw["env"],
                                     worker_command=" ".join(kw["worker_command"]))
    container = doc["spec"]["worker"]["spec"]["containers"][0]
    assert container["image"] == "seti-auditor-worker:0.1.0"
    assert container["args"][:2] == ["dask", "worker"]
    assert "--resources" in container["args"] and "GPU=4" in container["args"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "4"
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["PREFECT_API_URL"] == API["PREFECT_API_URL"] and env["XLA_PYTHON_CLIENT_MEM_FRACTION"] == "0.9"
    # the Helm values run the same image
    values = yaml.safe_load((ROOT / "infra" / "helm" / "values.yaml").read_text())
    image = values["worker"]["image"]
    assert f"{image['repository']}:{image['tag']}" == spec.image


@pytest.mark.parametrize("kind, module, package", [("kubernetes", "dask_kubernetes", "dask-kubernetes"),
                                                    ("slurm", "dask_jobqueue", "dask-jobqueue"),
                                                    ("pbs", "dask_jobqueue", "dask-jobqueue")])
def test_a_missing_extra_is_named(monkeypatch, kind, module, package):
    for name in [m for m in sys.modules if m == module or m.startswith(module + ".")] + [module]:
        monkeypatch.setitem(sys.modules, name, None)  # import fails as if not installed
    spec = ClusterSpec(kind=kind, image="w:1") if kind == "kubernetes" else ClusterSpec(kind=kind, cores=2,
                                                                                         memory="4GB")
    with pytest.raises(ImportError) as info:
        clusters.cluster_class(spec)
    assert package in str(info.value) and "seti-auditor[cluster]" in str(info.value)


def test_worker_image_entrypoint_runs_dask_worker_or_the_given_command():
    entry = ROOT / "infra" / "docker" / "entrypoint.sh"
    runs = {args: subprocess.run(["sh", str(entry), *args, "--help"], capture_output=True, text=True, timeout=60)
            for args in [(), ("dask-worker",), ("dask-scheduler",)]}
    assert all(r.returncode == 0 for r in runs.values()), {k: r.stderr[-500:] for k, r in runs.items()}
    assert runs[()].stdout.startswith("Usage: dask worker")
    assert runs[("dask-worker",)].stdout.startswith("Usage: dask worker")  # the Helm chart's argument
    assert runs[("dask-scheduler",)].stdout.startswith("Usage: dask scheduler")


# --- infra.runtime with a spec ---------------------------------------------------------------


@pytest.fixture
def no_prefect_server(monkeypatch):
    """Ephemeral mode whatever the session set up: no PREFECT_API_URL."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield


def test_remote_specs_need_a_prefect_server(no_prefect_server):
    from infra.runtime import ClusterConfig, dask_cluster, make_task_runner

    cfg = ClusterConfig(spec=ClusterSpec(kind="slurm", cores=2, memory="4GB"))
    with pytest.raises(RuntimeError, match="needs a Prefect API server"):
        make_task_runner(cfg)
    with pytest.raises(RuntimeError, match="needs a Prefect API server"):
        with dask_cluster(cfg):
            pass


def test_conflicting_cluster_options_are_usage_errors(tmp_path):
    from flows.cli import _cluster, build_parser

    path = tmp_path / "addr.yaml"
    path.write_text("kind: address\naddress: tcp://10.0.0.1:8786\n")
    parse = build_parser().parse_args
    args = parse(["score", "--workdir", str(tmp_path), "--cluster-config", str(path)])
    assert _cluster(args).resolved().address == "tcp://10.0.0.1:8786"
    args = parse(["score", "--workdir", str(tmp_path), "--cluster-config", str(path), "--dask-address", "tcp://x:1"])
    with pytest.raises(SystemExit, match="not both"):
        _cluster(args)
    path.write_text("kind: slurm\ncores: 2\n")
    args = parse(["score", "--workdir", str(tmp_path), "--cluster-config", str(path)])
    with pytest.raises(SystemExit, match=f"{path}: kind 'slurm' needs memory"):
        _cluster(args)


def test_local_spec_starts_workers_with_its_resources_and_pins_training(no_prefect_server):
    from distributed import Client

    from infra.runtime import ClusterConfig, dask_cluster, train_annotations

    spec = clusters.spec_from_mapping({"kind": "local", "n_workers": 2, "threads_per_worker": 1,
                                       "worker_resources": {"GPU": 1}, "train_resources": {"GPU": 1}})
    assert train_annotations() == {}
    with dask_cluster(ClusterConfig(spec=spec)) as address:
        assert train_annotations() == {"resources": {"GPU": 1.0}}
        with Client(address) as client:
            workers = client.scheduler_info(n_workers=-1)["workers"].values()
            assert len(workers) == 2
            assert all(w["resources"] == {"GPU": 1.0} for w in workers)
            assert all(w["nthreads"] == 1 for w in workers)
    assert train_annotations() == {}


@pytest.mark.parametrize("processes", [False, True])
def test_local_clusters_run_without_the_dashboard_diagnostics(request, processes):
    """A command's own local cluster (threads, or processes with a Prefect server): no statistical profiler on
    the workers, their system monitor every 2 s and their event-loop tick every 0.5 s, in the scheduler too
    (infra.runtime.LOCAL_DASK_DEFAULTS); a value the user set in Dask's configuration is kept."""
    import dask
    from distributed import Client

    from infra.runtime import ClusterConfig, dask_cluster

    request.getfixturevalue("prefect_server" if processes else "no_prefect_server")

    def settings(dask_worker):
        return ("profile" in dask_worker.periodic_callbacks, dask_worker.periodic_callbacks["monitor"].callback_time,
                dask_worker.periodic_callbacks["tick"].callback_time)

    with dask_cluster(ClusterConfig(workers=1, processes=processes)) as address, Client(address) as client:
        assert list(client.run(settings).values()) == [(False, 2000, 500)]
        assert client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.periodic_callbacks["tick"].callback_time) == 500
    with dask.config.set({"distributed.admin.system-monitor.interval": "1s", "distributed.admin.tick.interval": "50ms"}):
        with dask_cluster(ClusterConfig(workers=1, processes=processes)) as address, Client(address) as client:
            assert list(client.run(settings).values()) == [(False, 1000, 50)]
