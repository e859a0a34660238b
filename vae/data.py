"""Training-set selection and streaming batches from ``tiles.zarr`` (I/O layer).

* :func:`select_training_tiles` picks the noise-only tiles (OFF-source tiles and the tiles
  the robust pre-screen calls ordinary, minus known signals) and splits off a held-out set
  for calibration; the :class:`TileSelection` records the rule and is saved with the model.
* :class:`ZarrBatches` streams batches chunk by chunk with a background prefetch thread:
  memory stays bounded by ``window`` chunks plus ``prefetch`` batches, whatever the store size.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import queue
import threading
from typing import Iterator, Sequence

import numpy as np
import zarr

from vae.batches import Batch, epoch_plan

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True, eq=False)
class TileSelection:
    """Which tiles of a store (row indices along ``tile``) and the rule that chose them."""

    store_path: str  # the tile store the indices refer to
    indices: np.ndarray  # sorted int64 rows of the store
    rule: dict  # JSON-able description of the selection rule and its counts

    @property
    def digest(self) -> str:
        """sha256 (16 hex) of the indices: identifies the exact set."""
        return hashlib.sha256(np.ascontiguousarray(self.indices, dtype="<i8").tobytes()).hexdigest()[:16]

    def __len__(self) -> int:
        return int(self.indices.size)

    def to_dict(self) -> dict:
        """JSON-able summary (the indices themselves are saved separately as .npy)."""
        return {"store_path": self.store_path, "n": len(self), "digest": self.digest, "rule": self.rule}

    @classmethod
    def from_dict(cls, d: dict, indices: np.ndarray) -> "TileSelection":
        return cls(d["store_path"], np.asarray(indices, dtype=np.int64), d["rule"])


def _read_1d(group: zarr.Group, name: str, optional: bool = False):
    if name not in group:
        if optional:
            return None
        raise KeyError(f"{group.store}: the tile store has no variable {name!r}")
    return np.asarray(group[name][:])


def select_training_tiles(store_path: str, *, known_signals: Sequence[tuple[float, float]] = (),
                          holdout_fraction: float = 0.1, seed: int = 0, include_off_source: bool = True,
                          include_ordinary: bool = True, ordinary_max_abs_z: float = 6.0,
                          ordinary_max_premasked_frac: float = 0.01) -> tuple[TileSelection, TileSelection]:
    """Noise-only tiles of a store, split into (train, holdout).

    Selected: valid tiles that are OFF-source (``~on_source``; when the store has
    ``scan_index``, only tiles of a cadence, ``scan_index >= 0``, count as OFF) or that the
    robust pre-screen calls ordinary (``max_abs_z <= ordinary_max_abs_z`` and
    ``n_premasked <= ordinary_max_premasked_frac * pixels``), and whose band
    ``[freq_min_mhz, freq_max_mhz]`` overlaps none of ``known_signals`` (MHz ranges).
    A seeded random ``holdout_fraction`` of them is held out for calibration.
    """
    g = zarr.open_group(str(store_path), mode="r")
    valid = _read_1d(g, "valid").astype(bool)
    on = _read_1d(g, "on_source").astype(bool)
    scan = _read_1d(g, "scan_index", optional=True)
    fmin, fmax = _read_1d(g, "freq_min_mhz"), _read_1d(g, "freq_max_mhz")
    tshape = g["tiles"].shape
    npix = int(tshape[1] * tshape[2])
    off = ~on if scan is None else (~on & (scan >= 0))
    ordinary = np.zeros_like(valid)
    if include_ordinary:
        ordinary = (_read_1d(g, "max_abs_z") <= ordinary_max_abs_z) & (
            _read_1d(g, "n_premasked") <= ordinary_max_premasked_frac * npix)
    keep = valid & ((off & include_off_source) | ordinary)
    signals = [(float(min(a, b)), float(max(a, b))) for a, b in known_signals]
    excluded = np.zeros_like(valid)
    for lo, hi in signals:
        excluded |= (np.minimum(fmin, fmax) <= hi) & (np.maximum(fmin, fmax) >= lo)
    keep &= ~excluded
    idx = np.flatnonzero(keep).astype(np.int64)
    rng = np.random.default_rng(seed)
    n_hold = int(round(holdout_fraction * idx.size))
    perm = rng.permutation(idx.size)
    hold, train = np.sort(idx[perm[:n_hold]]), np.sort(idx[perm[n_hold:]])
    rule = {
        "include_off_source": include_off_source,
        "off_source": "~on_source" + ("" if scan is None else " & scan_index >= 0"),
        "include_ordinary": include_ordinary,
        "ordinary_max_abs_z": ordinary_max_abs_z,
        "ordinary_max_premasked_frac": ordinary_max_premasked_frac,
        "known_signals_mhz": [list(s) for s in signals],
        "holdout_fraction": holdout_fraction,
        "seed": seed,
        "counts": {"tiles": int(valid.size), "valid": int(valid.sum()), "off_source": int((valid & off).sum()),
                   "ordinary": int((valid & ordinary).sum()), "excluded_known_signals": int((valid & excluded).sum()),
                   "selected": int(idx.size), "train": int(train.size), "holdout": int(hold.size)},
    }
    log.info("selected %d noise tiles of %d (%d held out)", idx.size, valid.size, hold.size)
    return (TileSelection(str(store_path), train, {**rule, "split": "train"}),
            TileSelection(str(store_path), hold, {**rule, "split": "holdout"}))


_DONE = object()


class ZarrBatches:
    """Batches of ``indices`` of ``store_path/tiles``, streamed chunk by chunk.

    Each epoch permutes the store chunks that hold selected tiles (seeded by
    ``(shuffle_seed, epoch)``), reads them ``window`` at a time and shuffles the tiles within
    a window. A background thread reads and assembles up to ``prefetch`` batches ahead;
    a chunk is dropped as soon as no later batch needs it, so at most ``2 * window`` chunks
    are held (at a window boundary). ``shuffle_seed=None`` keeps store
    order (for calibration and scoring; use ``drop_remainder=False`` there). Iterating the
    object runs the next epoch (0, 1, ...); :meth:`batches` runs a given one.
    """

    def __init__(self, store_path: str, indices, batch_size: int, *, shuffle_seed: int | None = 0,
                 prefetch: int = 2, window: int = 2, drop_remainder: bool = True):
        self.selection = indices if isinstance(indices, TileSelection) else None
        idx = indices.indices if isinstance(indices, TileSelection) else indices
        self.store_path = str(store_path)
        self.indices = np.sort(np.asarray(idx, dtype=np.int64))
        self.batch_size, self.shuffle_seed = int(batch_size), shuffle_seed
        self.prefetch, self.window, self.drop_remainder = max(1, int(prefetch)), max(1, int(window)), drop_remainder
        arr = self._array()
        self.chunk_tiles = int(arr.chunks[0])
        self.tile_shape = tuple(int(v) for v in arr.shape[1:])
        if self.indices.size and (self.indices[0] < 0 or self.indices[-1] >= arr.shape[0]):
            raise IndexError(f"{self.store_path}: tile indices outside 0..{arr.shape[0] - 1}")
        self._next_epoch = 0
        self.max_cached_chunks = 0  # high-water mark of chunks held by the reader (memory bound check)

    def _array(self):
        return zarr.open_group(self.store_path, mode="r")["tiles"]

    @property
    def steps_per_epoch(self) -> int:
        n = self.indices.size
        return n // self.batch_size if self.drop_remainder else -(-n // self.batch_size)

    def plan(self, epoch: int) -> list[np.ndarray]:
        return epoch_plan(self.indices, self.batch_size, seed=self.shuffle_seed, epoch=epoch,
                          group_K=self.indices // self.chunk_tiles, window=self.window,
                          drop_remainder=self.drop_remainder)

    def __iter__(self) -> Iterator[Batch]:
        epoch, self._next_epoch = self._next_epoch, self._next_epoch + 1
        return self.batches(epoch)

    def batches(self, epoch: int = 0, start: int = 0) -> Iterator[Batch]:
        plan = self.plan(epoch)[start:]
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        thread = threading.Thread(target=self._produce, args=(plan, q, stop), daemon=True,
                                  name=f"ZarrBatches-e{epoch}")
        thread.start()
        try:
            while True:
                item = q.get()
                if item is _DONE:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while thread.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    thread.join(0.05)

    def _produce(self, plan, q: queue.Queue, stop: threading.Event) -> None:
        def put(item) -> bool:
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            arr, ct = self._array(), self.chunk_tiles
            last_use = {}
            for b, ix in enumerate(plan):
                for c in np.unique(ix // ct):
                    last_use[int(c)] = b
            cache: dict[int, np.ndarray] = {}
            for b, ix in enumerate(plan):
                chunks = ix // ct
                for c in np.unique(chunks):
                    c = int(c)
                    if c not in cache:
                        cache[c] = np.asarray(arr[c * ct:min((c + 1) * ct, arr.shape[0])], dtype=np.float32)
                self.max_cached_chunks = max(self.max_cached_chunks, len(cache))
                tiles = np.stack([cache[int(c)][int(i - c * ct)] for i, c in zip(ix, chunks)])
                for c in [c for c in cache if last_use[c] <= b]:
                    del cache[c]
                if not put(Batch(tiles, ix)):
                    return
            put(_DONE)
        except BaseException as e:  # handed to the consumer, which re-raises it
            put(e)
