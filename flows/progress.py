"""Progress of a flow's long loops: a Prefect progress artifact (the UI) and a bar in the run's log (the terminal)."""

from __future__ import annotations

from collections.abc import Callable

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact

BAR = 20  # characters of the terminal bar


def progress_reporter(key: str, unit: str, total: int, step_pct: float = 10.0) -> Callable[[int], None]:
    """A callback ``report(done)`` for a loop over ``total`` units of work.

    It moves the progress artifact ``key`` (updated when the whole percent changes, so a long
    loop does not make one API call per unit) and logs ``[#####...............] 12/48 regions
    (25%)`` each ``step_pct`` percent and at the end; the flow's log is what the CLI shows.
    """
    logger = get_run_logger()
    artifact = create_progress_artifact(0.0 if total else 100.0, key=key, description=f"{unit} (%)")
    state = {"pct": 0, "logged": 0.0}

    def report(done: int) -> None:
        pct = 100.0 * done / max(total, 1)
        if int(pct) != state["pct"]:
            state["pct"] = int(pct)
            update_progress_artifact(artifact, pct)
        if pct - state["logged"] >= step_pct or done == total:
            state["logged"] = pct
            filled = round(BAR * done / max(total, 1))
            logger.info("[%s%s] %d/%d %s (%.0f%%)", "#" * filled, "." * (BAR - filled), done, total, unit, pct)

    return report
