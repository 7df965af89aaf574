"""``jst install``, ``jst uninstall``, ``jst doctor``: registering jst with browsers.

browsers.py  where each browser looks for Native Messaging manifests (BROWSERS.md)
manifest.py  the manifests' contents, and their validation (sans-I/O)
xdg.py       the Linux desktop entry and mimeapps.list edits (sans-I/O)
actions.py   what install writes and uninstall removes, and the receipt between them
windows.py   the Windows registry (HKCU), isolated
doctor.py    the health checks and their table
cli.py       the subcommands
"""
