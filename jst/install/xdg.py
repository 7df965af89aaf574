"""Linux desktop integration: the link-handler's desktop entry and ``mimeapps.list``.

``xdg-mime default`` is used to make jst the handler when it is installed (it knows the
desktop's own files); otherwise we write the freedesktop ``mimeapps.list`` in
``$XDG_CONFIG_HOME`` directly, which is what ``xdg-mime`` does on a generic desktop.
Removal always edits ``mimeapps.list`` itself (``xdg-mime`` cannot unset a default) and
takes out only our desktop id, leaving every other association as it was.
"""

from __future__ import annotations

DESKTOP_ID = "jst-link-handler.desktop"
MIME_TYPES = ("x-scheme-handler/magnet", "application/x-bittorrent")
DEFAULTS = "Default Applications"


def _exec_quote(path: str) -> str:
    # Desktop Entry spec: inside double quotes, escape " ` $ and \ with a backslash.
    escaped = "".join("\\" + c if c in '"`$\\' else c for c in path)
    return f'"{escaped}"'


def desktop_entry(link_handler: str) -> str:
    return (
        "[Desktop Entry]\n"
        "Type=Application\n"
        "Name=JSTorrent Link Handler\n"
        "Comment=Open magnet links and .torrent files in JSTorrent\n"
        f"Exec={_exec_quote(link_handler)} %u\n"
        f"MimeType={';'.join(MIME_TYPES)};\n"
        "NoDisplay=true\n"
        "Terminal=false\n"
    )


def _sections(text: str) -> list[tuple[str | None, list[str]]]:
    sections: list[tuple[str | None, list[str]]] = [(None, [])]
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            sections.append((stripped[1:-1], []))
        else:
            sections[-1][1].append(line)
    return sections


def _join(sections: list[tuple[str | None, list[str]]]) -> str:
    out: list[str] = []
    for name, lines in sections:
        if name is not None:
            out.append(f"[{name}]")
        out.extend(lines)
    return "\n".join(out) + "\n" if out else ""


def set_default(text: str, mime: str, desktop_id: str = DESKTOP_ID) -> str:
    """``text`` with ``desktop_id`` as the default handler of ``mime``."""
    sections = _sections(text)
    for name, lines in sections:
        if name == DEFAULTS:
            for i, line in enumerate(lines):
                if line.split("=", 1)[0].strip() == mime:
                    lines[i] = f"{mime}={desktop_id};"
                    return _join(sections)
            lines.append(f"{mime}={desktop_id};")
            return _join(sections)
    sections.append((DEFAULTS, [f"{mime}={desktop_id};"]))
    return _join(sections)


def default_for(text: str, mime: str) -> str | None:
    for name, lines in _sections(text):
        if name != DEFAULTS:
            continue
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and key.strip() == mime:
                first = value.strip().split(";")[0]
                return first or None
    return None


def remove_handler(text: str, desktop_id: str = DESKTOP_ID) -> str:
    """``text`` without ``desktop_id`` anywhere; lines left empty are dropped."""
    sections = _sections(text)
    for _name, lines in sections:
        kept: list[str] = []
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and not line.lstrip().startswith("#"):
                ids = [v for v in value.strip().split(";") if v]
                if desktop_id in ids:
                    ids = [v for v in ids if v != desktop_id]
                    if not ids:
                        continue
                    line = f"{key.strip()}={';'.join(ids)};"
            kept.append(line)
        lines[:] = kept
    return _join(sections)


def has_entries(text: str) -> bool:
    """Whether ``text`` still associates anything (not just headers, blanks, comments)."""
    return any(
        "=" in line and not line.lstrip().startswith("#")
        for _name, lines in _sections(text)
        for line in lines
    )
