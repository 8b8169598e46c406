"""The one error tree of ondrop.

    OndropError                 anything ondrop reports to a person
    ├── DefinitionError         an FDL file or a service definition is wrong (422)
    │   └── LoopError           services would trigger each other in a cycle (409)
    ├── NotFoundError           no such service, job, object or provider (404)
    ├── ConflictError           the request clashes with the current state (409)
    │   └── FencedError         an attempt no longer its job's running one may not write
    ├── InvalidKeyError         an object key or name is unsafe (400)
    ├── TooLargeError           an upload is over the configured limit (413)
    ├── AuthError               missing or wrong credentials (401)
    ├── ForbiddenError          these credentials do not allow this (403)
    ├── StorageError            a storage provider failed (502)
    │   └── StorageUnavailableError  it cannot be reached now; jobs wait and retry (503)
    ├── DiskFullError           no space left where ondrop writes: the data folder or a
    │                           local provider's folder; jobs wait and retry (507)
    ├── ExecutionError          a job could not be run as asked (500)
    ├── StoreError              the durable store failed; try again (503)
    │   ├── StoreBusyError      another program holds the database locked (503)
    │   └── StoreUnavailableError  the database cannot be reached now (503)
    ├── UnavailableError        the platform is stopping or busy; try again (503)
    └── ClientError             the platform answered an error to the client (its status)
        ├── ClientAuthError         401, 403: credentials missing or wrong, or not enough
        ├── ClientNotFoundError     404: no such service, job, object or provider
        ├── ClientConflictError     409: the request clashes with the platform's state
        ├── ClientRequestError      400, 413, 422: the request is wrong (the message says where)
        └── ClientUnavailableError  503, 504, or no answer: try again later

Library exceptions are translated where they enter (`raise ... from exc`) and
the API turns each class into one HTTP status with the message as `detail`, and a
`Retry-After` header where waiting helps (`retry_after`). A fault of the machine (a
full disk, a locked database, a store that cannot be reached) is never a 500:
`retryable(exc)` tells the faults jobs wait out from their own failures.
"""

from __future__ import annotations

import contextlib
import errno
from collections.abc import Iterator
from pathlib import Path

# What a file system says when it has no room left: blocks or inodes, or the user's quota.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)


class OndropError(Exception):
    """Something went wrong that a person can act on; the message says what."""

    status_code = 500
    retry_after: int | None = None  # seconds a client should wait before trying again


class DefinitionError(OndropError):
    status_code = 422


class LoopError(DefinitionError):
    status_code = 409


class NotFoundError(OndropError):
    status_code = 404


class ConflictError(OndropError):
    status_code = 409


class FencedError(ConflictError):
    """An attempt that is no longer its job's running one (it ended, or was taken over
    after its control plane or node was lost) wrote nothing: another attempt owns the job."""


class InvalidKeyError(OndropError):
    status_code = 400


class BadRequestError(OndropError):
    """The request asks for what the thing it names does not do."""

    status_code = 400


class TooLargeError(OndropError):
    status_code = 413


class AuthError(OndropError):
    status_code = 401


class ForbiddenError(OndropError):
    status_code = 403


class StorageError(OndropError):
    status_code = 502
    provider = ""  # the provider that failed, where the platform named it (see `blamed`)


class StorageUnavailableError(StorageError):
    """The store is down or unreachable: worth trying again later, not the job's fault."""

    status_code = 503
    retry_after = 5


class DiskFullError(OndropError):
    """No space left on the file system of `folder` (the data folder, a provider's folder):
    not the request's or the job's fault; it lasts until someone frees space."""

    status_code = 507  # Insufficient Storage (RFC 4918)

    def __init__(self, message: str, folder: Path | None = None) -> None:
        super().__init__(message)
        self.folder = folder


class ExecutionError(OndropError):
    status_code = 500


class StoreError(OndropError):
    """The durable store failed (a disk error, the file gone): nothing was recorded."""

    status_code = 503
    retry_after = 5


class StoreBusyError(StoreError):
    """Another program holds the database locked for longer than the store waits."""

    retry_after = 2


class StoreUnavailableError(StoreError):
    """The database (a PostgreSQL server) cannot be reached now: nothing was recorded, and
    jobs that meet it wait until it is back."""


class UnavailableError(OndropError):
    status_code = 503
    retry_after = 5


class BadGatewayError(OndropError):
    """A server the platform passes requests to (an exposed service's) did not answer."""

    status_code = 502


class ClientError(OndropError):
    """An error reply from the platform, as seen by `ondrop.Client`: the platform's
    message, and the HTTP status (one of the subclasses for the common ones)."""

    statuses: tuple[int, ...] = ()  # the HTTP statuses a subclass stands for

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code

    @staticmethod
    def of(message: str, status_code: int) -> ClientError:
        """The error of its kind for an answer of `status_code`."""
        kind = next((k for k in _CLIENT_KINDS if status_code in k.statuses), ClientError)
        return kind(message, status_code)


class ClientAuthError(ClientError):
    statuses = (401, 403)


class ClientNotFoundError(ClientError):
    statuses = (404,)


class ClientConflictError(ClientError):
    statuses = (409,)


class ClientRequestError(ClientError):
    statuses = (400, 413, 422)


class ClientUnavailableError(ClientError):
    """The platform cannot answer now (stopping, a store down, unreachable): try again;
    `retry_after` is the seconds it asked to wait, when it said."""

    statuses = (503, 504)


_CLIENT_KINDS: tuple[type[ClientError], ...] = (
    ClientAuthError,
    ClientNotFoundError,
    ClientConflictError,
    ClientRequestError,
    ClientUnavailableError,
)


def disk_full(exc: BaseException) -> bool:
    """True when `exc`, or an exception it was raised from, says a file system is full
    (ENOSPC, EDQUOT; a DiskFullError)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, DiskFullError):
            return True
        if isinstance(current, OSError) and current.errno in NO_SPACE:
            return True
        seen.add(id(current))
        cause = current.__cause__
        if cause is None and not current.__suppress_context__:
            cause = current.__context__
        current = cause
    return False


@contextlib.contextmanager
def blamed(provider: str) -> Iterator[None]:
    """A StorageError raised inside is `provider`'s (unless it names one already)."""
    try:
        yield
    except StorageError as exc:
        exc.provider = exc.provider or provider
        raise


def retryable(exc: BaseException) -> bool:
    """A fault that passes, not the job's doing: a store that cannot be reached, a full
    disk, a busy database. A job that meets one waits and tries again, for as long as it
    takes, without using up its service's retries."""
    return isinstance(
        exc, (StorageUnavailableError, StoreBusyError, StoreUnavailableError)
    ) or disk_full(exc)
