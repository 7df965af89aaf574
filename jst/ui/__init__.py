"""jst for people and for other front-ends: ``jst status``, ``jst add``, ``jst rpc``.

status.py    what runs now (hosts, daemons with ``/stats``, the service, roots): gathered
             with psutil and loopback HTTP, blocking, no trio; a JSON-ready dict
statusview.py  the human table and the ``--watch`` live view (rich, imported only here)
add.py       ``jst add``: the link-handler's validation and delivery, saying where it went
jsonrpc.py   JSON-RPC 2.0 framing, validation and replies (sans-I/O, pure)
rpc.py       ``jst rpc``: the methods and the trio loop around jsonrpc.py
cli.py       the three commands' argument parsing and exit codes
"""
