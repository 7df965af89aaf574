"""jst-native-host: the Native Messaging host Chrome starts for the extension.

Modules (sans-I/O first, then the trio layer around them):

  nm.py              Native Messaging framing (§2.1)
  messages.py        requests, responses, events (§2.2–2.5)
  roots.py           root keys and the containment rule (§2.4.4, §2.6)
  profiles.py        the rpc-info.json merge (§3.3)
  store.py           rpc-info.json on disk: lock, atomic write, backups
  filelock.py        the inter-process lock (per platform)
  browser.py         which browser and extension started us (§2.8)
  desktop.py         folder dialog and file opener (per platform)
  linkrpc.py         the link-handler HTTP endpoint (§4.3)
  control_server.py  where the daemon's control channel connects (per platform)
  launch.py          starting the io-daemon process, before trio (the host's first act)
  supervisor.py      the io-daemon child: start, ready, restart, stop
  stdio.py           taking Chrome's pipes away from fds 0/1 (per platform)
  main.py            the nursery tree and the request handlers
  cli.py             the entry point
  oneshot.py         a first get_browser_endpoint message: ask jst service, answer once
                     (SERVICE.md §2; no trio)
"""
