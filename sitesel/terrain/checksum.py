"""Input checksums for run manifests: full SHA-256, or head and tail for multi-GB products."""

from __future__ import annotations

import hashlib
from pathlib import Path


#: Files larger than this get a partial checksum (see :func:`file_sha256`).
FULL_HASH_LIMIT_BYTES = 128 * 1024**2


#: Bytes hashed at each end of a large file for the partial checksum.
PARTIAL_HASH_CHUNK_BYTES = 1024**2


_HASH_CACHE: dict[tuple, tuple[str, str]] = {}


def file_sha256(path) -> tuple[str, str]:
    """SHA-256 of a file and its scope, cached by (path, size, mtime).

    Files up to ``FULL_HASH_LIMIT_BYTES`` are hashed whole (scope ``"full"``).
    Larger files (the 3.7 GB products) would take tens of seconds per read, so
    only the first and last ``PARTIAL_HASH_CHUNK_BYTES`` and the size are hashed
    (scope ``"head+tail+size"``): enough to tell products and truncations
    apart; ``sitesel fetch`` verifies downloads in full.
    """
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key in _HASH_CACHE:
        return _HASH_CACHE[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if st.st_size <= FULL_HASH_LIMIT_BYTES:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
            scope = "full"
        else:
            h.update(f.read(PARTIAL_HASH_CHUNK_BYTES))
            f.seek(st.st_size - PARTIAL_HASH_CHUNK_BYTES)
            h.update(f.read(PARTIAL_HASH_CHUNK_BYTES))
            h.update(str(st.st_size).encode())
            scope = "head+tail+size"
    _HASH_CACHE[key] = (h.hexdigest(), scope)
    return _HASH_CACHE[key]
