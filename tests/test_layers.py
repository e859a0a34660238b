"""The three layers import only downwards (docs/architecture.md)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ORCHESTRATION = ("prefect", "prefect_dask", "tasks", "flows", "infra")
IO_LIBS = ("zarr", "h5py", "hdf5plugin", "orbax")
PURE = [
    "seti_auditor/tiling.py", "seti_auditor/synth.py", "seti_auditor/cadence.py",
    "seti_auditor/scoring.py", "seti_auditor/stats.py", "seti_auditor/cadence_test.py",
    "vae/config.py", "vae/model.py", "vae/loss.py", "vae/train.py", "vae/ops.py", "vae/parallel.py",
    "vae/calibrate.py", "vae/batches.py", "seti_auditor/audit.py", "seti_auditor/truthmatch.py",
    "seti_auditor/drift.py", "seti_auditor/cadence_search.py", "seti_auditor/configs.py", "seti_auditor/joint_search.py",
]
IO = ["seti_auditor/formats/__init__.py", "seti_auditor/formats/filterbank.py", "seti_auditor/formats/bl_h5.py",
      "seti_auditor/tilestore.py", "seti_auditor/ingest.py", "seti_auditor/archive.py", "seti_auditor/catalog.py",
      "vae/data.py", "vae/checkpoint.py", "seti_auditor/training.py", "seti_auditor/modeldir.py",
      "seti_auditor/scorestore.py", "seti_auditor/score_archive.py", "seti_auditor/plots.py", "seti_auditor/workdir.py",
      "seti_auditor/cadence_lines.py", "seti_auditor/joint_lines.py"]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _existing(paths):
    found = [ROOT / p for p in paths if (ROOT / p).exists()]
    assert found, "no module of this layer found: the layer list is stale"
    return found


@pytest.mark.parametrize("path", _existing(PURE), ids=lambda p: str(p.relative_to(ROOT)))
def test_pure_modules_do_no_io_and_no_orchestration(path):
    bad = _imports(path) & set(ORCHESTRATION + IO_LIBS)
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


@pytest.mark.parametrize("path", _existing(IO), ids=lambda p: str(p.relative_to(ROOT)))
def test_io_modules_do_not_import_orchestration(path):
    bad = _imports(path) & set(ORCHESTRATION)
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)}"


def test_tasks_stay_thin():
    """Tasks wrap library functions: no task module grows logic of its own."""
    for path in (ROOT / "tasks").glob("*.py"):
        assert len(path.read_text().splitlines()) < 150, f"{path.name} holds too much logic for a task module"
