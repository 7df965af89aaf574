"""The distribution users install: its name, its files, and the templates inside it.

The full path (a fresh venv holding only the wheel, ``jst install``, a handshake) is
``jst_tests/wheel_check.sh``, which CI runs; it needs a package index, so it is not a
test here. These tests build offline, with the build backend of the dev venv.
"""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

import pytest

from jst import __version__, templates

REPO = Path(__file__).resolve().parent.parent
DIST = "jstorrent_native"


def test_packaged_templates_are_the_repository_templates() -> None:
    for name in templates.NAMES:
        folder = "contrib" if name.endswith(".desktop") else "manifests"
        assert templates.read(name) == (REPO / folder / name).read_bytes(), name
    with pytest.raises(KeyError):
        templates.read("../pyproject.toml")


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--skip-dependency-check",
         "--outdir", str(out), str(REPO)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    return out


@pytest.mark.slow
def test_the_wheel_holds_everything_install_and_the_commands_need(dist: Path) -> None:
    (wheel,) = dist.glob(f"{DIST}-{__version__}-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        metadata = zf.read(f"{DIST}-{__version__}.dist-info/METADATA").decode()
        scripts = zf.read(f"{DIST}-{__version__}.dist-info/entry_points.txt").decode()
    assert "Name: jstorrent-native\n" in metadata
    assert "Requires-Dist: rich" in metadata
    for script in ("jst", "jst-native-host", "jst-io-daemon", "jst-link-handler"):
        assert f"\n{script} = " in scripts
    for name in templates.NAMES:
        assert f"jst/templates/{name}" in names
    for module in ("cli", "status", "statusview", "add", "jsonrpc", "rpc"):
        assert f"jst/ui/{module}.py" in names
    assert "jst/install/doctor.py" in names
    assert not any(n.startswith("jst_tests/") for n in names)


@pytest.mark.slow
def test_the_sdist_keeps_the_packagers_files(dist: Path) -> None:
    (sdist,) = dist.glob(f"{DIST}-{__version__}.tar.gz")
    with tarfile.open(sdist) as tf:
        names = {n.split("/", 1)[1] for n in tf.getnames() if "/" in n}
    for name in (
        "manifests/com.jstorrent.native.json",
        "contrib/jst-link-handler.desktop",
        "jst/templates/com.jstorrent.native.json",
        "jst_tests/handshake.py",
        "README.md",
        "CHANGELOG.md",
    ):
        assert name in names
