"""The ranked sites of a full scan, scanning only the landing areas that can make the list.

A long run over a large map first gives every pixel its binned fractions and
lower bounds on its gap lengths (:func:`sitesel.visibility.visibility_layers`
with no pixel to scan, exact at permanent shadow). :func:`rank_refining` then
ranks the sites on *optimistic* layers: where a pixel was not scanned, its
binned sunlit and Earth-visible fractions are raised by ``BINNED_MARGIN``
(twice their error bound) and its gap lengths are the lower bounds. Every
profile term and limit prefers more light and shorter gaps, so (as long as the
binned fractions keep their 0.5-point bound, which needs a long span: the
pipeline refines only over more than ``pipeline.REFINE_MIN_STEPS`` steps) no pixel's
optimistic score is below its exact score, nor is an exactly feasible pixel
optimistically infeasible; a landing area's score, a percentile of its pixels'
scores, is then optimistic too. Each ranked site whose landing area holds a
pixel not scanned has that area scanned (``refine``), and the ranking is run
again, until every ranked site's landing area is exact.

Then the sites are those of the exact layers: the greedy selection
(:func:`~sitesel.ranking.rank_sites`) takes the best remaining centre, and the
one it takes on the optimistic layers has its exact score, which is at least
every other remaining centre's optimistic score and so at least its exact
score; the separation rule depends only on where the sites are, so the
remaining centres are the same at the next pick. This holds for the
exhaustive search only: landing areas taller than 256 rows, which
:func:`~sitesel.ranking.rank_sites` searches on a row lattice first, are
scanned wherever they can be feasible instead (:func:`sitesel.pipeline.tile_selector`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .ranking import footprint_reach_px, landing_footprints, lattice_stride, rank_sites
from .scoring import Profile, score_layers
from .terrain.grid import Grid
from .visibility.scan import BINNED_MARGIN

#: The fractions that are binned where a pixel was not scanned (the disc fraction is always binned).
_BINNED_FRACTIONS = ("sun_lit_fraction", "earth_visible_fraction")


def optimistic_layers(layers: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``layers`` with the binned fractions of the pixels not scanned (``visibility_exact`` = 0)
    raised by ``BINNED_MARGIN`` (at most to 1); the gap layers there are lower bounds already."""
    bounded = layers["visibility_exact"] == 0
    out = dict(layers)
    for name in _BINNED_FRACTIONS:
        raised = np.minimum(layers[name] + np.float32(BINNED_MARGIN), np.float32(1.0))
        out[name] = np.where(bounded, raised, layers[name]).astype(np.float32)
    return out


def refines_by_rank(grid: Grid, profile: Profile) -> bool:
    """Whether :func:`rank_refining` gives the exact sites for this profile's landing areas on ``grid``."""
    return lattice_stride(landing_footprints(grid, profile)[1]) == 1


def landing_window(centre: tuple[int, int], reach_px: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Rows and columns (within ``shape``) of the square reaching ``reach_px`` from ``centre``."""
    (r, c), (n_rows, n_cols) = centre, shape
    return (slice(max(0, r - reach_px), min(n_rows, r + reach_px + 1)),
            slice(max(0, c - reach_px), min(n_cols, c + reach_px + 1)))


def rank_refining(layers: dict[str, np.ndarray], grid: Grid, profile: Profile,
                  refine: Callable[[slice, slice], None], region_mask=None,
                  progress=None) -> tuple[list[dict], int]:
    """The ranked sites of the exact layers (see the module docstring).

    Parameters
    ----------
    layers : dict of str -> array (rows, cols)
        Every layer the profile reads, and ``visibility_exact``; the pixels where it is
        0 hold binned fractions and lower bounds on the gap lengths.
    refine : callable(rows, cols)
        Makes the layers exact in that window, in place (``visibility_exact`` = 1 there).
    region_mask, progress
        As :func:`~sitesel.ranking.rank_sites`; ``progress()`` is called per refined window.

    Returns
    -------
    sites : list of dict
        :func:`~sitesel.ranking.rank_sites`'s sites (with the ``feasible`` and ``score``
        maps among the layers reported), every landing area exact.
    n_refined : int
        How many windows were handed to ``refine``.
    """
    if not refines_by_rank(grid, profile):
        raise ValueError("rank_refining needs landing areas of at most 256 rows (the exhaustive search)")
    reach = footprint_reach_px(landing_footprints(grid, profile)[1])
    optimistic = {name: np.array(layer) for name, layer in optimistic_layers(layers).items()}
    feasible, score, _ = score_layers(optimistic, profile)
    n_refined = 0
    while True:
        sites = rank_sites(score, feasible, {**optimistic, "feasible": feasible, "score": score}, grid, profile,
                           region_mask)
        windows = [landing_window((s["row"], s["col"]), reach, grid.shape) for s in sites]
        pending = [w for w in windows if (layers["visibility_exact"][w] == 0).any()]
        if not pending:
            return sites, n_refined
        for rows, cols in pending:
            refine(rows, cols)
            n_refined += 1
            if (layers["visibility_exact"][rows, cols] == 0).any():
                raise RuntimeError("refine left pixels of its window unscanned")
            # the scores are per pixel: only the window's change
            window = optimistic_layers({name: layer[rows, cols] for name, layer in layers.items()})
            for name, layer in window.items():
                optimistic[name][rows, cols] = layer
            feasible[rows, cols], score[rows, cols], _ = score_layers(window, profile)
            if progress is not None:
                progress()
