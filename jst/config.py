"""Where jst keeps its state, and the developer env file (PROTOCOL.md §3.1, §3.4).

``<config>`` is ``$JSTORRENT_CONFIG_DIR`` used verbatim when set, else the platform's
user config directory; the app directory is always ``<config>/jstorrent-native``.

The original has three env-file parsers with different rules (§3.4, §9.26). We keep one,
a superset of all three: blank lines and ``#`` comments are skipped, each remaining line
is split at its first ``=``, key and value are trimmed, and the first occurrence of a key
wins. Every line any original parser accepts means the same thing here.
"""

from __future__ import annotations

import os
import sys

# Not pathlib at import: the host reads the env file before it starts its daemon, and
# pathlib (with the re it loads) is ~4 ms of that cold start (issue 17). The public
# functions still return Paths; ``_app_dir`` is the string they are built from.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path

CONFIG_DIR_ENV = "JSTORRENT_CONFIG_DIR"
APP_DIR_NAME = "jstorrent-native"
RPC_INFO_NAME = "rpc-info.json"
ENV_FILE_NAME = "jstorrent-native.env"


def _platform_config_dir() -> str:
    if sys.platform.startswith("linux") or sys.platform.startswith("freebsd"):
        # The original (Rust `dirs`) honours XDG_CONFIG_HOME only when it is absolute;
        # platformdirs would also take a relative one, so decide this case here.
        xdg = os.environ.get("XDG_CONFIG_HOME", "")
        if os.path.isabs(xdg):
            return xdg
        return os.path.join(_home(), ".config")
    import platformdirs

    # macOS: ~/Library/Application Support; Windows: the roaming %APPDATA%.
    return platformdirs.user_config_dir(appname=None, appauthor=False, roaming=True)


def _home() -> str:
    """``Path.home()``'s answer (which raises when there is none)."""
    home = os.path.expanduser("~")
    if home == "~":
        raise RuntimeError("Could not determine home directory.")
    return home


def _config_dir() -> str:
    override = os.environ.get(CONFIG_DIR_ENV)
    return override if override else _platform_config_dir()


def _app_dir() -> str:
    return os.path.join(_config_dir(), APP_DIR_NAME)


def platform_config_dir() -> Path:
    """The OS's per-user config directory, ignoring ``JSTORRENT_CONFIG_DIR``."""
    from pathlib import Path

    return Path(_platform_config_dir())


def config_dir() -> Path:
    """``<config>``: the override when set (verbatim), else the platform directory."""
    from pathlib import Path

    return Path(_config_dir())


def app_dir() -> Path:
    """``<config>/jstorrent-native``: rpc-info.json, the env file and our logs live here."""
    from pathlib import Path

    return Path(_app_dir())


def rpc_info_path() -> Path:
    return app_dir() / RPC_INFO_NAME


def parse_env_file(text: str) -> dict[str, str]:
    """Parse env-file text with the superset rule described in the module docstring."""
    values: dict[str, str] = {}
    for raw_line in text.splitlines():
        line = raw_line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not sep:
            continue
        key = key.strip()
        if key and key not in values:
            values[key] = value.strip()
    return values


ENV_FILE_MAX = 1 << 20  # a few lines in practice; a larger file is not an env file


def read_env_file(path: str | Path) -> dict[str, str]:
    """Read one env file; a missing or unreadable file, one that is not a regular file
    or one over 1 MiB is simply empty. Never blocks: the host reads it before answering
    the browser, and a FIFO in its place used to hold the handshake forever."""
    from jst.smallfile import read_regular

    found = read_regular(path, ENV_FILE_MAX)
    if found is None:
        return {}
    data = found[0]
    return parse_env_file(data.decode("utf-8", errors="replace"))


def env_file_candidates(exe_dir: Path | None = None) -> list[Path]:
    """Env files in the order they are consulted: ``<config>`` first, then the exe dir."""
    candidates = [app_dir() / ENV_FILE_NAME]
    if exe_dir is not None:
        candidates.append(exe_dir / ENV_FILE_NAME)
    return candidates


def env_setting(name: str, exe_dir: str | Path | None = None) -> str | None:
    """The first value of ``name`` found in the env files (see ``env_file_candidates``)."""
    candidates = [os.path.join(_app_dir(), ENV_FILE_NAME)]
    if exe_dir is not None:
        candidates.append(os.path.join(exe_dir, ENV_FILE_NAME))
    for path in candidates:
        value = read_env_file(path).get(name)
        if value is not None:
            return value
    return None
