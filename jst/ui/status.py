"""What runs now, read-only: hosts, their io-daemons with ``/stats``, the service, roots.

Everything comes from places a user's own process may read; nothing is written:

* **hosts**: the profiles of ``rpc-info.json`` whose pid is alive and a host (a stale
  profile's pid may belong to another program by now); each is asked
  ``/health`` on its link endpoint (loopback, 1 s) so a frozen host shows as such.
* **daemons**: a host's (or the service's) child processes running the io-daemon; the
  install id comes from their command line, the port from their listening socket (the
  ``--listen-fd`` a host hands over, else ``--port``), uptime from the process. The
  counters come from ``GET /stats``, which needs the daemon's token: the service says it
  (when the daemon is the service's), else the daemon's command line (the original's
  hosts pass ``--token``) or its initial environment (``JST_IO_DAEMON_TOKEN``, how a jst
  host passes it today; readable only by the same user). A daemon whose token cannot be
  found is shown without counters and named in ``problems``. Tokens are never printed.
* **service**: ``jst.service.query_status`` when that module exists (issue 15); else
  "not available".
* **roots**: every profile's download roots, with whether the folder is there now.

Blocking on purpose (psutil and ``http.client``; every wait bounded to ``HTTP_TIMEOUT``):
``jst status`` is a short-lived command and ``jst rpc`` runs it in a worker thread.
``problems`` lists what could not be read; ``jst status`` exits 1 when it is not empty.
Throughput is the difference of two samples: pass the previous ``Status`` to ``gather``.
"""

from __future__ import annotations

import http.client
import importlib
import json
import os
import socket
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import psutil

from jst import __version__, config
from jst.host.profiles import LINK_KEY
from jst.rpcinfo import Profile, RpcInfo, RpcInfoError, parse_rpc_info

HTTP_TIMEOUT = 1.0  # the link-handler's health-check bound (§7.2)
TOKEN_ENV = "JST_IO_DAEMON_TOKEN"  # noqa: S105 (a variable name)
STATS_KEYS = (
    "tcp_sockets",
    "pending_connects",
    "pending_tcp",
    "udp_sockets",
    "tcp_servers",
    "ws_connections",
    "bytes_sent",
    "bytes_received",
    "uptime_secs",
)


class StatusError(Exception):
    """Something that should be readable was not; the message says what and why."""


@attrs.define
class Status:
    """One sample. ``to_json`` is what ``jst status --json`` prints."""

    taken: float  # time.monotonic() of the sample, for rates
    config_dir: str
    hosts: list[dict[str, Any]] = attrs.field(factory=list)
    daemons: list[dict[str, Any]] = attrs.field(factory=list)
    service: dict[str, Any] = attrs.field(factory=dict)
    roots: list[dict[str, Any]] = attrs.field(factory=list)
    problems: list[str] = attrs.field(factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": list(self.problems),
            "version": __version__,
            "config_dir": self.config_dir,
            "hosts": self.hosts,
            "daemons": self.daemons,
            "service": self.service,
            "roots": self.roots,
        }


# -- small readers -----------------------------------------------------------------------------


def http_get(port: int, target: str, headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """One GET to 127.0.0.1:``port``; ``OSError`` (timeouts included) when it fails."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("GET", target, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.read(1 << 20)
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc}") from exc
    finally:
        conn.close()


class _UnixHTTPConnection(http.client.HTTPConnection):
    """HTTP over a Unix socket (the host's private link socket)."""

    def __init__(self, path: str) -> None:
        super().__init__("localhost", timeout=HTTP_TIMEOUT)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock


def host_daemon_token(profile: Profile) -> str | None:
    """A jst host's daemon token, asked of the host itself: ``GET /daemon`` on its
    private Unix link socket (0700 directory, host token from the 0600 rpc-info.json).
    A jst host passes the token to its daemon through a pipe, so it is nowhere else."""
    link = profile.extra.get(LINK_KEY)
    if not isinstance(link, str) or not link.startswith("unix:"):
        return None
    conn = _UnixHTTPConnection(link[len("unix:") :])
    try:
        conn.request("GET", f"/daemon?token={quote(profile.token)}")
        response = conn.getresponse()
        if response.status != 200:
            return None
        doc = json.loads(response.read(1 << 16))
    except (OSError, http.client.HTTPException, ValueError):
        return None
    finally:
        conn.close()
    token = doc.get("token") if isinstance(doc, dict) else None
    return token if isinstance(token, str) and token else None


def http_post(port: int, target: str, token: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=HTTP_TIMEOUT)
    try:
        conn.request("POST", target, body=b"", headers={"X-JST-Auth": token})
        return conn.getresponse().status
    except http.client.HTTPException as exc:
        raise OSError(f"bad HTTP answer: {exc}") from exc
    finally:
        conn.close()


def read_rpc_info(path: Path) -> RpcInfo:
    """The file's profiles; an absent file is an empty document (nothing ever ran)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return RpcInfo()
    except OSError as exc:
        raise StatusError(f"cannot read {path}: {exc.strerror or exc}") from exc
    try:
        return parse_rpc_info(data)
    except RpcInfoError as exc:
        raise StatusError(f"cannot parse {path}: {exc}") from exc


def _iso(seconds: int) -> str | None:
    """``started`` in rpc-info.json is seconds since the epoch (§3.2)."""
    if seconds <= 0:
        return None
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))


def option(argv: list[str], *names: str) -> str | None:
    """The value of ``--name value`` or ``--name=value`` in ``argv``."""
    for i, arg in enumerate(argv):
        for name in names:
            if arg == name and i + 1 < len(argv):
                return argv[i + 1]
            if arg.startswith(name + "="):
                return arg[len(name) + 1 :]
    return None


HOST_MARKS = ("native-host", "jst.host", "jst service", "jst.service", "jstorrent")


def is_host(pid: int) -> bool:
    """Is ``pid`` alive and a native-host (ours or the original) or a service? A stale
    profile's pid may since belong to any other program; that is not a host."""
    try:
        argv = psutil.Process(pid).cmdline()
    except psutil.Error:
        return False
    joined = " ".join(argv[:4])
    return any(mark in joined for mark in HOST_MARKS)


def is_daemon(argv: list[str]) -> bool:
    """jst-io-daemon, ``jst io-daemon``, ``python -m jst.daemon.cli``, the original's."""
    joined = " ".join(argv[:3])
    return "io-daemon" in joined or "jst.daemon" in joined


def listening_port(proc: psutil.Process, argv: list[str]) -> int | None:
    listen_fd = option(argv, "--listen-fd")
    port = option(argv, "--port", "-p")
    listening = [
        c
        for c in proc.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.ip in ("127.0.0.1", "::1")
    ]
    for conn in listening:  # the socket the host handed over is the daemon's own
        if listen_fd is not None and str(conn.fd) == listen_fd:
            return int(conn.laddr.port)
    if port and port.isdigit() and int(port) != 0:
        return int(port)
    # Otherwise the first listener it opened (the engine's TCP_LISTEN sockets come later).
    listening.sort(key=lambda c: c.fd)
    return int(listening[0].laddr.port) if listening else None


def daemon_token(proc: psutil.Process, argv: list[str]) -> str | None:
    """The daemon's token where its starter left it readable to this user: on its
    command line (the original's hosts pass ``--token``), else in its initial
    environment (``JST_IO_DAEMON_TOKEN``, how a jst host passes it today)."""
    given = option(argv, "--token", "-t")
    if given:
        return given
    try:
        return proc.environ().get(TOKEN_ENV) or None
    except (psutil.Error, OSError):
        return None


# -- the service (issue 15), wired defensively -------------------------------------------------


def query_service() -> tuple[dict[str, Any], str | None]:
    """(what to show, a problem or None). Assumed interface, see README/report:
    ``jst.service.query_status(timeout: float) -> dict | None`` (None: none running)."""
    try:
        query_status = getattr(importlib.import_module("jst.service"), "query_status", None)
    except ImportError:
        query_status = None
    if query_status is None:
        return {"available": False, "running": False}, None
    try:
        answer = query_status(timeout=HTTP_TIMEOUT)
    except Exception as exc:  # a service that answers garbage must not break status
        return {"available": True, "running": None}, f"cannot query the service: {exc}"
    if answer is None:
        return {"available": True, "running": False}, None
    if not isinstance(answer, dict):
        return {"available": True, "running": None}, "the service answered no status object"
    return {"available": True, "running": True, **answer}, None


def _service_tokens(service: dict[str, Any]) -> dict[str, str]:
    """install id -> daemon token, from the service's answer; the tokens are removed
    from what is shown."""
    tokens: dict[str, str] = {}
    installs = service.get("installs")
    if isinstance(installs, list):
        for entry in installs:
            if isinstance(entry, dict):
                token = entry.pop("token", None)
                if isinstance(entry.get("install_id"), str) and isinstance(token, str):
                    tokens[entry["install_id"]] = token
    return tokens


# -- gathering ---------------------------------------------------------------------------------


def _stats(port: int, token: str) -> dict[str, int]:
    status, body = http_get(port, "/stats", {"X-JST-Auth": token})
    if status != 200:
        raise OSError(f"/stats answered {status}")
    try:
        doc = json.loads(body)
    except ValueError as exc:
        raise OSError(f"/stats sent no JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise OSError("/stats sent no JSON object")
    return {k: int(doc[k]) for k in STATS_KEYS if isinstance(doc.get(k), int)}


def _daemon(
    proc: psutil.Process,
    parent: dict[str, Any],
    tokens: dict[str, str],
    previous: dict[int, dict[str, Any]],
    elapsed: float | None,
    problems: list[str],
    host_profile: Profile | None = None,
) -> dict[str, Any]:
    argv = proc.cmdline()
    # A jst host starts its daemon before the handshake names the install (--install-id
    # ""); the install id then reaches the daemon with its config: the host's profile has it.
    install_id = option(argv, "--install-id") or (
        host_profile.install_id if host_profile is not None else None
    )
    port = listening_port(proc, argv)
    entry: dict[str, Any] = {
        "pid": proc.pid,
        "port": port,
        "install_id": install_id,
        "parent_pid": parent["pid"],
        "parent": parent["kind"],
        "uptime_secs": max(0, int(time.time() - proc.create_time())),
        "stats": None,
        "rate_sent": None,
        "rate_received": None,
    }
    token = tokens.get(install_id or "") or daemon_token(proc, argv)
    if token is None and host_profile is not None:
        token = host_daemon_token(host_profile)
    if port is None:
        problems.append(f"daemon pid {proc.pid}: no listening port found")
    elif token is None:
        problems.append(f"daemon pid {proc.pid}: its token is not readable, so no /stats")
    else:
        try:
            entry["stats"] = _stats(port, token)
        except OSError as exc:
            problems.append(f"daemon pid {proc.pid} on port {port}: /stats failed: {exc}")
    before = previous.get(proc.pid)
    if entry["stats"] and before and before.get("stats") and elapsed and elapsed > 0:
        for key, rate in (("bytes_sent", "rate_sent"), ("bytes_received", "rate_received")):
            delta = entry["stats"].get(key, 0) - before["stats"].get(key, 0)
            entry[rate] = max(0, int(delta / elapsed))
    return entry


def _host(profile: Profile, service_pid: int | None, problems: list[str]) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "pid": profile.pid,
        "kind": "service" if profile.pid == service_pid else "host",
        "browser": profile.browser.name,
        "browser_binary": profile.browser.binary,
        "extension_id": profile.extension_id,
        "install_id": profile.install_id,
        "started": profile.started,
        "since": _iso(profile.started),
        "link_port": profile.port,
        "answering": False,
    }
    try:
        status, _ = http_get(profile.port, f"/health?token={quote(profile.token)}")
        entry["answering"] = 200 <= status < 300
        if not entry["answering"]:
            problems.append(f"host pid {profile.pid}: /health answered {status}")
    except OSError as exc:
        problems.append(f"host pid {profile.pid}: not answering on port {profile.port}: {exc}")
    return entry


def _root(profile: Profile, root: Any, is_dir: Callable[[str], bool]) -> dict[str, Any]:
    return {
        "install_id": profile.install_id,
        "key": root.key,
        "path": root.path,
        "display_name": root.display_name,
        "removable": root.removable,
        "available": is_dir(root.path),
    }


def list_roots(info: RpcInfo) -> list[dict[str, Any]]:
    """Every profile's roots, once each (a root key is unique per profile)."""
    seen: set[tuple[str | None, str]] = set()
    roots: list[dict[str, Any]] = []
    for profile in sorted(info.profiles, key=lambda p: p.last_used, reverse=True):
        for root in profile.download_roots:
            if (profile.install_id, root.key) in seen:
                continue
            seen.add((profile.install_id, root.key))
            roots.append(_root(profile, root, os.path.isdir))
    return roots


def gather(previous: Status | None = None, rpc_info: Path | None = None) -> Status:
    """One sample of everything; with ``previous``, throughput since that sample."""
    path = rpc_info or config.rpc_info_path()
    status = Status(taken=time.monotonic(), config_dir=str(path.parent))
    status.service, problem = query_service()
    if problem:
        status.problems.append(problem)
    tokens = _service_tokens(status.service)
    service_pid = status.service.get("pid") if status.service.get("running") else None
    try:
        info = read_rpc_info(path)
    except StatusError as exc:
        status.problems.append(str(exc))
        info = RpcInfo()
    before = {d["pid"]: d for d in previous.daemons} if previous else {}
    elapsed = status.taken - previous.taken if previous else None
    parents: list[dict[str, Any]] = []
    host_profiles: dict[int, Profile] = {}
    for profile in sorted(info.profiles, key=lambda p: p.started):
        if profile.pid > 0 and is_host(profile.pid):
            host = _host(profile, service_pid, status.problems)
            status.hosts.append(host)
            parents.append(host)
            host_profiles[profile.pid] = profile
    if isinstance(service_pid, int) and not any(h["pid"] == service_pid for h in parents):
        parents.append({"pid": service_pid, "kind": "service"})
    for parent in parents:
        try:
            children = psutil.Process(parent["pid"]).children()
            for child in children:
                try:
                    if is_daemon(child.cmdline()):
                        entry = _daemon(
                            child,
                            parent,
                            tokens,
                            before,
                            elapsed,
                            status.problems,
                            host_profiles.get(parent["pid"]),
                        )
                        status.daemons.append(entry)
                except psutil.NoSuchProcess:
                    continue  # ended while we looked
        except psutil.NoSuchProcess:
            continue
        except psutil.Error as exc:
            status.problems.append(f"pid {parent['pid']}: cannot inspect: {exc}")
    status.roots = list_roots(info)
    return status


def sample(rate_interval: float = 0.5, rpc_info: Path | None = None) -> Status:
    """What ``jst status`` prints once: a second sample after ``rate_interval`` seconds
    when a daemon has counters, so its current throughput can be shown."""
    first = gather(rpc_info=rpc_info)
    if not any(d["stats"] for d in first.daemons) or rate_interval <= 0:
        return first
    time.sleep(rate_interval)
    return gather(first, rpc_info=rpc_info)
