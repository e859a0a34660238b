"""Batch plans and in-memory batch sources (pure: no files).

A batch source has ``batch_size``, ``steps_per_epoch`` and ``batches(epoch, start=0)``,
which yields :class:`Batch` es; the order is a function of (seed, epoch) only, so a resumed
training sees exactly the batches an uninterrupted one would. :class:`vae.data.ZarrBatches`
streams the same kind of plan from a tile store.
"""

from __future__ import annotations

from typing import Iterator, NamedTuple

import numpy as np


class Batch(NamedTuple):
    """One batch: tiles (store space) and their tile indices (store rows, or array rows)."""

    tiles_NxTxF: np.ndarray
    index_N: np.ndarray


def epoch_plan(indices_K: np.ndarray, batch_size: int, *, seed: int | None, epoch: int,
               group_K: np.ndarray | None = None, window: int = 1, drop_remainder: bool = True) -> list[np.ndarray]:
    """The batches of one epoch, as arrays of indices.

    ``seed=None``: the given order, no shuffling. Otherwise, with ``group_K`` (the storage
    chunk of each index), the groups are permuted, taken ``window`` at a time and the indices
    inside each window permuted: a shuffle that reads only ``window`` chunks at once.
    Without groups the whole epoch is permuted.
    """
    idx = np.asarray(indices_K, dtype=np.int64)
    if seed is not None:
        rng = np.random.default_rng([int(seed), int(epoch)])
        if group_K is None:
            idx = idx[rng.permutation(idx.size)]
        else:
            groups = np.unique(group_K)
            groups = groups[rng.permutation(groups.size)]
            parts = []
            for w in range(0, groups.size, max(1, window)):
                sel = idx[np.isin(group_K, groups[w:w + window])]
                parts.append(sel[rng.permutation(sel.size)])
            idx = np.concatenate(parts) if parts else idx[:0]
    n = idx.size // batch_size if drop_remainder else -(-idx.size // batch_size)
    return [idx[i * batch_size:(i + 1) * batch_size] for i in range(n)]


class ArrayBatches:
    """Batches from an in-memory array ``tiles_NxTxF`` (tests, small sets, benchmarks)."""

    def __init__(self, tiles_NxTxF: np.ndarray, batch_size: int, *, shuffle_seed: int | None = 0,
                 drop_remainder: bool = True):
        self.tiles = np.asarray(tiles_NxTxF, dtype=np.float32)
        self.batch_size = int(batch_size)
        self.shuffle_seed = shuffle_seed
        self.drop_remainder = drop_remainder
        self.selection = None
        if self.steps_per_epoch == 0:
            raise ValueError(f"{len(self.tiles)} tiles make no batch of {batch_size}")

    @property
    def tile_shape(self) -> tuple[int, int]:
        return tuple(self.tiles.shape[1:])

    @property
    def steps_per_epoch(self) -> int:
        n = len(self.tiles)
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        plan = epoch_plan(np.arange(len(self.tiles)), self.batch_size, seed=self.shuffle_seed, epoch=epoch,
                          drop_remainder=self.drop_remainder)
        for ix in plan[start:]:
            yield Batch(self.tiles[ix], ix)

    def __iter__(self) -> Iterator[Batch]:
        return self.batches(0)
