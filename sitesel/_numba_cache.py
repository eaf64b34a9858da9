"""Where numba keeps sitesel's compiled kernels.

numba keys each cached kernel by its own file's timestamp only. A kernel that
calls a helper from another module keeps running its old compiled copy of the
helper after the helper is edited, until the kernel's own file changes too. So
the cache lives in a directory named after a hash of all of sitesel's sources:
any edit starts a fresh one. ``$NUMBA_CACHE_DIR``, if set, wins.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
import time
from pathlib import Path

from .paths import cache_dir

#: Other source states' cache directories are removed once unused for this long.
_KEEP_S = 7 * 86400.0


def source_digest(package_dir: Path) -> str:
    """Hash (16 hex digits) of the names and contents of every ``.py`` file under ``package_dir``."""
    digest = hashlib.sha256()
    for path in sorted(package_dir.rglob("*.py")):
        digest.update(path.relative_to(package_dir).as_posix().encode() + b"\0")
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def use_source_keyed_cache() -> None:
    """Point numba's cache at ``<cache>/numba/<source digest>`` (``<cache>``: :func:`~sitesel.paths.cache_dir`),
    before any kernel is defined; remove stale siblings.

    numba is not imported for this (it would add ~0.2 s to every command, ``--help``
    included): if it is not loaded yet, ``$NUMBA_CACHE_DIR`` is set for it to read
    (and for worker processes to inherit)."""
    if os.environ.get("NUMBA_CACHE_DIR"):
        return
    base = cache_dir() / "numba"
    here = base / source_digest(Path(__file__).parent)
    if "numba" in sys.modules:
        sys.modules["numba"].config.CACHE_DIR = str(here)
    else:
        os.environ["NUMBA_CACHE_DIR"] = str(here)
    try:
        for other in base.iterdir():
            if other != here and time.time() - other.stat().st_mtime > _KEEP_S:
                shutil.rmtree(other, ignore_errors=True)
    except OSError:  # no cache yet, or not ours to tidy
        pass


def is_cold() -> bool:
    """True if numba's cache directory holds no compiled kernel yet (the first run after an install
    or an edit compiles them, for about half a minute)."""
    numba = sys.modules.get("numba")
    directory = os.environ.get("NUMBA_CACHE_DIR") or (numba.config.CACHE_DIR if numba is not None else "")
    try:
        return bool(directory) and not any(Path(directory).rglob("*.nbi"))
    except OSError:
        return False
