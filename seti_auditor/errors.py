"""Errors that name the offending input."""

from __future__ import annotations

import os


class InputFileError(ValueError):
    """An input file that cannot be processed; carries the file and the reason.

    The message always starts with the path so that a user reading a log or the
    ingest manifest can find the file without context.
    """

    def __init__(self, path: str | os.PathLike, reason: str) -> None:
        self.path = os.fspath(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")

    def __reduce__(self):  # picklable across Dask workers
        return (type(self), (self.path, self.reason))
