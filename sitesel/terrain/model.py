"""The in-memory terrain model every stage works on."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .grid import Grid


@dataclass
class Terrain:
    """Heights on a LOLA south polar stereographic grid.

    Attributes
    ----------
    height_m : ndarray of float32, shape (rows, cols)
        Height above the 1737.4 km sphere in metres; NaN marks nodata.
    grid : Grid
        Grid geometry (corner, resolution, shape).
    provenance : dict
        Where the heights came from (file and checksum, or generator and seed).
    """

    height_m: np.ndarray
    grid: Grid
    provenance: dict = field(default_factory=dict)

    def __post_init__(self):
        self.height_m = np.asarray(self.height_m, dtype=np.float32)
        if self.height_m.shape != self.grid.shape:
            raise ValueError(f"height_m shape {self.height_m.shape} does not match grid shape {self.grid.shape}")

    @property
    def nodata(self) -> np.ndarray:
        """Boolean mask, True where there is no height."""
        return ~np.isfinite(self.height_m)

    @property
    def shape(self):
        return self.grid.shape

    @property
    def resolution_m(self) -> float:
        return self.grid.resolution_m

    def window(self, rows: slice, cols: slice) -> "Terrain":
        """A view of a rectangular window (rows/cols slices with step 1)."""
        return Terrain(self.height_m[rows, cols], self.grid.window(rows, cols), dict(self.provenance))
