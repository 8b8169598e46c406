"""`minio.<id>` and `s3.<id>`: S3-compatible object stores, through boto3.

Keys are `bucket/key`, OSCAR's `bucket/folder/file`. Transfers stream, and large
objects move in parallel multipart parts. An object's version is its ETag with its
modification time, so an upload of the same bytes again is new work too.
"""

from __future__ import annotations

import builtins
import io
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from boto3.exceptions import Boto3Error, RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from ondrop.errors import (
    ConflictError,
    DefinitionError,
    InvalidKeyError,
    NotFoundError,
    StorageError,
    StorageUnavailableError,
)
from ondrop.storage.base import ObjectInfo, StorageProvider, check_key

PART = 16 * 1024**2  # multipart threshold and part size
SMALL = 1024**2  # an object read whole and sent in one request, below this
MISSING = {"404", "NoSuchKey", "NotFound"}
# What S3 takes as a bucket's name (its rules, and what MinIO and SeaweedFS check).
BUCKET_NAME = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
CREDENTIALS = {
    "AccessDenied",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "403",
    "InvalidToken",
    "ExpiredToken",
}


class _Body(io.RawIOBase):
    """A botocore StreamingBody as a binary file object."""

    def __init__(self, body: Any) -> None:
        self._body = body

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        data = self._body.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)

    def close(self) -> None:
        self._body.close()
        super().close()


class S3Storage(StorageProvider):
    kind = "s3"
    concurrent = 8

    def __init__(
        self,
        name: str,
        endpoint: str = "",
        access_key: str = "",
        secret_key: str = "",
        region: str = "",
        verify: bool = True,
    ) -> None:
        super().__init__(name)
        self.endpoint = endpoint
        config = Config(
            s3={"addressing_style": "path"},
            signature_version="s3v4",
            retries={"max_attempts": 3, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        )
        self.client = boto3.session.Session().client(
            "s3",
            endpoint_url=endpoint or None,
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region or "us-east-1",
            verify=verify,
            config=config,
        )
        self.transfer = TransferConfig(
            multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=4
        )

    # -- keys and errors ------------------------------------------------------------------
    def _split(self, key: str) -> tuple[str, str]:
        bucket, _, rest = check_key(key).partition("/")
        if not rest:
            raise InvalidKeyError(
                f"{self.name}: {key!r} names a bucket, not an object (expected bucket/key)"
            )
        return bucket, rest

    @contextmanager
    def _calls(self, what: str) -> Iterator[None]:
        """Turn what boto3 raises while doing `what` into ondrop's storage errors."""
        try:
            yield
        except (ClientError, BotoCoreError, Boto3Error) as exc:
            raise self._error(exc, what) from exc

    def _error(self, exc: BaseException, what: str) -> StorageError:
        where = f"{self.name} ({self.endpoint or 'AWS'})"
        if isinstance(exc, S3UploadFailedError):
            # boto3 raises it while handling the store's answer, which it names only in text
            exc = exc.__cause__ or exc.__context__ or exc
        if isinstance(exc, BotoConnectionError | HTTPClientError | RetriesExceededError):
            return StorageUnavailableError(
                f"{where}: cannot reach the store to {what} ({type(exc).__name__}); is it "
                "running? Jobs wait and retry."
            )
        if not isinstance(exc, ClientError):
            return StorageError(f"{where}: {what}: {exc}")
        code = _code(exc)
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return StorageError(
                f"{where}: {what}: the bucket does not exist; create it, or "
                "fix the path's first folder"
            )
        if code in CREDENTIALS:
            return StorageError(
                f"{where}: {what}: the store refused the credentials ({code}); "
                "check access_key and secret_key"
            )
        if (isinstance(status, int) and status >= 500) or code in {"SlowDown", "RequestTimeout"}:
            return StorageUnavailableError(
                f"{where}: {what}: the store is failing ({code}); jobs wait and retry"
            )
        return StorageError(f"{where}: {what}: {code or exc}")

    @staticmethod
    def _missing(exc: ClientError) -> bool:
        return _code(exc) in MISSING | {"NoSuchBucket"}

    @staticmethod
    def _info(key: str, etag: str, size: int, modified: Any) -> ObjectInfo:
        """One version formula for listings and lookups alike (a version id would be in
        one and not the other, and start the same object twice)."""
        stamp = modified.timestamp()
        return ObjectInfo(key, int(size), f"{etag.strip(chr(34))}@{int(stamp)}", stamp)

    # -- the interface ----------------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not prefix:
            with self._calls("list the buckets"):
                buckets = [b["Name"] for b in self.client.list_buckets().get("Buckets", [])]
            for bucket in sorted(buckets):
                yield from self.list(bucket)
            return
        bucket, _, folder = prefix.partition("/")
        paginator = self.client.get_paginator("list_objects_v2")
        with self._calls(f"list {prefix!r}"):
            pages = list(paginator.paginate(Bucket=bucket, Prefix=f"{folder}/" if folder else ""))
        for page in pages:
            for obj in page.get("Contents", []):
                key = f"{bucket}/{obj['Key']}"
                if obj["Key"].endswith("/"):
                    continue  # a folder marker
                try:
                    check_key(key)
                except InvalidKeyError:
                    continue
                yield self._info(key, obj["ETag"], obj["Size"], obj["LastModified"])

    def stat(self, key: str) -> ObjectInfo | None:
        bucket, rest = self._split(key)
        try:
            with self._calls(f"look at {key!r}"):
                head = self.client.head_object(Bucket=bucket, Key=rest)
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and self._missing(exc.__cause__):
                return None
            raise
        return self._info(key, head["ETag"], head["ContentLength"], head["LastModified"])

    def open(self, key: str) -> BinaryIO:
        bucket, rest = self._split(key)
        try:
            with self._calls(f"read {key!r}"):
                body = self.client.get_object(Bucket=bucket, Key=rest)["Body"]
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and self._missing(exc.__cause__):
                raise NotFoundError(f"{self.name}: no object {key!r}") from None
            raise
        return cast(BinaryIO, io.BufferedReader(_Body(body), 1 << 20))

    def put(self, key: str, source: BinaryIO) -> ObjectInfo:
        bucket, rest = self._split(key)
        start = source.tell() if source.seekable() else None
        head = _read(source, SMALL)
        with self._calls(f"write {key!r}"):
            if len(head) < SMALL:  # all of it: one request, no transfer threads to start
                self.client.put_object(Bucket=bucket, Key=rest, Body=head)
            else:  # in parts, read as they go
                if start is not None:
                    source.seek(start)
                whole = source if start is not None else io.BufferedReader(_Rejoined(head, source))
                self.client.upload_fileobj(whole, bucket, rest, Config=self.transfer)
        return self._written(key)

    def put_file(self, key: str, path: Path, move: bool = False) -> ObjectInfo:
        bucket, rest = self._split(key)
        with self._calls(f"write {key!r}"):
            if path.stat().st_size < PART:  # one request: no transfer threads to start
                with path.open("rb") as source:
                    self.client.put_object(Bucket=bucket, Key=rest, Body=source)
            else:
                self.client.upload_file(str(path), bucket, rest, Config=self.transfer)
        return self._written(key)

    def _written(self, key: str) -> ObjectInfo:
        info = self.stat(key)
        if info is None:
            raise StorageError(f"{self.name}: wrote {key!r} but cannot find it")
        return info

    def get(self, key: str, dest: Path) -> ObjectInfo:
        info = self.stat(key)
        if info is None:
            raise NotFoundError(f"{self.name}: no object {key!r}")
        bucket, rest = self._split(key)
        try:
            with self._calls(f"read {key!r}"):
                self.client.download_file(bucket, rest, str(dest), Config=self.transfer)
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and self._missing(exc.__cause__):
                raise NotFoundError(f"{self.name}: no object {key!r}") from None
            raise
        return info

    def delete(self, key: str) -> None:
        bucket, rest = self._split(key)
        with self._calls(f"delete {key!r}"):
            self.client.delete_object(Bucket=bucket, Key=rest)

    def ensure_folder(self, path: str) -> None:
        bucket = check_key(path.strip("/")).partition("/")[0]
        try:
            with self._calls(f"look at bucket {bucket!r}"):
                self.client.head_bucket(Bucket=bucket)
            return
        except StorageError as exc:
            if not (isinstance(exc.__cause__, ClientError) and self._missing(exc.__cause__)):
                raise
        if not BUCKET_NAME.fullmatch(bucket) or ".." in bucket:
            raise DefinitionError(
                f"{self.name}: {bucket!r} cannot be a bucket: S3 bucket names are 3 to 63 "
                "lowercase letters, digits, '.' and '-', starting and ending with a letter or "
                "digit"
            )
        try:
            with self._calls(f"create bucket {bucket!r}"):
                self.client.create_bucket(Bucket=bucket)
        except StorageError as exc:
            code = _code(exc.__cause__) if isinstance(exc.__cause__, ClientError) else ""
            if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise

    def folders(self) -> builtins.list[str]:
        with self._calls("list the buckets"):
            return sorted(b["Name"] for b in self.client.list_buckets().get("Buckets", []))

    def remove_folder(self, path: str) -> int:
        try:
            gone = super().remove_folder(path)
        except StorageError as exc:
            if isinstance(exc.__cause__, ClientError) and self._missing(exc.__cause__):
                return 0  # no such bucket
            raise
        bucket = path.strip("/")
        if "/" not in bucket:
            self._empty(bucket)
            try:
                with self._calls(f"delete bucket {bucket!r}"):
                    self.client.delete_bucket(Bucket=bucket)
            except StorageError as exc:
                cause = exc.__cause__
                if isinstance(cause, ClientError) and self._missing(cause):
                    return gone
                if isinstance(cause, ClientError) and _code(cause) == "BucketNotEmpty":
                    raise ConflictError(
                        f"{self.name}: objects were written to the bucket {bucket!r} while it "
                        "was being deleted; delete it again"
                    ) from None
                raise
        return gone

    def _empty(self, bucket: str) -> None:
        """Delete what the listing leaves in `bucket`: folder markers, keys ondrop does not
        take."""
        paginator = self.client.get_paginator("list_objects_v2")
        with self._calls(f"empty bucket {bucket!r}"):
            for page in paginator.paginate(Bucket=bucket):
                keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
                if not keys:
                    continue
                # a page holds at most 1,000: what one delete_objects takes
                answer = self.client.delete_objects(
                    Bucket=bucket, Delete={"Objects": keys, "Quiet": True}
                )
                if errors := answer.get("Errors"):
                    first = errors[0]
                    raise StorageError(
                        f"{self.name}: {len(errors)} object(s) of bucket {bucket!r} could not "
                        f"be deleted, {first.get('Key')!r} first: {first.get('Message')}"
                    )

    def presign(self, key: str, method: str, expires: int, content_type: str = "") -> str:
        """A URL that lets whoever holds it GET or PUT the object at `key` for `expires`
        seconds, with no other credentials."""
        bucket, rest = self._split(key)
        params: dict[str, Any] = {"Bucket": bucket, "Key": rest}
        if content_type:
            params["ResponseContentType" if method == "GET" else "ContentType"] = content_type
        operation = "get_object" if method == "GET" else "put_object"
        with self._calls(f"presign {key!r}"):
            return str(
                self.client.generate_presigned_url(operation, Params=params, ExpiresIn=expires)
            )

    def close(self) -> None:
        self.client.close()


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _read(source: BinaryIO, size: int) -> bytes:
    """Up to `size` bytes of `source`: fewer only at its end (a raw stream may give less
    in one read)."""
    parts, got = [], 0
    while got < size:
        part = source.read(size - got)
        if not part:
            break
        parts.append(part)
        got += len(part)
    return b"".join(parts)


class _Rejoined(io.RawIOBase):
    """The bytes already read from a stream that cannot seek (`head`), then the rest of
    it: read through a BufferedReader, which fills what the uploader asks for."""

    def __init__(self, head: bytes, rest: BinaryIO) -> None:
        self._head, self._rest = memoryview(head), rest

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self._head:
            n = min(len(buffer), len(self._head))
            buffer[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        data = self._rest.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)
