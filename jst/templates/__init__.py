"""The packagers' templates, shipped inside the package as well.

The same files as the repository's ``manifests/`` and ``contrib/`` (a test keeps them
equal, and equal to what ``jst install`` generates), so that a wheel installed on its own
still carries them (``read`` returns one; packagers may also copy them from the
installed package directory).
"""

from __future__ import annotations

from importlib import resources

NAMES = (
    "com.jstorrent.native.json",
    "com.jstorrent.native.firefox.json",
    "jst-link-handler.desktop",
)


def read(name: str) -> bytes:
    if name not in NAMES:
        raise KeyError(name)
    return resources.files(__name__).joinpath(name).read_bytes()
