"""Root keys (§2.6) and the host's containment rule (§2.4.4)."""

from __future__ import annotations

from pathlib import Path

import pytest

from jst.host import roots
from jst.rpcinfo import DownloadRoot


def test_root_keys_match_the_original() -> None:
    # Keys saved by the original's users; a change here orphans their torrents.
    assert roots.root_key("/home/u/Downloads") == "0747b5f2a1ef7fd2"
    assert roots.root_key("\\\\?\\C:\\Users\\u\\Downloads") == "e61dcb4418318071"


def test_built_root_uses_the_canonical_path_and_the_picked_name(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "Shortcut"
    link.symlink_to(real)
    root = roots.build_root(str(link))
    assert root.path == str(real)
    assert root.key == roots.root_key(str(real))
    assert root.display_name == "Shortcut"
    assert (root.removable, root.last_stat_ok) == (False, True)
    assert abs(root.last_checked - roots.now_ms()) < 5000  # milliseconds, not seconds


def test_root_for_a_vanished_folder_keeps_the_picked_path(tmp_path: Path) -> None:
    gone = str(tmp_path / "gone")
    assert roots.build_root(gone).path == gone
    assert roots.build_root("/").display_name == "/"


def test_initial_directory_is_the_newest_healthy_root(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    listed = [
        DownloadRoot("1", str(a), last_checked=10),
        DownloadRoot("2", str(b), last_checked=20),
        DownloadRoot("3", str(tmp_path), last_checked=30, last_stat_ok=False),
    ]
    assert roots.initial_directory(listed) == str(b)
    b.rmdir()
    assert roots.initial_directory(listed) == str(Path.home())


@pytest.fixture
def root_dir(tmp_path: Path) -> Path:
    root = tmp_path / "Downloads"
    (root / "Show").mkdir(parents=True)
    (root / "Show" / "ep.mkv").write_bytes(b"")
    (tmp_path / "secret").write_bytes(b"")
    (root / "link-out").symlink_to(tmp_path / "secret")
    return root


def test_contained_targets(root_dir: Path) -> None:
    assert roots.contained_target(str(root_dir), "Show/ep.mkv") == str(root_dir / "Show/ep.mkv")
    assert roots.contained_target(str(root_dir), "Show/new.mkv") == str(root_dir / "Show/new.mkv")
    assert roots.contained_target(str(root_dir), "a/b/c") == str(root_dir / "a/b/c")
    absolute = str(root_dir / "Show")
    assert roots.contained_target(str(root_dir), absolute) == absolute


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("link-out", 'Path escape detected: "link-out"'),
        ("../secret", 'Path escape detected: "../secret"'),
        ("../x", 'Path escape detected in parent: "{root}/.."'),
        ("../nothere/x", 'Path escape detected in base: "{root}/.."'),
        ("missing/../../x", 'Path escape detected in base: "{root}"'),
    ],
)
def test_escapes_are_refused_with_the_originals_messages(
    root_dir: Path, path: str, message: str
) -> None:
    with pytest.raises(roots.ContainmentError) as caught:
        roots.contained_target(str(root_dir), path)
    assert str(caught.value) == message.format(root=root_dir)


def test_missing_root_is_an_invalid_root(tmp_path: Path) -> None:
    with pytest.raises(roots.ContainmentError, match=r"^Invalid root path: .*\(os error 2\)$"):
        roots.contained_target(str(tmp_path / "nope"), "x")


def test_rust_debug_quoting() -> None:
    assert roots.rust_debug('a"b\\c\nd\x01') == '"a\\"b\\\\c\\nd\\u{1}"'
