"""Physical constants and fixed conventions shared by every stage."""

#: Mean radius of the lunar reference sphere (LOLA), metres.
MOON_RADIUS_M = 1737400.0

#: IAU nominal solar radius, metres (for the true solar semi-diameter).
SUN_RADIUS_M = 695_700e3

#: Apparent solar semi-diameter at 1 au, degrees (DESIGN.md section 2).
SUN_SEMI_DIAMETER_DEG = 0.2666

#: PROJ definition of the LOLA south polar stereographic grid.
SOUTH_POLAR_STEREO_PROJ = (
    "+proj=stere +lat_0=-90 +lon_0=0 +k=1 +x_0=0 +y_0=0 +R=1737400 +units=m +no_defs"
)

#: Coverage of the Moon orientation kernel moon_pa_de421_1900-2050.bpc (UTC): its segment runs from
#: 1900-01-01 to 2051-01-01, so a span may start at the first and end (exclusive) at the second.
EPHEMERIS_FIRST_DATE = "1900-01-01"
EPHEMERIS_END_DATE = "2051-01-01"

#: Horizon azimuths allowed, in config files and ``sitesel site --azimuths``.
MIN_AZIMUTHS, MAX_AZIMUTHS = 8, 7200

#: Highest observer (mast or tower) height, metres, in config files and ``sitesel site --height-m``.
MAX_OBSERVER_HEIGHT_M = 1000.0
