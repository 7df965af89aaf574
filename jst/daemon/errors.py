"""The io-daemon's exceptions.

``DaemonError`` is the root. ``HttpError`` and its subclasses are *answers*: raised
anywhere below a route handler, they become exactly one HTTP response with the given
status and body at the single boundary in ``asgi.py``. Anything else that escapes a
handler is our bug: it is logged with its traceback and the client gets a bare 500.
"""

from __future__ import annotations

import errno
import os


class DaemonError(Exception):
    """Root of every exception the io-daemon raises on purpose."""


class HttpError(DaemonError):
    """An HTTP error response: ``status`` plus a ``text/plain`` body (``None`` = no body).

    Per §5.5, 401/404/405 for routing and auth carry an empty body and no Content-Type.
    """

    status: int = 500

    def __init__(self, message: str | None = None, *, status: int | None = None) -> None:
        super().__init__(message or "")
        self.message = message
        if status is not None:
            self.status = status


class BadRequest(HttpError):
    status = 400


class Unauthorized(HttpError):
    status = 401


class Forbidden(HttpError):
    status = 403


class NotFound(HttpError):
    status = 404


class MethodNotAllowed(HttpError):
    status = 405

    def __init__(self, allowed: tuple[str, ...]) -> None:
        super().__init__(None)
        self.allowed = allowed


class Conflict(HttpError):
    status = 409


class PayloadTooLarge(HttpError):
    status = 413


class UnsupportedMediaType(HttpError):
    status = 415


class Unprocessable(HttpError):
    status = 422


class InternalError(HttpError):
    status = 500


def os_error_text(exc: OSError) -> str:
    """An OS error as the original prints it: ``No such file or directory (os error 2)``.

    Python's ``str(OSError)`` adds ``[Errno 2]`` and the file name; the daemon must not
    echo absolute paths back to a browser page, and clients match only on the status.
    """
    if exc.errno is None:
        return str(exc) or type(exc).__name__
    return f"{os.strerror(exc.errno)} (os error {exc.errno})"


# Errors that mean "the disk (or the user's quota, or the file size limit) is full":
# answered with 507 so the client can tell them from bugs.
STORAGE_FULL_ERRNOS = frozenset(
    e for e in (errno.ENOSPC, getattr(errno, "EDQUOT", None), errno.EFBIG) if e is not None
)


def map_os_error(exc: OSError, status: int = 500, *, storage_full: int | None = None) -> HttpError:
    """The one place where an ``OSError`` becomes an HTTP error (used by fileops.py).

    ``status`` is what the failing *step* answers (the spec ties statuses to steps: any
    open failure of ``/read`` is 404, any failure of ``/ops/list`` is 500, ...);
    ``storage_full`` overrides it for a full disk where the route reports that (507).
    """
    if storage_full is not None and exc.errno in STORAGE_FULL_ERRNOS:
        status = storage_full
    return HttpError(os_error_text(exc), status=status)
