#!/usr/bin/env bash
# The package as users get it: build the sdist and the wheel (the wheel from the sdist,
# so the sdist must be complete), install the wheel alone into a fresh venv, and check
# that venv's jst: --version, install --dry-run and a real install in a scratch HOME
# (the manifest must name *that* venv's jst-native-host), then a Native Messaging
# handshake with that host. Run by .ci/run; needs PyPI (or a mirror) for the build
# backend and the dependencies. Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
work=$(mktemp -d "${TMPDIR:-/tmp}/jst-wheel.XXXXXX")
trap 'rm -rf "$work"' EXIT

"$PYTHON" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log"; exit 1; }
ls "$work/dist"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet "$work"/dist/jstorrent_native-*.whl
venv_bin=$(cd "$work/venv/bin" && pwd -P)

"$work/venv/bin/jst" --version
export HOME="$work/home" XDG_CONFIG_HOME="$work/home/.config" XDG_DATA_HOME="$work/home/.local/share"
unset JSTORRENT_CONFIG_DIR
mkdir -p "$HOME"
"$work/venv/bin/jst" install --dry-run --browser chromium
"$work/venv/bin/jst" install --browser chromium >/dev/null
manifest="$HOME/.config/chromium/NativeMessagingHosts/com.jstorrent.native.json"
"$work/venv/bin/python" - "$manifest" "$venv_bin/jst-native-host" <<'PY'
import json, sys
path = json.load(open(sys.argv[1]))["path"]
assert path == sys.argv[2], f"manifest names {path}, expected {sys.argv[2]}"
print(f"manifest path: {path}")
PY
"$work/venv/bin/python" jst_tests/handshake.py "$venv_bin/jst-native-host"
"$work/venv/bin/jst" uninstall --browser chromium >/dev/null
echo "wheel check: ok"
