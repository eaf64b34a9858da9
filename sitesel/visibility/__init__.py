"""Sun and Earth visibility from a horizon map: fractions, longest gaps, PSR.

Modules: :mod:`.nodes` (a pixel's horizon as thresholds on the body's
longitude), :mod:`.track` (per-step quantities shared by all pixels, and their
cells), :mod:`.scan` (:func:`visibility_layers`, exact over every step),
:mod:`.binned` (:func:`visibility_fractions`, independent of the span),
:mod:`.series` (one point's time series, :func:`gap_statistics`) and
:mod:`.psr`.

Conventions (DESIGN.md section 2): every pixel uses its own local frame
(:func:`sitesel.terrain.grid.local_frame`); horizons are given at grid bearings
``np.arange(K) * 360 / K`` (clockwise from grid north, +y) and interpolated
linearly and periodically in azimuth. The Sun is "lit" when any part of its
disc (semi-diameter ``asin(SUN_RADIUS_M / distance)``) is above the horizon;
its visible fraction is the disc area above a locally flat horizon line. The
Earth is visible when its centre is above the horizon, seen from the observer
(topocentric: the observer's offset from the Moon's centre shifts the Earth by
up to 0.28 deg).

Algorithm of :func:`visibility_layers` (cost O(N*K + N*T/cell) )
--------------------------------------------------------------
Per time step, once for the whole map, each body's direction from the Moon's
centre is reduced to its Moon-fixed longitude ``lam`` (which is also its grid
bearing seen from the pole) and latitude ``delta``. For a pixel, the set of
directions that are just on its horizon is a closed curve; we solve it in
closed form at the K horizon bearings (direction at azimuth ``b_k`` and
elevation ``H_k - rho_mean`` in the local frame, taken back to the Moon's
centre at the body's mean distance), giving K nodes ``(lam_k, delta_k)``. The
Earth stays within about 8 deg of longitude of the near side's centre, so its
curve is solved only at the few dozen nodes that span its track (with the
widest cell either side), which saves about a quarter of a pixel's threshold cost.
Between nodes the curve is interpolated linearly in ``lam``; a step is visible
when ``key_t < delta(lam_t)``, with ``key_t = delta_t - (rho_t - rho_mean) +
(R/d_t - R/d_mean)`` absorbing the small changes of the Sun's disc size and of
the Earth's parallax with distance. Each (pixel, step) is then a table lookup,
a multiply-add and a compare, and the same pass gives the exact run lengths.
Steps are grouped, once per track, into cells: runs of consecutive steps
whose longitude stays in one bin (10 deg for the Sun, 2 deg for the Earth),
split again into 2 deg (0.5 deg) sub-cells. A pixel whose threshold over a
cell's bin lies wholly above (below) every key in the cell sees the body
throughout (never): the whole cell is counted at once. Only the steps of
undecided sub-cells are evaluated one by one, so the result is exactly the
per-step count. The solar disc's visible fraction alone would need every step
with a partly hidden disc (a grazing Sun near the pole is often partly hidden),
so :func:`visibility_layers` takes it from the binned tables below instead.

With an :class:`ExactWhere`, :func:`visibility_layers` scans only the pixels
that can meet a profile's limits (or none) and possible permanent shadow, and
gives the others the binned fractions below and lower bounds on the gap lengths:
the longest runs of whole first-level cells their thresholds decide, one pass
over the cells vectorised across 128 pixels (about 1.5 us per pixel and body
over 18.6 years, against about 50 us for the exact scan). A run does this on
long spans over large maps, where scanning every pixel would dominate its cost,
and then scans the landing areas its ranking needs (:mod:`sitesel.refine`).

:func:`visibility_fractions` answers the fractions only, at a cost that does
not depend on the number of steps: the same thresholds are looked up in
per-longitude-bin cumulative tables of the step keys (:class:`BinnedTrack`).
:func:`gap_statistics` gives exact per-step gap metrics for chosen pixels.

Error bound, against the exact per-step computation (which the tests use as
the reference): the nodes are exact (the horizon kinks fall on nodes), so the
error comes from (a) the chord between nodes, at most ``c * w**2 / 8`` with
``c`` the colatitude and ``w = 360 deg / K`` (0.0015 deg at 80 deg S, K = 180),
(b) treating d(elevation)/d(delta) as -1 in the distance corrections, at most
``(1 - cos c) * 0.0045 deg``, and (c) for the visible disc fraction, the same
unit-slope approximation, a relative error up to ``1 - cos c`` (1.5% at 80 deg S)
of the partial-disc part only. Elevation errors of a few thousandths of a
degree shift each sunrise or sunset by well under one 1 h step, so fractions
agree to far better than 0.5 percentage points and longest gaps to within one
step (asserted in tests/test_visibility.py). The method assumes the horizon
curve is single-valued in longitude, true unless the skyline is steeper than
about ``1 / c`` deg per deg of azimuth.
"""

from .binned import BinnedTrack, visibility_fractions
from .psr import psr_area_km2, psr_layers
from .scan import ExactWhere, visibility_layers
from .series import body_directions, disc_visible_fraction, gap_statistics, point_series

__all__ = [
    "ExactWhere",
    "BinnedTrack",
    "body_directions",
    "disc_visible_fraction",
    "gap_statistics",
    "point_series",
    "psr_area_km2",
    "psr_layers",
    "visibility_fractions",
    "visibility_layers",
]
