"""jst-io-daemon: the loopback HTTP + WebSocket server (PROTOCOL.md §5, §6).

Module map:
  cli.py      command line (§5.1), token sources; the console-script entry point
  main.py     the process's nursery tree: server, parent watcher, host link, signals
  hostlink.py the native-host's control channel, daemon side (jst/control.py)
  server.py   the accept loop and the connection set: fd reserve, waiting caps, sweeps
  connection.py one HTTP/1.1 connection: fast path on a raw socket, h11 otherwise, /io upgrade
  http1.py    sans-I/O fast head parser (plain HTTP/1.1 heads) and response heads
  threadhop.py the lean hop into worker threads for blocking file work
  websocket.py a server WebSocket over a trio stream, batched and vectored sends
  wsframes.py RFC 6455 frames, sans-I/O: strict client-frame parser, server frames
  wire.py     the /io protocol, sans-I/O: envelope, opcodes, payloads, auth (§6)
  mux.py      the /io session: auth, dispatch table, nursery tree (see its docstring)
  iotcp.py    /io TCP sockets: the table, connect, pending, reactor, sends (§6.5)
  iotcpconn.py one /io TCP socket's record (TcpConn), shared by the iotcp* modules
  iotcptls.py TCP_SECURE: the TLS path on a trio SSLStream, off the reactor (§6.6)
  iotcpclose.py a client's TCP_CLOSE: flush, FIN, TCP_CLOSE, linger (§6.5)
  iobound.py  /io listeners and UDP sockets (§6.7-§6.9)
  ioqueue.py  /io outbound queue (bounded in bytes) shared by a session's parts
  iopoll.py   one readiness set per /io session (epoll, kqueue, or a task per socket)
  streamwire.py STREAM_* frames 0x40-0x44, sans-I/O (STREAMING.md §1)
  intervals.py merged half-open byte ranges (a stream's availability)
  streams.py  streams owned by their /io session: capability tokens, availability, wake-ups
  streamhttp.py GET/HEAD /stream/<token>: ranges, sendfile, STREAM_NEED while blocked
  gctune.py   the garbage collector's settings (frozen start-up, thresholds)
  http.py     sans-I/O HTTP rules: request model, auth (§5.3), CORS (§5.4), parsing
  routes.py   route table and handlers (§5.7-§5.9)
  paths.py    root/path rules (§5.6 with the §9.11 fixes), pure; the path errors
  fsroot.py   descriptor-relative resolution below a root (O_NOFOLLOW walk, root fds)
  fsroot_portable.py  the same by name, where there is no openat (Windows)
  openat2.py  Linux openat2(2) through ctypes (RESOLVE_BENEATH|RESOLVE_CACHED)
  fileops.py  blocking file work (run in worker threads) and OSError mapping
  fastfile.py the file routes' event-loop fast path (page-cache reads, no thread hop)
  state.py    roots, extension id, counters: what /api/read-rpc-info-from-disk reloads
  errors.py   the daemon's exception hierarchy
  control_ws.py service mode only (--service-link): /control, /roots, /open (SERVICE.md §3)
  idle.py     --idle-exit: exit when no client has used the daemon for that long
"""
