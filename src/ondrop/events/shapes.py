"""What a body posted to `/job` means: the event shapes OSCAR's faas-supervisor reads, tried
in its order.

- API Gateway (`httpMethod`): its `body` is the event (base64-decoded when
  `isBase64Encoded`), read again; its query parameters become `CONT_VAR_<name>` variables.
- dCache (`event` and `subscription`): the file `event.name` in the service's input on
  `webdav.dcache`.
- Rucio (`event_type` with `payload.scope`): refused, naming why (no Rucio provider yet).
- Delegated (`event`, with `storage_provider` or not), as OSCAR clusters and replicas send
  it: the inner event (a JSON string or an object), its objects in that provider.
- Storage records (`Records[0].eventSource`): `aws:s3` and `minio:s3` name stored objects
  (`bucket/key`); `OneTrigger` names a file in a Onedata space by its path, `Key`
  (`/space/folder/file`), found in the service's input on that space; another source is
  unknown.
- Anything else is unknown: the body is the job's input file, as OSCAR does.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from ondrop.errors import InvalidKeyError
from ondrop.storage.base import check_key

STORAGE_SOURCES = ("aws:s3", "minio:s3")
DCACHE_PROVIDER = "webdav.dcache"  # where faas-supervisor looks for a dCache event's file
VARIABLE_PREFIX = "CONT_VAR_"  # an API Gateway query parameter, as the script gets it
NESTING = 8  # events wrapped in events, at most (a delegated one in an API Gateway one...)


@dataclass(frozen=True)
class Objects:
    """Stored objects the event names: `keys` in `provider` (None: the service's input
    whose path each key is under, else minio.default); with `in_input`, each key is a
    file name within the service's input on `provider`; with `space`, each key is a path in
    that Onedata space, found in the service's input there."""

    keys: list[str]
    provider: str | None = None
    in_input: bool = False
    space: str | None = None


@dataclass(frozen=True)
class Body:
    """The job's input file, unwrapped from the event: `data` as it is when `exact`, else
    read as any invocation body is (JSON as it is, other text as base64)."""

    data: bytes
    exact: bool = False
    variables: dict[str, str] = field(default_factory=dict)


def read(raw: bytes) -> Objects | Body | None:
    """What the body `raw` is; None when it is not an event at all (the body is the input
    file as it came). InvalidKeyError names what is wrong with an event that cannot work."""
    event = _object(raw)
    return None if event is None else _shape(event, None, {}, 0)


def variables(body: str) -> dict[str, str]:
    """The `CONT_VAR_*` variables of an invocation whose event (its $EVENT) is `body`."""
    event = _object(body)
    return _query(event) if event is not None and "httpMethod" in event else {}


def _shape(
    event: dict[str, Any], provider: str | None, found: dict[str, str], depth: int
) -> Objects | Body | None:
    if depth > NESTING:
        raise InvalidKeyError(f"the event is wrapped in more than {NESTING} events")
    if "httpMethod" in event:
        found = {**found, **_query(event)}
        inner = event.get("body") or ""
        if not isinstance(inner, dict | str):
            raise InvalidKeyError("an API Gateway event's body must be a string or an object")
        if event.get("isBase64Encoded") and isinstance(inner, str):
            try:
                return Body(base64.b64decode(inner, validate=True), exact=True, variables=found)
            except (binascii.Error, ValueError):
                raise InvalidKeyError(
                    "the API Gateway event says isBase64Encoded, but its body is not base64"
                ) from None
        return _again(inner, provider, found, depth, as_it_is=True)
    if "event" in event and "subscription" in event:
        name = event["event"].get("name") if isinstance(event["event"], dict) else None
        if not isinstance(name, str) or not name:
            raise InvalidKeyError("a dCache event names its file in event.name")
        return Objects([check_key(name, "dCache event file name")], DCACHE_PROVIDER, True)
    payload = event.get("payload")
    if "event_type" in event and isinstance(payload, dict) and "scope" in payload:
        raise InvalidKeyError(
            "a Rucio event names a dataset in a Rucio storage, which ondrop cannot read yet; "
            "store the files in a provider ondrop has (S3, MinIO, WebDAV, a folder)"
        )
    if "event" in event:  # delegated, as an OSCAR cluster or replica sends it
        given = event.get("storage_provider")
        if given is not None and (not isinstance(given, str) or not given):
            raise InvalidKeyError("a delegated event's storage_provider must be a provider id")
        inner = event["event"]
        if not isinstance(inner, dict | str):
            raise InvalidKeyError("a delegated event's event must be a JSON string or an object")
        return _again(inner, given or provider, found, depth, as_it_is=False)
    records = event.get("Records")
    if isinstance(records, list) and records and isinstance(records[0], dict):
        source = records[0].get("eventSource")
        if source == "OneTrigger":
            return _onetrigger(event)
        if source in STORAGE_SOURCES or (source is None and "s3" in records[0]):
            return Objects(_storage_keys(records), provider)
    return None


def _object(text: str | bytes) -> dict[str, Any] | None:
    """`text` as a JSON object; None when it is something else."""
    try:
        event = json.loads(text) if text else None
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _again(
    inner: dict[str, Any] | str,
    provider: str | None,
    found: dict[str, str],
    depth: int,
    as_it_is: bool,
) -> Objects | Body:
    """An event carried in another (an object, or JSON as text), read again; else it is
    the input file: JSON as it is, other text as it is when `as_it_is`, else read as any
    invocation body is (base64)."""
    event = inner if isinstance(inner, dict) else _object(inner)
    if event is not None and (shaped := _shape(event, provider, found, depth + 1)):
        return shaped
    data = json.dumps(inner).encode() if isinstance(inner, dict) else inner.encode()
    return Body(data, exact=as_it_is or event is not None, variables=found)


def _query(event: dict[str, Any]) -> dict[str, str]:
    params = event.get("queryStringParameters") or {}
    if not isinstance(params, dict):
        raise InvalidKeyError("an API Gateway event's queryStringParameters must be an object")
    found = {}
    for name, value in params.items():
        if not str(name).replace("_", "").isalnum():
            raise InvalidKeyError(
                f"query parameter {name!r} cannot be a variable name (letters, digits, _)"
            )
        found[f"{VARIABLE_PREFIX}{name}"] = str(value)
    return found


def _onetrigger(event: dict[str, Any]) -> Objects:
    """The file a OneTrigger event names: `Key` is its path, the space's name first."""
    path = event.get("Key")
    if not isinstance(path, str) or path.strip("/").count("/") < 1:
        raise InvalidKeyError(
            "a OneTrigger event names its file in Key, as /space/folder/file (the space's name "
            "first)"
        )
    space, _, key = path.strip("/").partition("/")
    return Objects([check_key(key, "OneTrigger event file path")], space=space)


def _storage_keys(records: list[Any]) -> list[str]:
    """The object keys (`bucket/key`) of S3/MinIO records."""
    keys = []
    for i, record in enumerate(records):
        try:
            bucket = record["s3"]["bucket"]["name"]
            key = record["s3"]["object"]["key"]
            if not isinstance(bucket, str) or not isinstance(key, str):
                raise TypeError
        except (KeyError, TypeError):
            raise InvalidKeyError(
                f"storage event record {i}: expected s3.bucket.name and s3.object.key strings"
            ) from None
        key = unquote_plus(key)
        keys.append(check_key(f"{bucket}/{key}" if bucket else key, "event object key"))
    return keys
