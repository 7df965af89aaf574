"""``jst status`` for people: tables, and a live view with ``--watch``.

rich draws both (tables that fit the terminal, a live region redrawn in place instead of
a scroll of tables); it is imported by this module only, which only ``jst status``
imports, so the host and the daemon never pay for it.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from jst.ui.status import Status, gather

WATCH_INTERVAL = 1.0


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{n} B"  # pragma: no cover (the loop always returns)


def _rate(n: int | None) -> str:
    return "-" if n is None else f"{_size(n)}/s"


def _duration(secs: int | None) -> str:
    if secs is None:
        return "-"
    hours, rest = divmod(int(secs), 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s"


def _hosts(status: Status) -> Table | Text:
    if not status.hosts:
        return Text("hosts: no host running")
    table = Table(title="hosts", title_justify="left")
    for column in ("pid", "kind", "browser", "extension id", "install id", "since", "answers"):
        table.add_column(column, overflow="fold")
    for h in status.hosts:
        table.add_row(
            str(h["pid"]), h["kind"], h["browser"] or "-", h["extension_id"] or "-",
            h["install_id"] or "-", h["since"] or "-", "yes" if h["answering"] else "NO",
        )  # fmt: skip
    return table


def _daemons(status: Status) -> Table | Text:
    if not status.daemons:
        return Text("daemons: none running")
    table = Table(title="daemons (in = from peers, out = to peers)", title_justify="left")
    for column in ("pid", "port", "of pid", "uptime", "/io", "tcp", "listen", "udp"):
        table.add_column(column, justify="right")
    for column in ("in", "out", "in/s", "out/s"):
        table.add_column(column, justify="right", no_wrap=True)
    for d in status.daemons:
        s: dict[str, Any] = d["stats"] or {}
        counts = ("ws_connections", "tcp_sockets", "tcp_servers", "udp_sockets")
        table.add_row(
            str(d["pid"]), str(d["port"] or "-"), str(d["parent_pid"]),
            _duration(d["uptime_secs"]), *(str(s.get(k, "-")) for k in counts),
            _size(s.get("bytes_received")), _size(s.get("bytes_sent")),
            _rate(d["rate_received"]), _rate(d["rate_sent"]),
        )  # fmt: skip
    return table


def _service(status: Status) -> Text:
    service = status.service
    if not service.get("available"):
        return Text("service: not available")
    if service.get("running") is False:
        return Text("service: not running")
    if service.get("running") is None:
        return Text("service: unknown")
    installs = service.get("installs")
    count = len(installs) if isinstance(installs, list) else 0
    return Text(f"service: running (pid {service.get('pid', '?')}, {count} install(s))")


def _roots(status: Status) -> Table | Text:
    if not status.roots:
        return Text("roots: none")
    table = Table(title="download roots", title_justify="left")
    for column in ("key", "name", "path", "install id", "available"):
        table.add_column(column, overflow="fold")
    for r in status.roots:
        table.add_row(
            r["key"], r["display_name"] or "-", r["path"], r["install_id"] or "-",
            "yes" if r["available"] else "NO",
        )  # fmt: skip
    return table


def render(status: Status) -> Group:
    parts: list[Table | Text] = [_hosts(status), _daemons(status), _service(status), _roots(status)]
    if status.problems:
        parts.append(Text("problems:\n" + "\n".join(f"  {p}" for p in status.problems)))
    return Group(*parts)


def print_once(status: Status) -> None:
    Console(highlight=False).print(render(status))


def _header(status: Status) -> Text:
    shown = time.strftime("%H:%M:%S")
    state = "ok" if status.ok else f"{len(status.problems)} problem(s)"
    return Text(f"jst status at {shown}: {state}; every {WATCH_INTERVAL:g} s, Ctrl-C ends")


def watch() -> int:
    """Redraw every second until Ctrl-C; the exit status of the last sample. On a
    terminal the view is redrawn in place; into a pipe or a file each sample is printed
    after the previous one (a log, since nothing can be redrawn there)."""
    console = Console(highlight=False)
    status = gather()
    try:
        if not console.is_terminal:
            while True:
                console.print(Group(_header(status), render(status)))
                time.sleep(WATCH_INTERVAL)
                status = gather(status)
        view = Group(_header(status), render(status))
        with Live(view, console=console, auto_refresh=False, screen=False) as live:
            while True:
                time.sleep(WATCH_INTERVAL)
                status = gather(status)
                live.update(Group(_header(status), render(status)), refresh=True)
    except KeyboardInterrupt:
        pass
    return 0 if status.ok else 1
