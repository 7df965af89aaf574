"""jst-io-daemon: the loopback HTTP + WebSocket server (PROTOCOL.md §5, §6).

Module map:
  cli.py      command line (§5.1), token sources; the console-script entry point
  main.py     the process's nursery tree: server, parent watcher, host link, signals
  hostlink.py the native-host's control channel, daemon side (jst/control.py)
  server.py   the HTTP/1.1 server loop (h11 over trio) and the /io upgrade
  websocket.py a server WebSocket over a trio stream, batched and vectored sends
  wsframes.py RFC 6455 frames, sans-I/O: strict client-frame parser, server frames
  wire.py     the /io protocol, sans-I/O: envelope, opcodes, payloads, auth (§6)
  mux.py      the /io session: auth, dispatch table, nursery tree (see its docstring)
  iotcp.py    /io TCP sockets: connect, pending, reactor, TLS, close (§6.5-§6.6)
  iobound.py  /io listeners and UDP sockets (§6.7-§6.9)
  ioqueue.py  /io outbound queue (bounded in bytes) shared by a session's parts
  iopoll.py   one readiness set per /io session (epoll, kqueue, or a task per socket)
  gctune.py   the garbage collector's settings (frozen start-up, thresholds)
  http.py     sans-I/O HTTP rules: request model, auth (§5.3), CORS (§5.4), parsing
  routes.py   route table and handlers (§5.7-§5.9)
  paths.py    root/path resolution (§5.6 with the §9.11 fixes), pure
  fileops.py  blocking file work (run in worker threads) and OSError mapping
  state.py    roots, extension id, counters: what /api/read-rpc-info-from-disk reloads
  errors.py   the daemon's exception hierarchy
"""
