"""Tiles, checkpoints and execution of the per-tile stages.

The horizon and visibility stages run one tile of observer pixels at a time,
with the whole DEM as the occluder, so no call ever holds N*K horizons. Each
finished tile is saved atomically under ``<out>/.tiles/<run key>/``; a rerun
with ``--resume`` (same inputs and config, hence the same key) skips the
tiles already there; once every tile is there, the tile sets of other keys in
the same folder are deleted. Tiles are independent, so they run in this process
(numba threads inside each tile) or on a Dask cluster (``--workers`` /
``--scheduler``) with identical results.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
from pathlib import Path

import numpy as np

from .errors import SiteselError


def tile_slices(shape: tuple[int, int], tile_px: int) -> list[tuple[slice, slice]]:
    """Row-major list of (rows, cols) slices covering ``shape`` in tiles of ``tile_px``."""
    rows, cols = shape
    return [
        (slice(r, min(r + tile_px, rows)), slice(c, min(c + tile_px, cols)))
        for r in range(0, rows, tile_px)
        for c in range(0, cols, tile_px)
    ]


def run_key(*parts) -> str:
    """A short stable hash of JSON-serialisable parts (config, input checksums)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


class TileStore:
    """Atomic per-tile checkpoints of named float arrays, as ``.npz`` files."""

    def __init__(self, directory: str | Path):
        self.directory = Path(directory)

    def _path(self, tile: tuple[slice, slice]) -> Path:
        rows, cols = tile
        return self.directory / f"tile_r{rows.start:06d}_c{cols.start:06d}.npz"

    def has(self, tile) -> bool:
        return self._path(tile).is_file()

    def load(self, tile) -> dict[str, np.ndarray]:
        try:
            with np.load(self._path(tile)) as data:
                return {name: data[name] for name in data.files}
        except (OSError, ValueError) as exc:
            raise SiteselError(
                f"checkpoint {self._path(tile)} is unreadable ({exc}); delete {self.directory} and rerun"
            ) from None

    def save(self, tile, arrays: dict[str, np.ndarray]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.directory, suffix=".npz.part")
        try:
            with os.fdopen(fd, "wb") as handle:
                np.savez(handle, **arrays)
            os.replace(tmp, self._path(tile))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise


def remove_other_tile_sets(store: TileStore) -> None:
    """Delete the checkpoints of other run keys beside ``store`` (their ``tile_*.npz`` files, and
    their folders if that empties them): once a run has every tile, the folder keeps only the
    tiles of the outputs it is about to write, instead of one set per config ever run there."""
    pattern = re.compile(r"[0-9a-f]{16}")
    for other in store.directory.parent.iterdir():
        if other == store.directory or not other.is_dir() or not pattern.fullmatch(other.name):
            continue
        for stale in (*other.glob("tile_*.npz"), *other.glob("*.npz.part")):
            stale.unlink(missing_ok=True)
        try:
            other.rmdir()
        except OSError:  # something not ours is in it: leave it
            pass


def run_tiles(compute, tiles, store: TileStore, *, resume: bool, progress=None, client=None):
    """Run ``compute(tile) -> dict`` for every tile not yet checkpointed.

    ``progress`` is called with each finished tile (for a progress bar).
    ``client`` is an optional ``dask.distributed.Client``; tiles then run on
    its workers and results are checkpointed here as they arrive.
    Returns the list of per-tile result dicts, in the order of ``tiles``.
    """
    if not resume and store.directory.exists():
        for stale in store.directory.glob("tile_*.npz"):
            stale.unlink()
    todo = [tile for tile in tiles if not store.has(tile)]
    for tile in tiles:
        if tile not in todo and progress:
            progress(tile)
    if client is None:
        for tile in todo:
            store.save(tile, compute(tile))
            if progress:
                progress(tile)
    else:
        from dask.distributed import as_completed

        futures = {client.submit(compute, tile, pure=False): tile for tile in todo}
        for future in as_completed(futures):
            store.save(futures[future], future.result())
            if progress:
                progress(futures[future])
    return [store.load(tile) for tile in tiles]
