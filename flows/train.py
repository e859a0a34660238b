"""The train flow: tiles.zarr -> a calibrated VAE in ``WORKDIR/model``."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import dask
from prefect import flow
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.runtime import flow_run

from infra.runtime import train_annotations
from seti_auditor import workdir as wd
from seti_auditor.configs import from_json
from seti_auditor.training import TrainJob, TrainReport
from tasks.train import train_vae


def _run_name() -> str:
    """``train PRESET VAE on WORKDIR (N epochs)``: the run's name in the UI (the version exists only after)."""
    params = flow_run.parameters
    try:
        job = from_json(TrainJob, params.get("job"), "job")
    except ValueError:  # the flow itself reports the bad setting
        return f"train VAE on {Path(params['workdir']).name} (invalid job)"
    return f"train {job.preset} VAE on {Path(params['workdir']).name} ({job.epochs} epochs)"


@flow(name="train", flow_run_name=_run_name, validate_parameters=False)
def train_flow(workdir: str, job: TrainJob | None = None) -> TrainReport:
    """Train the auditor on the noise and RFI tiles of ``workdir/tiles.zarr``.

    ``job``: a TrainJob, or (from a deployment) a possibly partial JSON object of its settings, e.g.
    ``{"epochs": 5, "preset": "article"}`` (:func:`seti_auditor.configs.from_json`).
    """
    job = from_json(TrainJob, job, "job")  # JSON from a deployment, or a config
    with wd.locked(workdir):
        # on a worker of the flow's task runner (with every device of that worker: vae.train.fit),
        # pinned to workers with the configured resources, e.g. GPU (infra.runtime.train_annotations)
        with dask.annotate(**train_annotations()):
            future = train_vae.submit(workdir, job)
        report = future.result()
    _report(report)
    return report


def loss_curve_png(history: list[dict]) -> bytes:
    """A PNG of the loss per epoch (reconstruction and KL on their own axes)."""
    from matplotlib.figure import Figure  # the object API: no pyplot state, safe in any thread

    epochs = [h["epoch"] + 1 for h in history]
    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.subplots()
    fig.subplots_adjust(left=0.13, right=0.87, bottom=0.15, top=0.95)  # fixed margins: no layout pass
    ax.plot(epochs, [h["loss"] for h in history], "o-", label="loss")
    ax.plot(epochs, [h["recon"] for h in history], "s--", label="reconstruction")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss per tile")
    ax.set_yscale("log")
    ax2 = ax.twinx()
    ax2.plot(epochs, [h["kl"] for h in history], "^:", color="tab:red", label="KL")
    ax2.set_ylabel("KL")
    fig.legend(loc="upper right", fontsize=8)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def _report(report: TrainReport) -> None:
    rows = [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in h.items()
             if k in ("epoch", "loss", "recon", "kl", "mse", "tiles_per_s")} for h in report.history]
    if rows:
        create_table_artifact(rows, key="train-loss", description="loss per epoch")
        png = base64.b64encode(loss_curve_png(report.history)).decode()
        create_markdown_artifact(f"![loss curve](data:image/png;base64,{png})", key="train-loss-curve",
                                 description="loss curve")
    cal = report.calibration
    lines = [f"# Model `{report.model_version}`", f"* directory: `{report.model_dir}`",
             f"* training tiles: {report.n_train}; held-out null tiles: {report.n_null}",
             f"* compile time: {report.compile_s:.1f} s; resumed from step: {report.resumed_from}"]
    for name, c in cal.items():
        lines.append(f"* {name}: mu {c['mean']:.4g}, sigma {c['std']:.4g}, article T = mu + 5 sigma = "
                     f"{c['threshold_article']:.4g}; robust T = {c['threshold_robust']:.4g}")
    create_markdown_artifact("\n".join(lines), key="train-summary", description="trained model")
