"""The garbage collector's settings for the daemon (issue 18), chosen by measurement.

CPython's cyclic collector runs a young collection every ``threshold0`` net container
allocations, and every so many young ones a collection of the older generations, which
walks every live tracked object. With ten thousand sockets open on one ``/io`` session
that walk dominated the cost of a message (65 % of the CPU in a 10,000-socket burst
before 0.3), and it grew with the number of sockets. Three measures:

* ``gc.freeze()`` once at start and once more when the first ``/io`` session begins
  (everything imported lazily is loaded by then): modules, classes and functions
  (≈30,000 objects) move to a permanent generation that no collection walks again.
  Before that first freeze the collector is off (``cli.main``, issue 17): collecting
  while modules load only walks objects that are about to be frozen anyway.
* ``threshold0 = 10_000`` instead of 700: the hot paths allocate no reference cycles
  per frame or message (a message's objects die by reference counting and do not count),
  so young collections run only while the set of live objects grows (sockets being
  connected). A young collection walks only the young objects: at 50,000 it paused the
  loop for 8–50 ms on the loaded 2-core machine (the p99 of an echo), at 10,000 for
  a few ms; the total work is the same.
* ``threshold1 = 10``, ``threshold2 = 100``: full collections become rare (every 1,000
  young ones, and CPython still waits until the survivors are a quarter of the
  long-lived objects); ten thousand sockets are about 100,000 objects, tens of ms per
  walk. Measured with ``make bench``'s scale scenario (``jst_tests/bench/scale.py``)
  and the shared instrument's ``scale.mjs``: CPU per message at 10,000 sockets within
  1.5× of the figure at 1,000.
"""

from __future__ import annotations

import gc

YOUNG_THRESHOLD = 10_000
MIDDLE_THRESHOLD = 10
OLD_THRESHOLD = 100


_frozen_late = False


def configure_gc() -> None:
    """Freeze what is loaded now and raise the thresholds; call once before ``trio.run``.

    Also (re-)enables the collector, which ``cli.main`` turns off while it imports."""
    gc.freeze()
    gc.set_threshold(YOUNG_THRESHOLD, MIDDLE_THRESHOLD, OLD_THRESHOLD)
    gc.enable()


def freeze_late_imports() -> None:
    """Freeze again, once, when the server is running: the modules imported lazily after
    the port line (trio, h11, the server) are loaded by then. Not at start-up, so that
    the time to the first answer does not pay for it."""
    global _frozen_late
    if not _frozen_late:
        _frozen_late = True
        gc.freeze()
