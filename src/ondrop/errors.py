"""The one error tree of ondrop.

    OndropError                 anything ondrop reports to a person
    ├── DefinitionError         an FDL file or a service definition is wrong (422)
    │   └── LoopError           services would trigger each other in a cycle (409)
    ├── NotFoundError           no such service, job, object or provider (404)
    ├── ConflictError           the request clashes with the current state (409)
    ├── InvalidKeyError         an object key or name is unsafe (400)
    ├── TooLargeError           an upload is over the configured limit (413)
    ├── AuthError               missing or wrong credentials (401)
    ├── ForbiddenError          these credentials do not allow this (403)
    ├── StorageError            a storage provider failed (502)
    │   └── StorageUnavailableError  it cannot be reached now; jobs wait and retry (503)
    ├── ExecutionError          a job could not be run as asked (500)
    ├── StoreError              the durable store failed (500)
    ├── UnavailableError        the platform is stopping or busy; try again (503)
    └── ClientError             the platform answered an error to the client

Library exceptions are translated where they enter (`raise ... from exc`) and
the API turns each class into one HTTP status with the message as `detail`.
"""

from __future__ import annotations


class OndropError(Exception):
    """Something went wrong that a person can act on; the message says what."""

    status_code = 500


class DefinitionError(OndropError):
    status_code = 422


class LoopError(DefinitionError):
    status_code = 409


class NotFoundError(OndropError):
    status_code = 404


class ConflictError(OndropError):
    status_code = 409


class InvalidKeyError(OndropError):
    status_code = 400


class TooLargeError(OndropError):
    status_code = 413


class AuthError(OndropError):
    status_code = 401


class ForbiddenError(OndropError):
    status_code = 403


class StorageError(OndropError):
    status_code = 502


class StorageUnavailableError(StorageError):
    """The store is down or unreachable: worth trying again later, not the job's fault."""

    status_code = 503


class ExecutionError(OndropError):
    status_code = 500


class StoreError(OndropError):
    status_code = 500


class UnavailableError(OndropError):
    status_code = 503


class ClientError(OndropError):
    """An error reply from the platform, as seen by `ondrop.Client`."""

    def __init__(self, message: str, status_code: int) -> None:
        super().__init__(message)
        self.status_code = status_code
