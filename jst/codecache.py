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
- the interpreter's full version string, cache tag and optimisation level, in the
  file's header: a file written by another interpreter is ignored.

One part of attrs' source is not a function of the class: ``__hash__`` starts from
``hash("<attrs generated hash module.Class>")``, a number that differs in every process
(string hashes are randomised). It is left out of the key, and a cached code object
gets this process's number in its constants. Should anything else in a source change
at two starts in a row, that class is no longer cached, so the file stops changing.

The file is ``<cache>/jstorrent-native/codecache-<program>-<cache tag>.bin``, where
``<cache>`` is ``$XDG_CACHE_HOME`` (when absolute) or ``~/.cache`` on Linux,
``~/Library/Caches`` on macOS and ``%LOCALAPPDATA%`` on Windows; one file per program,
so the host and the daemon, which start together, never overwrite each other's. It is
written (0600, to a temporary name, then renamed into place) only when this start
compiled something the file did not hold, and holds exactly what this start used, so it
does not grow across upgrades. The file's body is checked against a CRC-32 before it is
unmarshalled, and anything unexpected in it (another format, a short or damaged file, a
wrong type) is a miss, never an error: the cache can only make a start faster.
``JST_CODE_CACHE=0`` turns it off (the benchmark times a start without it).
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
MAGIC = b"jst-codecache-1\n"
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

# file name -> (source, mode, inherited flags, code, type hash, changed at the last
# start). The source is stored with the class's type hash (see _type_hash) replaced by
# a NUL, which no source can contain; a code of None marks a class whose source
# changed at two starts in a row, which is not cached until it stops changing.
Entry = tuple[str, str, int, "CodeType | None", int, int]
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


def _header() -> tuple[str, str, int]:
    return (sys.version, sys.implementation.cache_tag or "", sys.flags.optimize)


def _type_hash(filename: str) -> int:
    """What attrs writes into the ``__hash__`` of the class named in ``filename``:
    ``hash("<attrs generated hash module.Class>")``, different in every process, since
    string hashes are randomised. It is the one part of a generated source that is not
    a function of the class."""
    kind_and_name = filename[len(GENERATED_PREFIX) :].lstrip(" ")
    _kind, _, name = kind_and_name.partition(" ")
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
        if stored is not None and stored[1:3] == (mode, flags):
            stored_code = stored[3]
            if stored[0] == key and stored_code is not None:
                self.hits += 1
                self.used[filename] = (*stored[:5], 0)
                if stored[4] == type_hash or key is source:
                    return stored_code
                return _with_constant(stored_code, stored[4], type_hash)
            if stored_code is None and stored[0] != key:  # still changing: not cached
                self.used[filename] = stored
                return self._compile(source, filename, mode, flags, True)  # type: ignore[no-any-return]
        code: CodeType = self._compile(source, filename, mode, flags, True)
        self.misses += 1
        if stored is None or stored[1:3] != (mode, flags) or stored[3] is None:
            # New, or no longer changing (the source it had at the last start is back)
            self.used[filename] = (key, mode, flags, code, type_hash, 0)
        elif not stored[5]:
            self.used[filename] = (key, mode, flags, code, type_hash, 1)  # an edit?
        else:
            # Its source changed at two starts in a row: not an edit of the class but
            # something in it that differs from process to process. Not cached while
            # that goes on (this source is kept, to notice when it stops), so that the
            # file stops changing.
            self.used[filename] = (key, mode, flags, None, type_hash, 1)
        return code


class GeneratedCodeCache:
    """The cache for one program (``"native-host"``, ``"io-daemon"``), open while it
    imports its modules."""

    def __init__(self, path: str, stored: dict[str, Entry]) -> None:
        self.path = path
        self.memo = CompileMemo(stored)
        self._real_compile: Any = None
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
        tag = sys.implementation.cache_tag or "python"
        path = os.path.join(directory, f"codecache-{program}-{tag}.bin")
        cache = cls(path, load(path))
        cache._install()
        return cache

    def _install(self) -> None:
        real_compile = builtins.compile
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

        self.memo._compile = real_compile
        self._real_compile = real_compile
        self._wrapper = compile
        builtins.compile = compile

    def close(self) -> None:
        """Put ``compile`` back, and write the file if this start compiled anything new."""
        if self._wrapper is not None and builtins.compile is self._wrapper:
            builtins.compile = self._real_compile
        self._wrapper = None
        if self.memo.misses:
            save(self.path, self.memo.used)


def load(path: str) -> dict[str, Entry]:
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_FILE_BYTES + 1)
    except OSError:
        return {}
    return decode(data)


def save(path: str, entries: dict[str, Entry]) -> None:
    """Write ``entries`` to ``path`` (0600, through a temporary file and a rename);
    failing quietly: a cache that cannot be written costs the next start its compiles."""
    temporary = f"{path}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
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
    if type(name) is not str or type(entry) is not tuple or len(entry) != 6:
        return False
    source, mode, flags, code, type_hash, changed = entry
    return (
        type(source) is str
        and type(mode) is str
        and type(flags) is int
        and (code is None or type(code) is type(_well_formed.__code__))
        and type(type_hash) is int
        and type(changed) is int
    )
