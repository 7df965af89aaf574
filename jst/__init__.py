"""jst: the native companion of the JSTorrent extension.

Kept import-light on purpose: every console script imports this package first, and the
io-daemon's time to its port line is measured (see ``make bench``).
"""

__version__ = "0.2.0"
