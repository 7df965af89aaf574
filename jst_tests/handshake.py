"""Handshake with a ``jst-native-host`` exactly as Chrome does, from any environment.

    python jst_tests/handshake.py /path/to/jst-native-host

Starts the host with the extension's origin, an empty environment and a throwaway
config dir, sends a ``handshake`` frame and expects ``DaemonInfo`` and a healthy
io-daemon (``jst doctor``'s own check, ``jst.install.doctor.host_check``). Exit 0 on
success. CI runs it with the Python of a fresh venv holding only the built wheel, so it
checks what that wheel installed, not the working tree (run by path, this file's
directory, not the repository, is first on ``sys.path``).
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: handshake.py /path/to/jst-native-host", file=sys.stderr)
        return 2
    import jst
    from jst.install import doctor

    # doctor's 2 s is for a user's desktop; a CI runner's first start of a fresh venv
    # may take longer, and this check is about working, not about speed.
    doctor.HANDSHAKE_TIMEOUT = 20.0
    ok, what = doctor.host_check(argv[1])
    print(f"{argv[1]} (jst {jst.__version__} from {jst.__file__}): {what}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
