"""sitesel: landing-site selection near the lunar south pole.

The pipeline runs terrain -> surface -> horizon -> ephemeris -> visibility ->
scoring -> ranking -> outputs; see ``DESIGN.md`` in the shared folder and the
README for the public interface.
"""

__version__ = "0.1.0"

from ._numba_cache import use_source_keyed_cache

use_source_keyed_cache()
