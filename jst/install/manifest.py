"""The Native Messaging manifests (§8.1, BROWSERS.md), built and checked without I/O.

Chrome-family browsers need ``allowed_origins`` with a trailing ``/`` on each origin;
Firefox needs ``allowed_extensions`` instead and refuses unknown keys, so the two kinds
are separate files with the same name in different directories. The files are written
with two-space indentation (people read them when something does not connect).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from jst.install.browsers import Kind

HOST_NAME = "com.jstorrent.native"
FILE_NAME = f"{HOST_NAME}.json"
DESCRIPTION = "JSTorrent Native Messaging Host"
# The JSTorrent extension's ids in the Chrome Web Store (§8.1).
EXTENSION_IDS = ("dbokmlpefliilbjldladbimlcfgbolhk", "opkmhecbhgngcbglpcdfmnomkffenapc")
# JSTorrent publishes no Firefox add-on id; this is the id a Firefox build would use.
# ``--firefox-extension-id`` replaces it.
FIREFOX_EXTENSION_IDS = ("jstorrent@jstorrent.com",)
PLACEHOLDER = "HOST_PATH_PLACEHOLDER"


def origin(extension_id: str) -> str:
    return f"chrome-extension://{extension_id}/"


def build(
    kind: Kind,
    host_path: str,
    extra_extension_ids: Sequence[str] = (),
    firefox_ids: Sequence[str] = FIREFOX_EXTENSION_IDS,
) -> dict[str, Any]:
    manifest: dict[str, Any] = {
        "name": HOST_NAME,
        "description": DESCRIPTION,
        "path": host_path,
        "type": "stdio",
    }
    if kind == "firefox":
        manifest["allowed_extensions"] = list(dict.fromkeys(firefox_ids))
    else:
        ids = dict.fromkeys([*EXTENSION_IDS, *extra_extension_ids])
        manifest["allowed_origins"] = [origin(i) for i in ids]
    return manifest


def render(manifest: dict[str, Any]) -> bytes:
    return (json.dumps(manifest, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def problems(data: bytes, kind: Kind) -> list[str]:
    """What is wrong with a manifest file's bytes, in words a user can act on."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        return [f"not valid JSON ({exc})"]
    if not isinstance(doc, dict):
        return ["not a JSON object"]
    found: list[str] = []
    if doc.get("name") != HOST_NAME:
        found.append(f'"name" is {doc.get("name")!r}, must be "{HOST_NAME}"')
    if doc.get("type") != "stdio":
        found.append('"type" must be "stdio"')
    path = doc.get("path")
    if not isinstance(path, str) or not os.path.isabs(path):
        found.append(f'"path" must be an absolute path, is {path!r}')
    elif not os.path.isfile(path):
        found.append(f'"path" {path} does not exist')
    elif not os.access(path, os.X_OK):
        found.append(f'"path" {path} is not executable (chmod +x)')
    if kind == "firefox":
        ids = doc.get("allowed_extensions")
        if not isinstance(ids, list) or not ids:
            found.append('"allowed_extensions" must list the add-on id')
    else:
        origins = doc.get("allowed_origins")
        if not isinstance(origins, list) or not all(isinstance(o, str) for o in origins):
            found.append('"allowed_origins" must be a list of origins')
        else:
            bad = [
                o for o in origins if not (o.startswith("chrome-extension://") and o.endswith("/"))
            ]
            if bad:
                found.append(f"origins need the form chrome-extension://<id>/ (trailing /): {bad}")
            if not any(origin(i) in origins for i in EXTENSION_IDS):
                found.append("the JSTorrent extension is not in allowed_origins")
    return found
