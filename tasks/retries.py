"""When a failed task is worth retrying.

Tasks retry (``retries=``) because most failures of a worker are passing: a lost worker, a
network file system that hiccups, a node going down. A file system that refuses writes is
not: a full disk, a read-only mount or an exhausted quota stays so for minutes or hours,
and every retry of every region would only write the same error again (a full disk used
to cost a run three attempts per region, with their delays, before it reported anything).
"""

from __future__ import annotations

import errno

PERMANENT_ERRNOS = frozenset({errno.ENOSPC, errno.EROFS, errno.EDQUOT})  # full, read-only, over quota


def _exception(state) -> BaseException | None:
    data = getattr(state, "data", None)
    if isinstance(data, BaseException):
        return data
    try:
        result = state.result(raise_on_failure=False)
    except Exception:  # a result that cannot be read back: retry as usual
        return None
    return result if isinstance(result, BaseException) else None


def retry_unless_disk_refuses(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry, except when a write failed with ENOSPC, EROFS or EDQUOT."""
    exc = _exception(state)
    while exc is not None:  # the OSError itself, or what it caused
        if isinstance(exc, OSError) and exc.errno in PERMANENT_ERRNOS:
            return False
        exc = exc.__cause__ or exc.__context__
    return True
