"""A disk cache for the code attrs generates, so a cold start does not compile it again.

attrs writes the methods of every class it decorates (``__init__``, ``__eq__``,
``__repr__``, ``__hash__``...) as Python source and compiles it when the class is
defined. ``import trio`` defines ~80 such classes and the daemon's own modules ~50 more:
~130 ``compile()`` calls, 30-40 ms of every start of the host and of the daemon (issue
17) that Python's bytecode cache cannot hold, since the source is not a file.

While a program's modules import (``GeneratedCodeCache.open`` ... ``close``),
``builtins.compile`` is wrapped: a call for attrs-generated source (its file name starts
with ``<attrs generated``) is answered from the cache when the cache holds the code for
the same inputs, and compiled (then remembered) otherwise; every other call passes
through untouched. ``compile()`` is a pure function of its source, file name, mode and
flags, and of the interpreter, so the key is exactly those:

- source, file name, mode and the ``__future__`` flags the caller would have passed on
  (``compile`` inherits them from the frame that calls it, which is now our wrapper, so
  they are read from the caller's code and passed explicitly);
- the interpreter's full version string, cache tag, optimisation level and column
  tables setting (``-X no_debug_ranges``), in the file's header: a file written by
  another interpreter is ignored.

One part of attrs' source is not a function of the class: ``__hash__`` starts from
``hash("<attrs generated hash module.Class>")``, a number that differs in every process
(string hashes are randomised). It is left out of the key, and a cached code object
gets this process's number in its constants. (Only the end column that a traceback's
carets would show for that constant may differ by a digit or two: a constant cannot
raise, so no traceback shows it.)

The file is ``<cache>/jstorrent-native/codecache-<program>-<cache tag>-<build>.bin``,
where ``<cache>`` is ``$XDG_CACHE_HOME`` (when absolute) or ``~/.cache`` on Linux,
``~/Library/Caches`` on macOS and ``%LOCALAPPDATA%`` on Windows, and ``<build>`` a
CRC of the interpreter's version string and flags. One file per program, so the host
and the daemon, which start together, never overwrite each other's, and per
interpreter build, so two Pythons never take turns rewriting one file.

Reading it never blocks and never trusts more than the user's own files: the file must
be a regular file, and it and its directory owned by the user and writable by no one
else (they are created 0600 and 0700), or it is neither read nor written. It is written
(to a fresh temporary name, then renamed into place) only when this start compiled
something it did not hold, and holds exactly what this start used, so it does not grow
across upgrades. Its body is checked against a CRC-32 (for damage, not for attacks:
that is what the ownership rule is for) before it is unmarshalled, and anything
unexpected (another format, a short or damaged file, a wrong type) is a miss, never an
error: the cache can only make a start faster. ``JST_CODE_CACHE=0`` turns it off (the
benchmark times a start without it).
"""

from __future__ import annotations

import builtins
import marshal
import os
import sys

TYPE_CHECKING = False  # not ``typing``: this runs before anything else is imported
if TYPE_CHECKING:
    from types import CodeType
    from typing import Any

DISABLE_ENV = "JST_CODE_CACHE"
APP_DIR_NAME = "jstorrent-native"
MAGIC = b"jst-codecache-2\n"
MAX_FILE_BYTES = 8 << 20  # ~150 KiB today; anything far larger is not ours
GENERATED_PREFIX = "<attrs generated"

# The compiler flags that ``compile`` passes on from its caller (``PyCF_MASK``): the
# ``__future__`` features. Spelled out rather than read from ``__future__``'s features.
_FUTURE_FLAGS = (
    0x20000  # CO_FUTURE_DIVISION
    | 0x40000  # CO_FUTURE_ABSOLUTE_IMPORT
    | 0x80000  # CO_FUTURE_WITH_STATEMENT
    | 0x100000  # CO_FUTURE_PRINT_FUNCTION
    | 0x200000  # CO_FUTURE_UNICODE_LITERALS
    | 0x400000  # CO_FUTURE_BARRY_AS_BDFL
    | 0x800000  # CO_FUTURE_GENERATOR_STOP
    | 0x1000000  # CO_FUTURE_ANNOTATIONS
)

# file name -> (source, mode, inherited flags, code, type hash). The source is stored
# with the class's type hash (see _type_hash) replaced by a NUL, which no source can
# contain.
Entry = tuple[str, str, int, "CodeType", int]
PLACEHOLDER = "\0"


def cache_dir() -> str | None:
    """The per-user cache directory of this platform, or None if there is none."""
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA", "")
        return os.path.join(base, APP_DIR_NAME, "Cache") if os.path.isabs(base) else None
    home = os.path.expanduser("~")
    if sys.platform == "darwin":
        base = os.path.join(home, "Library", "Caches")
    else:
        xdg = os.environ.get("XDG_CACHE_HOME", "")
        base = xdg if os.path.isabs(xdg) else os.path.join(home, ".cache")
    if not os.path.isabs(base):
        return None  # no home directory (``~`` stayed as it was)
    return os.path.join(base, APP_DIR_NAME)


def _header() -> tuple[str, str, int, bool]:
    """What, besides its inputs, decides what ``compile`` returns."""
    no_debug_ranges = "no_debug_ranges" in sys._xoptions or bool(
        os.environ.get("PYTHONNODEBUGRANGES")
    )
    return (sys.version, sys.implementation.cache_tag or "", sys.flags.optimize, no_debug_ranges)


def _type_hash(filename: str) -> int:
    """What attrs writes into the ``__hash__`` of the class named in ``filename``:
    ``hash("<attrs generated hash module.Class>")``, different in every process, since
    string hashes are randomised. It is the one part of a generated source that is not
    a function of the class."""
    kind_and_name = filename[len(GENERATED_PREFIX) :].lstrip(" ")
    _kind, _, name = kind_and_name.partition(" ")
    # A second class of the same name gets "-1>", "-2>"... in its file name (attrs keeps
    # file names unique for linecache), but its hash is still that of the plain name.
    stem, dash, number = name.rpartition("-")
    if dash and number[:-1].isdigit() and number.endswith(">"):
        name = stem + ">"
    return hash(f"{GENERATED_PREFIX} hash {name}")


def _with_constant(code: CodeType, old: int, new: int) -> CodeType:
    """``code`` with every constant ``old`` (also inside tuples and nested functions)
    replaced by ``new``."""

    def swap(value: object) -> object:
        if type(value) is int and value == old:
            return new
        if type(value) is tuple:
            return tuple(swap(item) for item in value)
        if type(value) is type(code):
            return _with_constant(value, old, new)
        return value

    return code.replace(co_consts=tuple(swap(const) for const in code.co_consts))


class CompileMemo:
    """The cache's logic, without files or ``builtins``: ``compile`` answers one call
    for generated source from the entries of the last start, and ``used`` is what the
    next start's file should hold."""

    def __init__(self, stored: dict[str, Entry], real_compile: Any = compile) -> None:
        self.stored = stored
        self.used: dict[str, Entry] = {}
        self.hits = 0
        self.misses = 0
        self._compile = real_compile

    def compile(self, source: str, filename: str, mode: str, flags: int) -> CodeType:
        type_hash = _type_hash(filename)
        marker = str(type_hash)
        key = source.replace(marker, PLACEHOLDER) if marker in source else source
        stored = self.stored.get(filename)
        if stored is not None and stored[:3] == (key, mode, flags):
            self.hits += 1
            self.used[filename] = stored
            if stored[4] == type_hash or key is source:
                return stored[3]
            return _with_constant(stored[3], stored[4], type_hash)
        code: CodeType = self._compile(source, filename, mode, flags, True)
        self.misses += 1
        self.used[filename] = (key, mode, flags, code, type_hash)
        return code


class GeneratedCodeCache:
    """The cache for one program (``"native-host"``, ``"io-daemon"``), open while it
    imports its modules."""

    def __init__(self, path: str, stored: dict[str, Entry]) -> None:
        self.path = path
        self._real_compile = builtins.compile
        self.memo = CompileMemo(stored, self._real_compile)
        self._wrapper: Any = None

    @classmethod
    def open(cls, program: str) -> GeneratedCodeCache | None:
        """Load ``program``'s cache and start answering attrs' compiles from it; None
        when the cache is turned off or this platform has no cache directory."""
        if os.environ.get(DISABLE_ENV, "").strip().lower() in ("0", "off", "no", "false"):
            return None
        directory = cache_dir()
        if directory is None:
            return None
        import zlib

        # The interpreter's build in the name too, so that two Pythons of one minor
        # version (a system one and a venv's) keep a file each instead of taking turns.
        tag = sys.implementation.cache_tag or "python"
        build = zlib.crc32(repr(_header()).encode())
        path = os.path.join(directory, f"codecache-{program}-{tag}-{build:08x}.bin")
        cache = cls(path, load(path))
        cache._install()
        return cache

    def _install(self) -> None:
        real_compile = self._real_compile
        memo_compile = self.memo.compile

        def compile(
            source: Any,
            filename: Any,
            mode: str,
            flags: int = 0,
            dont_inherit: bool = False,
            optimize: int = -1,
            **kwargs: Any,
        ) -> Any:
            # ``compile`` passes on the __future__ flags of the frame that calls it,
            # which is now this one: take them from our caller's code instead.
            if not dont_inherit:
                flags |= sys._getframe(1).f_code.co_flags & _FUTURE_FLAGS
            if (
                type(source) is str
                and type(filename) is str
                and filename.startswith(GENERATED_PREFIX)
                and not flags & ~_FUTURE_FLAGS
                and optimize == -1
                and not kwargs
            ):
                return memo_compile(source, filename, mode, flags)
            return real_compile(source, filename, mode, flags, True, optimize, **kwargs)

        self._wrapper = compile
        builtins.compile = compile

    def close(self) -> None:
        """Put ``compile`` back, and write the file if this start compiled anything new."""
        if self._wrapper is not None and builtins.compile is self._wrapper:
            builtins.compile = self._real_compile
        self._wrapper = None
        if self.memo.misses:
            save(self.path, self.memo.used)
        # The sources (~75 KiB) and the code nothing uses: not for the process's life
        # (the program's main function holds this object until it returns).
        self.memo.stored = {}
        self.memo.used = {}


def _ours(info: os.stat_result) -> bool:
    """Owned by us and writable by nobody else: what the cache's directory and file must
    be, since what they hold is run. (A cache directory under a shared one such as /tmp
    may have been made by someone else; such a cache is neither read nor written.)"""
    getuid = getattr(os, "geteuid", None)
    if getuid is None:
        return True  # Windows: %LOCALAPPDATA% is the user's own
    return info.st_uid == getuid() and not info.st_mode & 0o022


def load(path: str) -> dict[str, Entry]:
    """The entries of the cache file at ``path``; empty unless it is a regular file of
    ours in a directory of ours (never blocks: a FIFO in its place is a miss)."""
    from jst.smallfile import read_regular

    try:
        if not _ours(os.stat(os.path.dirname(path))):
            return {}
    except OSError:
        return {}
    found = read_regular(path, MAX_FILE_BYTES, follow_symlinks=False)
    if found is None or not _ours(found[1]):
        return {}
    return decode(found[0])


def save(path: str, entries: dict[str, Entry]) -> None:
    """Write ``entries`` to ``path`` (0600, through a temporary file and a rename);
    failing quietly: a cache that cannot be written costs the next start its compiles."""
    directory = os.path.dirname(path)
    try:
        os.makedirs(directory, mode=0o700, exist_ok=True)
        if not _ours(os.stat(directory)):
            return
        # A fresh name (a pid alone may be a dead process's, whose file is still there)
        temporary = f"{path}.{os.getpid()}-{os.urandom(4).hex()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with open(fd, "wb") as file:
                file.write(encode(entries))
            os.replace(temporary, path)
        except BaseException:
            os.unlink(temporary)
            raise
    except (OSError, ValueError):
        pass


def encode(entries: dict[str, Entry]) -> bytes:
    import zlib

    body = marshal.dumps((_header(), entries))
    return MAGIC + zlib.crc32(body).to_bytes(4, "big") + body


def decode(data: bytes) -> dict[str, Entry]:
    """The entries of a cache file's bytes; empty for anything that is not a file written
    by this interpreter, intact."""
    if len(data) > MAX_FILE_BYTES or not data.startswith(MAGIC):
        return {}
    import zlib

    start = len(MAGIC) + 4
    body = data[start:]
    if zlib.crc32(body).to_bytes(4, "big") != data[len(MAGIC) : start]:
        return {}
    try:
        header, entries = marshal.loads(body)  # noqa: S302 (our own file, checked above)
    except Exception:  # a file from a jst of another format: a miss
        return {}
    if header != _header() or type(entries) is not dict:
        return {}
    return {name: entry for name, entry in entries.items() if _well_formed(name, entry)}


def _well_formed(name: object, entry: object) -> bool:
    if type(name) is not str or type(entry) is not tuple or len(entry) != 5:
        return False
    source, mode, flags, code, type_hash = entry
    return (
        type(source) is str
        and type(mode) is str
        and type(flags) is int
        and type(code) is type(_well_formed.__code__)
        and type(type_hash) is int
    )
