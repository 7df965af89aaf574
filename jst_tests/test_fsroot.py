"""Descriptor-relative resolution (fsroot.py), the event-loop fast path (fastfile.py) and
the ``open_for_read`` API, on real files, without a daemon."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

from jst.daemon import fastfile, fileops, fsroot, openat2, statfs
from jst.daemon.errors import HttpError
from jst.daemon.paths import NotRegularFile, PathEscapesRoot, RootUnavailable, Target, resolve

pytestmark = pytest.mark.skipif(not fsroot.supported(), reason="POSIX descriptor walk only")


@pytest.fixture(params=["openat2-first", "walk-only"])
def root(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A root folder; each test runs with Linux's openat2 shortcut and with the walk alone."""
    if request.param == "walk-only":
        monkeypatch.setattr(openat2, "AVAILABLE", False)
    folder = tmp_path / "root"
    (folder / "d" / "e").mkdir(parents=True)
    (folder / "d" / "e" / "f").write_bytes(b"inside")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "f").write_bytes(b"outside")
    return folder


def target(root: Path, rel: str) -> Target:
    return resolve(str(root), rel)


def read(root: Path, rel: str) -> bytes:
    with fileops.open_for_read(target(root, rel)) as f:
        return os.pread(f.fd, 100, 0)


def test_links_that_stay_inside_are_followed_in_every_spelling(root: Path, tmp_path: Path) -> None:
    (root / "rel").symlink_to("d/e")
    (root / "d" / "up").symlink_to("../d/e/f")
    (root / "abs").symlink_to(root / "d")
    (tmp_path / "alias").symlink_to(root)
    (root / "via-alias").symlink_to(tmp_path / "alias" / "d" / "e")
    (root / "to-root").symlink_to(root)
    for rel in ("rel/f", "d/up", "abs/e/f", "via-alias/f", "to-root/to-root/d/e/f"):
        assert read(root, rel) == b"inside", rel
        assert fsroot.stat(target(root, rel)).st_size == len(b"inside"), rel


def test_links_that_leave_are_refused_at_any_depth(root: Path, tmp_path: Path) -> None:
    (root / "abs").symlink_to(tmp_path / "outside")
    (root / "d" / "rel").symlink_to("../../outside")
    (root / "d" / "e" / "dotdot").symlink_to("../../..")
    (root / "d" / "e" / "inside-then-out").symlink_to("../../d/rel/f")
    for rel in ("abs/f", "d/rel/f", "d/e/dotdot/outside/f", "d/e/inside-then-out"):
        with pytest.raises(PathEscapesRoot):
            fileops.open_for_read(target(root, rel))
        with pytest.raises(PathEscapesRoot):
            fsroot.stat(target(root, rel))


def test_symlink_loops_and_long_chains_end_in_eloop(root: Path) -> None:
    (root / "loop").symlink_to("loop")
    with pytest.raises(OSError, match="symbolic links") as caught:
        fsroot.stat(target(root, "loop"))
    assert caught.value.errno == errno.ELOOP
    previous = "d/e/f"
    for i in range(fsroot.MAX_SYMLINKS):
        (root / f"l{i}").symlink_to(previous)
        previous = f"l{i}"
    assert read(root, previous) == b"inside"  # 40 links: followed
    (root / "one-more").symlink_to(previous)
    with pytest.raises(OSError, match="symbolic links") as caught:
        fsroot.stat(target(root, "one-more"))
    assert caught.value.errno == errno.ELOOP


def test_make_dirs_and_create_through_an_inside_link(root: Path) -> None:
    (root / "link").symlink_to("d")
    fsroot.make_dirs(target(root, "link/x/y"))
    assert (root / "d" / "x" / "y").is_dir()
    fd = fsroot.open_file(target(root, "link/n/m/new"), os.O_WRONLY | os.O_CREAT, make_dirs=True)
    os.close(fd)
    assert (root / "d" / "n" / "m" / "new").is_file()
    (root / "dangling").symlink_to("made-by-write")
    os.close(fsroot.open_file(target(root, "dangling"), os.O_WRONLY | os.O_CREAT))
    assert (root / "made-by-write").is_file()


def test_remove_takes_the_link_not_its_target(root: Path, tmp_path: Path) -> None:
    (root / "out").symlink_to(tmp_path / "outside")
    (root / "in").symlink_to("d")
    fsroot.remove(target(root, "out"))
    fsroot.remove(target(root, "in"))
    assert (tmp_path / "outside" / "f").exists()
    assert (root / "d" / "e" / "f").exists()
    assert sorted(os.listdir(root)) == ["d"]


def test_open_for_read_answers_like_the_routes(root: Path) -> None:
    with fileops.open_for_read(target(root, "d/e/f")) as opened:
        assert opened.size == 6
        assert os.pread(opened.fd, 6, 0) == b"inside"
    os.mkfifo(root / "fifo")
    for rel in ("d", "fifo"):
        with pytest.raises(NotRegularFile):
            fileops.open_for_read(target(root, rel))
    with pytest.raises(HttpError) as missing:
        fileops.open_for_read(target(root, "nope"))
    assert missing.value.status == 404


def test_the_root_table_reopens_a_replaced_folder_and_closes_only_unused_handles(
    tmp_path: Path,
) -> None:
    def open_fds() -> int:
        return len(os.listdir("/proc/self/fd" if os.path.isdir("/proc/self/fd") else "/dev/fd"))

    baseline = open_fds()
    table = fsroot.RootTable(limit=2)
    folder = tmp_path / "r"
    folder.mkdir()
    first = table.acquire(str(folder))
    assert table.acquire(str(folder)) is first  # unchanged: shared
    table.release(first)
    folder.rename(tmp_path / "gone")
    with pytest.raises(RootUnavailable):
        table.acquire(str(folder))
    os.fstat(first.fd)  # forgotten, but still in use by us: open
    folder.mkdir()
    second = table.acquire(str(folder))
    assert second is not first
    assert second.ident == (folder.stat().st_dev, folder.stat().st_ino)
    assert open_fds() == baseline + 2
    table.release(first)
    assert open_fds() == baseline + 1  # retired and unused: closed
    table.release(second)
    for name in ("a", "b", "c"):  # the oldest beyond the limit are evicted and closed
        (tmp_path / name).mkdir()
        table.release(table.acquire(str(tmp_path / name)))
    assert second.retired
    assert open_fds() == baseline + 2
    table.clear()
    assert open_fds() == baseline


@pytest.mark.skipif(not fastfile.ENABLED, reason="needs openat2 and RWF_NOWAIT (Linux)")
def test_the_fast_path_answers_only_what_it_can_answer_alone(root: Path, tmp_path: Path) -> None:
    assert fastfile.read_nowait(target(root, "d/e/f"), 1, 3) == b"nsi"
    assert fastfile.read_nowait(target(root, "d/e/f"), 0, None) == b"inside"
    (root / "abs").symlink_to(root / "d")  # inside, but absolute: the walk's business
    (root / "out").symlink_to(tmp_path / "outside")
    os.mkfifo(root / "fifo")
    for rel, offset, length in [
        ("abs/e/f", 0, 3),
        ("out/f", 0, 3),
        ("fifo", 0, 1),
        ("missing", 0, 1),
        ("d/e/f", 4, 3),  # short: the thread answers 500
        ("d/e/f", 0, fastfile.NOWAIT_READ_LIMIT + 1),
        ("d", 0, 1),
    ]:
        assert fastfile.read_nowait(target(root, rel), offset, length) is None, rel
    opened = fastfile.open_nowait(target(root, "d/e/f"))
    assert opened is not None
    with opened:
        assert (opened.size, os.pread(opened.fd, 10, 0)) == (6, b"inside")
    for rel in ("d", "fifo", "out/f", "missing"):
        assert fastfile.open_nowait(target(root, rel)) is None, rel
    root.rename(tmp_path / "unplugged")
    assert fastfile.read_nowait(target(root, "d/e/f"), 0, 3) is None
    assert fastfile.open_nowait(target(root, "d/e/f")) is None


@pytest.fixture
def fresh_write_policy(monkeypatch: pytest.MonkeyPatch) -> None:
    """What fastfile learnt about earlier tests' roots is not this test's business."""
    monkeypatch.setattr(fastfile, "_NO_NOWAIT_WRITES", set())
    monkeypatch.setattr(fastfile, "_INLINE_WRITES", {})
    monkeypatch.setattr(fastfile, "_INLINE_PAUSED_UNTIL", {})


def test_local_disks_are_told_from_network_and_virtual_file_systems(tmp_path: Path) -> None:
    fd = os.open(tmp_path, os.O_RDONLY)
    try:
        # The test's temp dir is on a disk or tmpfs, whichever this machine uses.
        assert statfs.is_local_disk(fd), hex(statfs.fs_type(fd) or 0)
    finally:
        os.close(fd)
    fd = os.open("/proc/self", os.O_RDONLY)
    try:
        assert statfs.fs_type(fd) == 0x9FA0  # procfs: neither a disk nor unknown
        assert not statfs.is_local_disk(fd)
    finally:
        os.close(fd)


@pytest.mark.skipif(not fastfile.ENABLED, reason="needs openat2 and RWF_NOWAIT (Linux)")
@pytest.mark.usefixtures("fresh_write_policy")
def test_small_writes_to_a_local_disk_are_done_on_the_loop(root: Path) -> None:
    assert fastfile.write_nowait(target(root, "d/e/f"), b"OUT", 1) == 3
    assert (root / "d" / "e" / "f").read_bytes() == b"iOUTde"
    # A new file, a folder, a body over the limit: the thread's (it creates, it answers).
    assert fastfile.write_nowait(target(root, "d/new"), b"x", 0) == 0
    assert fastfile.write_nowait(target(root, "d"), b"x", 0) == 0
    big = b"x" * (fastfile.NOWAIT_WRITE_LIMIT + 1)
    assert fastfile.write_nowait(target(root, "d/e/f"), big, 0) == 0
    assert (root / "d" / "e" / "f").read_bytes() == b"iOUTde"
    assert not (root / "d" / "new").exists()


@pytest.mark.skipif(not fastfile.ENABLED, reason="needs openat2 and RWF_NOWAIT (Linux)")
@pytest.mark.usefixtures("fresh_write_policy")
async def test_a_file_system_that_could_hang_is_written_from_a_thread(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if the root were an NFS mount that refuses RWF_NOWAIT writes.
    monkeypatch.setattr(statfs, "fs_type", lambda _fd: 0x6969)
    fastfile._NO_NOWAIT_WRITES.add(str(root))
    assert fastfile.write_nowait(target(root, "d/e/f"), b"OUT", 1) == 0
    assert (root / "d" / "e" / "f").read_bytes() == b"inside"
    await fastfile.write_at(target(root, "d/e/f"), b"OUT", 1, None)  # the thread writes
    assert (root / "d" / "e" / "f").read_bytes() == b"iOUTde"


@pytest.mark.skipif(not fastfile.ENABLED, reason="needs openat2 and RWF_NOWAIT (Linux)")
@pytest.mark.usefixtures("fresh_write_policy")
async def test_a_write_that_waited_sends_its_root_to_threads_for_a_while(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fastfile._NO_NOWAIT_WRITES.add(str(root))
    monkeypatch.setattr(fastfile, "INLINE_WRITE_STALL", -1.0)  # every write "waited"
    assert fastfile.write_nowait(target(root, "d/e/f"), b"1", 0) == 1  # done, then paused
    assert fastfile.write_nowait(target(root, "d/e/f"), b"2", 0) == 0
    await fastfile.write_at(target(root, "d/e/f"), b"3", 0, None)
    assert (root / "d" / "e" / "f").read_bytes() == b"3nside"
    other = tmp_path / "other"  # another root is not paused
    other.mkdir()
    (other / "g").write_bytes(b"g")
    fastfile._NO_NOWAIT_WRITES.add(str(other))
    monkeypatch.setattr(fastfile, "INLINE_WRITE_STALL", 60.0)
    assert fastfile.write_nowait(target(other, "g"), b"G", 0) == 1
    # The pause ends: the loop writes again.
    fastfile._INLINE_PAUSED_UNTIL[str(root)] = 0.0
    assert fastfile.write_nowait(target(root, "d/e/f"), b"4", 0) == 1
    assert (root / "d" / "e" / "f").read_bytes() == b"4nside"


async def test_open_for_read_from_the_event_loop_or_a_thread(root: Path, tmp_path: Path) -> None:
    (root / "abs").symlink_to(root / "d")  # the thread's walk
    for rel in ("d/e/f", "abs/e/f"):
        with await fastfile.open_for_read(target(root, rel)) as opened:
            assert os.pread(opened.fd, 10, 0) == b"inside"
    (root / "out").symlink_to(tmp_path / "outside")
    with pytest.raises(PathEscapesRoot):
        await fastfile.open_for_read(target(root, "out/f"))
    with pytest.raises(NotRegularFile):
        await fastfile.open_for_read(target(root, "d"))


def test_remove_tree_handles_deep_trees_with_few_descriptors(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fsroot, "TREE_FD_WINDOW", 4)
    fsroot.make_dirs(target(root, "/".join(["t"] * 300)))  # deeper than Python's recursion
    level = root
    for i in range(300):
        level = level / "t"
        (level / f"file{i}").write_bytes(b"x")
        if i % 50 == 0:
            os.mkfifo(level / f"fifo{i}")
            (level / f"link{i}").symlink_to(root / "d")
    fsroot.remove(target(root, "t"))
    assert sorted(os.listdir(root)) == ["d"]
    assert (root / "d" / "e" / "f").read_bytes() == b"inside"


def test_remove_tree_stops_when_a_closed_ancestor_was_moved(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A folder moved away while its tree is removed is not followed back up."""
    monkeypatch.setattr(fsroot, "TREE_FD_WINDOW", 1)
    fsroot.make_dirs(target(root, "t/u/v"))
    (root / "t" / "u" / "v" / "f").write_bytes(b"x")
    real_open = fsroot._open_level

    def open_and_move(dir_fd: int, name: str) -> fsroot._Level:
        level = real_open(dir_fd, name)
        if name == "v":  # "u" goes elsewhere while we are inside "v"
            (root / "t" / "u").rename(tmp_path / "moved")
        return level

    monkeypatch.setattr(fsroot, "_open_level", open_and_move)
    with pytest.raises(OSError, match="moved") as caught:
        fsroot.remove(target(root, "t"))
    assert caught.value.errno == errno.ESTALE


def test_the_portable_fallback_keeps_the_same_answers(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsroot_portable (Windows) behind fileops: same results, checked by name."""
    from jst.daemon import fsroot_portable

    monkeypatch.setattr(fileops, "_fs", fsroot_portable)
    fileops.write_at(target(root, "n/m/f"), b"hello", 0, None)
    assert fileops.read_range(target(root, "n/m/f"), 1, 3) == b"ell"
    assert fileops.stat(target(root, "n/m/f"))["size"] == 5
    assert sorted(fileops.list_dir(target(root, ""))) == ["d", "n"]
    fileops.truncate(target(root, "n/m/f"), 2)
    assert (root / "n" / "m" / "f").read_bytes() == b"he"
    fileops.ensure_dir(target(root, "x/y"))
    (root / "out").symlink_to(tmp_path / "outside")
    with pytest.raises(PathEscapesRoot):
        fileops.read_range(target(root, "out/f"), 0, None)
    fileops.delete(target(root, "out"))
    fileops.delete(target(root, "n"))
    assert (tmp_path / "outside" / "f").exists()
    assert sorted(os.listdir(root)) == ["d", "x"]
    os.mkfifo(root / "fifo")
    with pytest.raises(NotRegularFile):
        fileops.truncate(target(root, "fifo"), 0)
    root.rename(tmp_path / "gone")
    with pytest.raises(RootUnavailable):
        fileops.stat(target(root, "d"))
