"""``jst rpc``: JSON-RPC 2.0 on stdin/stdout, one JSON value per line, for front-ends.

Methods (params by name or by position; ``wait`` is optional everywhere it appears):

=============  =====================================  ===========================================
method         params                                 result
=============  =====================================  ===========================================
get_status     —                                      what ``jst status --json`` prints (rates
                                                      since this process's previous get_status)
add_magnet     ``link``, ``wait`` (s, default 0)      ``{"delivered", "host_pid", "browser",
                                                      "via"}``
add_torrent    ``path`` | ``contents_base64`` +       as add_magnet
               ``name``, ``wait``
list_roots     —                                      ``[{"key", "path", "display_name",
                                                      "install_id", "removable", "available"}]``
stop_daemon    ``install_id``                         ``{"stopped": true, "pid"}``
=============  =====================================  ===========================================

Application errors (``data.reason`` is a sentence for the user): -32001 the link was
refused (not a magnet, a missing or bad file), -32002 it could not be delivered (no host,
the host failed), -32003 no daemon runs for that install id, -32004 jst's state could
not be read, -32005 the daemon did not stop.

The process's nursery tree::

    trio.run(serve)
    ├── write_lines ....... the only writer of stdout: one whole line per write
    └── calls (nursery)
        ├── read_lines .... stdin, a line at a time (a worker thread); at EOF it waits
        │                   up to EOF_GRACE s for calls in flight, then cancels them
        └── one task per input line, and inside it one task per request of a batch,
            so a call that waits for a host never delays another

At most ``MAX_IN_FLIGHT`` lines are handled at once; beyond that stdin is not read (the
front-end's pipe fills), which bounds memory. Protocol rules: ``jst/ui/jsonrpc.py``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import psutil
import trio

from jst import config
from jst.linkhandler.target import LinkError
from jst.ui import add, jsonrpc, status
from jst.ui.jsonrpc import Call, Param, Reply, RpcError

log = logging.getLogger("jst.rpc")

MAX_IN_FLIGHT = 64
EOF_GRACE = 1.0  # as the native-host answers requests read before its stdin closed
MAX_WAIT = 600.0
STOP_TIMEOUT = 3.0

LINK_REFUSED = -32001
NOT_DELIVERED = -32002
NO_SUCH_DAEMON = -32003
STATE_UNREADABLE = -32004
STOP_FAILED = -32005

WAIT = Param("wait", (int, float), required=False)


def _wait(args: dict[str, Any]) -> float:
    value = float(args.get("wait", 0))
    if not (math.isfinite(value) and 0 <= value <= MAX_WAIT):
        raise jsonrpc.invalid_params(f"wait must be between 0 and {MAX_WAIT:g} seconds")
    return value


def _delivered(result: add.Delivery) -> dict[str, Any]:
    if result.reason is not None:
        raise RpcError(NOT_DELIVERED, "Not delivered", result.reason)
    return result.to_json()


def stop_daemon_blocking(install_id: str) -> dict[str, Any]:
    """Stop the io-daemon of ``install_id`` that a running host supervises: its own
    ``POST /control/shutdown`` when its token is readable, else SIGTERM (both are a stop
    on purpose for the host, which starts it again at the next handshake)."""
    try:
        info = status.read_rpc_info(config.rpc_info_path())
    except status.StatusError as exc:
        raise RpcError(STATE_UNREADABLE, "Cannot read state", str(exc)) from exc
    for profile in info.profiles:
        if profile.pid <= 0 or not status.is_host(profile.pid):
            continue
        try:
            children = psutil.Process(profile.pid).children()
        except psutil.Error:
            continue
        for child in children:
            try:
                argv = child.cmdline()
                if not status.is_daemon(argv):
                    continue
                # a jst host's daemon learns its install id with its config (status.py)
                if (status.option(argv, "--install-id") or profile.install_id) != install_id:
                    continue
                port = status.listening_port(child, argv)
                token = status.daemon_token(child, argv) or status.host_daemon_token(profile)
            except psutil.Error:
                continue
            try:
                if port is not None and token is not None:
                    status.http_post(port, "/control/shutdown", token)
                else:
                    child.terminate()
                child.wait(STOP_TIMEOUT)
            except psutil.NoSuchProcess:
                pass
            except (OSError, psutil.Error) as exc:
                reason = f"io-daemon pid {child.pid} did not stop: {exc or 'timed out'}"
                raise RpcError(STOP_FAILED, "Daemon did not stop", reason) from exc
            return {"stopped": True, "pid": child.pid}
    reason = f"no io-daemon of a running host has install id {install_id!r}"
    raise RpcError(NO_SUCH_DAEMON, "No such daemon", reason)


class Methods:
    """The methods, each ``async (named params) -> result`` or ``RpcError``."""

    def __init__(self) -> None:
        self.previous: status.Status | None = None
        self.table: dict[str, tuple[jsonrpc.Signature, Callable[..., Awaitable[Any]]]] = {
            "get_status": ((), self.get_status),
            "add_magnet": ((Param("link", str), WAIT), self.add_magnet),
            "add_torrent": (
                (
                    Param("path", str, required=False),
                    Param("contents_base64", str, required=False),
                    Param("name", str, required=False),
                    WAIT,
                ),
                self.add_torrent,
            ),
            "list_roots": ((), self.list_roots),
            "stop_daemon": ((Param("install_id", str),), self.stop_daemon),
        }

    async def call(self, method: str, params: dict[str, Any] | list[Any]) -> Any:
        if method not in self.table:
            raise RpcError(jsonrpc.METHOD_NOT_FOUND, "Method not found", f"no method {method!r}")
        signature, function = self.table[method]
        return await function(**jsonrpc.check_params(params, signature))

    async def get_status(self) -> dict[str, Any]:
        sample = await trio.to_thread.run_sync(status.gather, self.previous, abandon_on_cancel=True)
        self.previous = sample
        return sample.to_json()

    async def add_magnet(self, link: str, **args: Any) -> dict[str, Any]:
        wait = _wait(args)
        try:
            item = add.magnet(link)
        except LinkError as exc:
            raise RpcError(LINK_REFUSED, "Link refused", str(exc)) from exc
        return _delivered(await add.deliver(item, link, wait=wait))

    async def add_torrent(self, **args: Any) -> dict[str, Any]:
        wait = _wait(args)
        path, contents, name = args.get("path"), args.get("contents_base64"), args.get("name")
        if (path is None) == (contents is None):
            raise jsonrpc.invalid_params("give either path, or contents_base64 and name")
        try:
            if path is not None:
                if name is not None:
                    raise jsonrpc.invalid_params("name goes with contents_base64, not path")
                item = await trio.to_thread.run_sync(add.torrent_file, path)
                shown = path
            else:
                if name is None or contents is None:
                    raise jsonrpc.invalid_params("missing param: name")
                item = add.torrent_contents(contents, name)
                shown = name
        except LinkError as exc:
            raise RpcError(LINK_REFUSED, "Link refused", str(exc)) from exc
        return _delivered(await add.deliver(item, shown, wait=wait))

    async def list_roots(self) -> list[dict[str, Any]]:
        def read() -> list[dict[str, Any]]:
            try:
                info = status.read_rpc_info(config.rpc_info_path())
            except status.StatusError as exc:
                raise RpcError(STATE_UNREADABLE, "Cannot read state", str(exc)) from exc
            return status.list_roots(info)

        return await trio.to_thread.run_sync(read, abandon_on_cancel=True)

    async def stop_daemon(self, install_id: str) -> dict[str, Any]:
        return await trio.to_thread.run_sync(stop_daemon_blocking, install_id)


async def run_call(methods: Methods, call: Call) -> Reply | None:
    try:
        reply = Reply(call.id, result=await methods.call(call.method, call.params))
    except RpcError as exc:
        reply = Reply(call.id, error=exc)
    except Exception as exc:  # our bug: an answer, not a dead bridge
        log.exception("method %s failed", call.method)
        reply = jsonrpc.error_reply(call.id, jsonrpc.INTERNAL_ERROR, "Internal error", str(exc))
    return None if call.notification else reply


async def handle_line(methods: Methods, line: bytes, out: trio.MemorySendChannel[bytes]) -> None:
    parsed = jsonrpc.parse_line(line)
    answers: list[Reply | None] = [s if isinstance(s, Reply) else None for s in parsed.slots]

    async def run_slot(i: int, call: Call) -> None:
        answers[i] = await run_call(methods, call)

    async with trio.open_nursery() as nursery:
        for i, slot in enumerate(parsed.slots):
            if isinstance(slot, Call):
                nursery.start_soon(run_slot, i, slot)
    data = jsonrpc.encode_replies([a for a in answers if a is not None], parsed.batch)
    if data:
        with contextlib.suppress(trio.BrokenResourceError):  # our stdout was closed
            await out.send(data)


def _read_line() -> tuple[bytes, bool]:
    """(one line without its newline, too_long); ``(b"", False)`` with eof. Blocking."""
    line = sys.stdin.buffer.readline(jsonrpc.MAX_LINE + 1)
    if len(line) <= jsonrpc.MAX_LINE or line.endswith(b"\n"):
        return line, False
    while line and not line.endswith(b"\n"):  # skip the rest, a bounded piece at a time
        line = sys.stdin.buffer.readline(65536)
    return b"", True


def _write(data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(1, view) :]


async def write_lines(lines: trio.MemoryReceiveChannel[bytes]) -> None:
    async with lines:
        async for data in lines:
            try:
                await trio.to_thread.run_sync(_write, data)
            except OSError:  # the front-end closed our stdout: nothing to tell it
                return


async def serve() -> None:
    methods = Methods()
    out, lines = trio.open_memory_channel[bytes](MAX_IN_FLIGHT)
    in_flight = trio.Semaphore(MAX_IN_FLIGHT)
    async with trio.open_nursery() as outer:
        outer.start_soon(write_lines, lines)
        async with out, trio.open_nursery() as calls:

            async def handle(line: bytes) -> None:
                try:
                    await handle_line(methods, line, out)
                finally:
                    in_flight.release()

            async def read_lines() -> None:
                while True:
                    await in_flight.acquire()
                    raw, too_long = await trio.to_thread.run_sync(
                        _read_line, abandon_on_cancel=True
                    )
                    if too_long:
                        in_flight.release()
                        with contextlib.suppress(trio.BrokenResourceError):
                            await out.send(jsonrpc.line_too_long())
                        continue
                    if not raw:
                        in_flight.release()
                        break
                    if not raw.strip():
                        in_flight.release()
                        continue  # blank lines are allowed between requests
                    calls.start_soon(handle, raw.rstrip(b"\r\n"))
                # Holding every slot means no line is in flight any more.
                with trio.move_on_after(EOF_GRACE):
                    for _ in range(MAX_IN_FLIGHT):
                        await in_flight.acquire()
                calls.cancel_scope.cancel()

            calls.start_soon(read_lines)


def main() -> int:
    # Logs go to stderr only, and only warnings: stdout is the protocol.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    try:
        trio.run(serve)
    except KeyboardInterrupt:
        return 130
    return 0
