"""``jst.codecache``: attrs' generated code from disk, exactly as compiling it gives it.

The promise: a start with the cache behaves as a start without it (same classes, same
hashes, same ``__future__`` semantics, every other ``compile`` untouched); a second
start compiles nothing and leaves the file alone; a damaged, foreign or unwritable file
only costs time; ``JST_CODE_CACHE=0`` writes nothing.
"""

from __future__ import annotations

import json
import marshal
import os
import socket
import stat
import subprocess
import sys
import time
import zlib
from pathlib import Path
from types import CodeType
from typing import Any

import pytest

from jst import codecache

# A module as jst's are: attrs classes of every kind the daemon defines, one of them
# hashed (its __hash__ carries the per-process type hash).
MODULE = """
from __future__ import annotations
import attrs

@attrs.frozen
class Point:
    x: int
    y: int = 0

@attrs.define
class Box:
    items: list[int] = attrs.field(factory=list)

@attrs.define(eq=False)
class Plain:
    name: str
"""

# Runs in a fresh interpreter: the cache open while ``cachedmod`` imports, then what a
# user of the classes sees.
PROBE = """
import json, sys
from jst.codecache import GeneratedCodeCache
cache = GeneratedCodeCache.open("probe")
import cachedmod
if cache is not None:
    cache.close()
p = cachedmod.Point(1, 2)
print(json.dumps({
    "hits": cache.memo.hits if cache else None,
    "misses": cache.memo.misses if cache else None,
    "hash": hash(p),
    "repr": repr(p) + repr(cachedmod.Box([3])) + repr(cachedmod.Plain("n")),
    "eq": [p == cachedmod.Point(1, 2), p == cachedmod.Point(2, 1)],
    "frozen": _frozen(p),
    "compile_restored": compile is __builtins__.compile and compile.__module__ == "builtins",
}))
"""

FROZEN_CHECK = """
def _frozen(p):
    try:
        p.x = 5
    except Exception as exc:
        return type(exc).__name__
    return "mutable"
"""


def run_probe(tmp_path: Path, *, hash_seed: int, enabled: bool = True) -> dict[str, object]:
    (tmp_path / "cachedmod.py").write_text(MODULE)
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["PYTHONHASHSEED"] = str(hash_seed)
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), *sys.path])
    env.pop(codecache.DISABLE_ENV, None)
    if not enabled:
        env[codecache.DISABLE_ENV] = "0"
    result = subprocess.run(
        [sys.executable, "-c", FROZEN_CHECK + PROBE],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
        check=True,
    )
    data: dict[str, object] = json.loads(result.stdout)
    return data


def cache_file(tmp_path: Path, program: str) -> Path:
    """The one cache file of ``program`` (named for this interpreter's build)."""
    tag = sys.implementation.cache_tag
    (path,) = (tmp_path / "cache" / "jstorrent-native").glob(f"codecache-{program}-{tag}-*.bin")
    return path


@pytest.mark.skipif(sys.platform == "win32", reason="XDG_CACHE_HOME")
def test_a_second_start_compiles_nothing_and_its_classes_are_the_same(tmp_path: Path) -> None:
    first = run_probe(tmp_path, hash_seed=1)
    path = cache_file(tmp_path, "probe")
    assert first["misses"]
    assert not first["hits"]
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.stat()

    # Another process, another string-hash seed: the type hash inside __hash__ differs.
    second = run_probe(tmp_path, hash_seed=2)
    reference = run_probe(tmp_path, hash_seed=2, enabled=False)
    assert second["misses"] == 0
    assert second["hits"] == first["misses"]
    assert reference["hits"] is None  # really without the cache
    for key in ("hash", "repr", "eq", "frozen"):
        assert second[key] == reference[key], key
    assert second["hash"] != first["hash"]  # the per-process part followed the process
    assert second["frozen"] == "FrozenInstanceError"
    assert second["compile_restored"] is True
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


@pytest.mark.skipif(sys.platform == "win32", reason="XDG_CACHE_HOME")
def test_turned_off_it_writes_nothing(tmp_path: Path) -> None:
    run_probe(tmp_path, hash_seed=1, enabled=False)
    assert not (tmp_path / "cache").exists()


def framed(header: tuple[str | int | bool, ...], entries: dict[Any, Any]) -> bytes:
    """A cache file as ``encode`` frames one (magic, CRC-32), with any content."""
    body = marshal.dumps((header, entries))
    return codecache.MAGIC + zlib.crc32(body).to_bytes(4, "big") + body


@pytest.mark.skipif(sys.platform == "win32", reason="XDG_CACHE_HOME")
@pytest.mark.parametrize(
    "damage",
    ["flip", "truncate", "garbage", "empty", "other-interpreter", "wrong-shape"],
)
def test_a_damaged_or_foreign_file_is_a_miss_and_is_replaced(tmp_path: Path, damage: str) -> None:
    run_probe(tmp_path, hash_seed=1)
    path = cache_file(tmp_path, "probe")
    data = path.read_bytes()
    if damage == "flip":
        middle = len(data) // 2
        path.write_bytes(data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1 :])
    elif damage == "truncate":
        path.write_bytes(data[: len(data) // 3])
    elif damage == "garbage":
        path.write_bytes(os.urandom(4096))
    elif damage == "empty":
        path.write_bytes(b"")
    elif damage == "other-interpreter":
        path.write_bytes(framed(("2.7.18", "cpython-27", 0), codecache.decode(data)))
    else:  # a valid file whose entries are not what they should be: each one dropped
        path.write_bytes(framed(codecache._header(), {"<attrs generated x>": 1, 2: ()}))

    result = run_probe(tmp_path, hash_seed=3)
    assert result["hits"] == 0
    assert result["misses"]
    assert result["eq"] == [True, False]
    assert codecache.decode(path.read_bytes())  # written whole again
    assert run_probe(tmp_path, hash_seed=4)["misses"] == 0


@pytest.mark.skipif(sys.platform == "win32", reason="permissions")
@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root writes anyway")
def test_an_unwritable_cache_directory_costs_only_time(tmp_path: Path) -> None:
    (tmp_path / "cache").mkdir(mode=0o500)
    try:
        result = run_probe(tmp_path, hash_seed=1)
        assert result["eq"] == [True, False]
    finally:
        (tmp_path / "cache").chmod(0o700)


def defined(code: CodeType) -> dict[str, Any]:
    """What running ``code`` (a compiled module body) defines."""
    scope: dict[str, Any] = {}
    exec(code, scope)  # noqa: S102 (code this test compiled)
    return scope


def test_other_compiles_pass_through_with_their_future_flags() -> None:
    """The wrapper stands between every caller and ``compile``: what ``compile`` passes
    on from the caller (here ``from __future__ import annotations``, which this module
    has) must still be what the caller has, and flags given explicitly still count."""
    cache = codecache.GeneratedCodeCache("/nonexistent/codecache", {})
    cache._install()
    try:
        inherited = defined(compile("def f(x: int) -> None: pass", "<t>", "exec"))["f"]
        tree = compile("x = 1", "<test>", "exec", 0x400)  # ast.PyCF_ONLY_AST
        plain = compile("def g(x: int) -> None: pass", "<t>", "exec", dont_inherit=True)
        evaluated = defined(plain)["g"]
    finally:
        cache.close()
    assert inherited.__annotations__ == {
        "x": "int",
        "return": "None",
    }  # postponed, as the caller asked
    assert type(tree).__name__ == "Module"
    assert evaluated.__annotations__ == {"x": int, "return": None}
    assert cache.memo.hits == cache.memo.misses == 0  # none of them was attrs'
    import builtins

    assert builtins.compile is cache._real_compile


def test_an_edited_class_is_compiled_and_then_cached_again() -> None:
    name = "<attrs generated methods example.Edited>"
    memo = codecache.CompileMemo({})
    memo.compile("def f():\n    return 1\n", name, "exec", 0)
    for source in ("return 2", "return 3"):  # edits at two starts in a row
        memo = codecache.CompileMemo(memo.used)
        memo.compile(f"def f():\n    {source}\n", name, "exec", 0)
        assert (memo.hits, memo.misses) == (0, 1)
    for _ in range(2):
        memo = codecache.CompileMemo(memo.used)
        code = memo.compile("def f():\n    return 3\n", name, "exec", 0)
        assert (memo.hits, memo.misses) == (1, 0)
    assert defined(code)["f"]() == 3


def test_the_type_hash_of_another_process_is_replaced_everywhere() -> None:
    name = "<attrs generated methods example.Hashed>"
    mine = codecache._type_hash(name)
    theirs = mine + 12345
    template = (
        "def h(self):\n    return hash((\n        {0},\n        self.a,\n    ))\n"
        "def k():\n    return ({0},)\n"
    )
    # What another process stored: its own number in the code, the key without it.
    their_code = compile(template.format(theirs), name, "exec", dont_inherit=True)
    key = template.format(codecache.PLACEHOLDER)
    stored = {name: (key, "exec", 0, their_code, theirs, 0)}
    memo = codecache.CompileMemo(stored)  # type: ignore[arg-type]
    code = memo.compile(template.format(mine), name, "exec", 0)
    assert (memo.hits, memo.misses) == (1, 0)
    scope = defined(code)

    class Obj:
        a = 7

    assert scope["h"](Obj()) == hash((mine, 7))
    assert scope["k"]() == (mine,)  # a constant tuple, folded by the compiler


def test_a_second_class_of_the_same_name_has_the_type_hash_of_the_first() -> None:
    # attrs numbers the file names of same-named classes ("-1>") for linecache, but
    # hashes the plain name: that is what the source holds, so what must be replaced.
    plain = "<attrs generated methods m.C>"
    assert codecache._type_hash("<attrs generated methods m.C-1>") == codecache._type_hash(plain)
    assert codecache._type_hash("<attrs generated __hash__ m.C-12>") == codecache._type_hash(plain)
    assert codecache._type_hash(plain) == hash("<attrs generated hash m.C>")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="FIFOs")
def test_a_fifo_in_place_of_the_file_is_a_miss_not_a_hang(tmp_path: Path) -> None:
    run_probe(tmp_path, hash_seed=1)
    path = cache_file(tmp_path, "probe")
    path.unlink()
    os.mkfifo(path)
    result = run_probe(tmp_path, hash_seed=2)  # run_probe's timeout: 60 s
    assert result["hits"] == 0
    assert result["eq"] == [True, False]


def test_a_directory_in_place_of_the_file_costs_only_time(tmp_path: Path) -> None:
    run_probe(tmp_path, hash_seed=1)
    path = cache_file(tmp_path, "probe")
    path.unlink()
    path.mkdir()
    for seed in (2, 3):  # it can be neither read nor replaced: every start compiles
        result = run_probe(tmp_path, hash_seed=seed)
        assert result["hits"] == 0
        assert result["eq"] == [True, False]


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX ownership")
def test_a_file_or_directory_others_may_write_is_neither_read_nor_written(
    tmp_path: Path,
) -> None:
    # What the file holds is run, so only the user's own file in the user's own
    # directory counts (a cache dir under /tmp may have been made by someone else).
    run_probe(tmp_path, hash_seed=1)
    path = cache_file(tmp_path, "probe")
    path.chmod(0o666)
    assert run_probe(tmp_path, hash_seed=2)["hits"] == 0
    assert stat.S_IMODE(path.stat().st_mode) == 0o600  # replaced by one of ours
    assert run_probe(tmp_path, hash_seed=3)["misses"] == 0

    path.parent.chmod(0o777)
    before = path.stat()
    assert run_probe(tmp_path, hash_seed=4)["hits"] == 0
    after = path.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


HEALTH = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="XDG_CACHE_HOME")
def test_the_daemon_writes_its_cache_once_and_then_only_reads_it(tmp_path: Path) -> None:
    env = dict(os.environ)
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")
    env["JSTORRENT_CONFIG_DIR"] = str(tmp_path / "config")
    env.pop(codecache.DISABLE_ENV, None)
    stamps = []
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, "-m", "jst.daemon.cli", "--token", "t", "--install-id", "i"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        try:
            assert proc.stdout is not None
            port = int(proc.stdout.readline())
            deadline = time.monotonic() + 10
            while True:  # serving means the imports (and the cache's write) are done
                with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                    sock.sendall(HEALTH)
                    if sock.recv(64).startswith(b"HTTP/1.1 200"):
                        break
                assert time.monotonic() < deadline
                time.sleep(0.05)
        finally:
            proc.terminate()
            proc.wait(timeout=10)
        path = cache_file(tmp_path, "io-daemon")
        info = path.stat()
        stamps.append((info.st_ino, info.st_mtime_ns))
    assert stamps[0] == stamps[1]
    assert len(codecache.decode(path.read_bytes())) > 50  # trio's classes and ours
