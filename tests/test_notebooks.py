"""The notebooks in notebooks/: stored without outputs, and each one runs without error on the demo.

The session's one ``seti-auditor demo`` run (``ui_demo`` in tests/conftest.py, also read by the UI
tests) is what every notebook gets through ``SETI_AUDITOR_DEMO_DIR``; each notebook runs in a fresh ``python3``
kernel (nbclient) whose working directory and ``TMPDIR`` are a temporary directory, so nothing
is written into the repository. The executed copies live in memory only.
"""

from __future__ import annotations

import ast
import os
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
NAMES = ("01_archive_and_tiles.ipynb", "02_train_and_calibrate.ipynb", "03_review_candidates.ipynb")
CELL_TIMEOUT_S = 300  # one cell; the slowest here trains a model or draws the candidate plots
MIN_FIGURES = {"01_archive_and_tiles.ipynb": 5, "02_train_and_calibrate.ipynb": 5, "03_review_candidates.ipynb": 3}
ORCHESTRATION = {"prefect", "prefect_dask", "dask", "distributed", "tasks", "flows", "infra"}


def _read(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOKS / name, as_version=4)


def _code(nb) -> str:
    """The code of a notebook as Python (IPython magics dropped)."""
    return "\n".join(line for cell in nb.cells if cell.cell_type == "code"
                     for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))


def test_every_notebook_is_listed():
    assert sorted(p.name for p in NOTEBOOKS.glob("*.ipynb")) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_stored_notebook_is_valid_and_stripped(name):
    nb = _read(name)
    nbformat.validate(nb)
    assert nb.metadata["kernelspec"]["name"] == "python3"
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code"
    for i, cell in enumerate(code):
        assert cell.outputs == [], f"{name}: code cell {i} has stored outputs; strip them before committing"
        assert cell.execution_count is None, f"{name}: code cell {i} has an execution count"
        assert not {"execution", "collapsed", "scrolled"} & set(cell.metadata), f"{name}: cell {i} run metadata"
    assert "widgets" not in nb.metadata


@pytest.mark.parametrize("name", NAMES)
def test_notebook_imports_the_project_and_no_orchestration(name):
    """Glue and plots only: the pipeline comes from seti_auditor / vae, runs from the CLI."""
    tree = ast.parse(_code(_read(name)))
    modules = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    modules |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert "seti_auditor" in modules
    assert not modules & ORCHESTRATION, f"{name} imports {sorted(modules & ORCHESTRATION)}"
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)], f"{name} defines classes"


def _env(tmp: Path) -> dict[str, str]:
    """Environment of the demo and of the kernels: private Prefect home, temp dirs, this tree first."""
    env = {**os.environ, "PREFECT_HOME": str(tmp / "prefect-home"), "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
           "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
           "IPYTHONDIR": str(tmp / "ipython"), "MPLCONFIGDIR": str(tmp / "mpl"),
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}
    for name in ("PREFECT_API_URL", "SETI_AUDITOR_DEMO_DIR", "SETI_AUDITOR_DETECTION_JSON"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def demo(ui_demo) -> Path:
    """The session's one demo run (``seti-auditor demo``, one cadence; tests/conftest.py ``ui_demo``), shared."""
    work = Path(ui_demo["work"])
    assert (work / "catalog.zarr").is_dir() and (work / "archive" / "truth.json").is_file()
    return work


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_on_the_demo(name, demo, tmp_path):
    nb = _read(name)
    before = _snapshot(demo)
    env = {**_env(tmp_path), "SETI_AUDITOR_DEMO_DIR": str(demo), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, startup_timeout=180, kernel_name="python3",
                            allow_errors=False)
    client.execute(env=env, cwd=str(tmp_path))  # raises CellExecutionError naming the failing cell

    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    figures = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(figures) >= MIN_FIGURES[name], f"{name} drew {len(figures)} figures"
    assert _snapshot(demo) == before, f"{name} wrote into the demo workdir"
    assert not list((tmp_path / "tmp").iterdir()), f"{name} left its scratch directory behind"
