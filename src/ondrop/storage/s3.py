"""`minio.<id>` and `s3.<id>`: S3-compatible object stores, through boto3.

Keys are `bucket/key`, OSCAR's `bucket/folder/file`. Transfers stream, and large
objects move in parallel multipart parts. An object's version is its ETag with its
modification time, so an upload of the same bytes again is new work too.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, EndpointConnectionError

from ondrop.errors import InvalidKeyError, NotFoundError, StorageError, StorageUnavailableError
from ondrop.storage.base import ObjectInfo, StorageProvider, check_key

PART = 16 * 1024**2  # multipart threshold and part size
MISSING = {"404", "NoSuchKey", "NotFound"}
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

    def _error(self, exc: Exception, what: str) -> StorageError:
        where = f"{self.name} ({self.endpoint or 'AWS'})"
        if isinstance(exc, EndpointConnectionError | BotoCoreError) and not isinstance(
            exc, ClientError
        ):
            return StorageUnavailableError(
                f"{where}: cannot reach the store to {what}: {exc}; "
                "is it running? Jobs wait and retry."
            )
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
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
    def _info(key: str, etag: str, size: int, modified: Any, version_id: str = "") -> ObjectInfo:
        stamp = modified.timestamp()
        version = f"{etag.strip(chr(34))}@{int(stamp)}"
        if version_id and version_id != "null":
            version += f"#{version_id}"
        return ObjectInfo(key, int(size), version, stamp)

    # -- the interface ----------------------------------------------------------------------
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        if not prefix:
            try:
                buckets = [b["Name"] for b in self.client.list_buckets().get("Buckets", [])]
            except (ClientError, BotoCoreError) as exc:
                raise self._error(exc, "list the buckets") from exc
            for bucket in sorted(buckets):
                yield from self.list(bucket)
            return
        bucket, _, folder = prefix.partition("/")
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            for page in paginator.paginate(Bucket=bucket, Prefix=f"{folder}/" if folder else ""):
                for obj in page.get("Contents", []):
                    key = f"{bucket}/{obj['Key']}"
                    if obj["Key"].endswith("/"):
                        continue  # a folder marker
                    try:
                        check_key(key)
                    except InvalidKeyError:
                        continue
                    yield self._info(key, obj["ETag"], obj["Size"], obj["LastModified"])
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"list {prefix!r}") from exc

    def stat(self, key: str) -> ObjectInfo | None:
        bucket, rest = self._split(key)
        try:
            head = self.client.head_object(Bucket=bucket, Key=rest)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code in MISSING or code == "NoSuchBucket":
                return None
            raise self._error(exc, f"look at {key!r}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"look at {key!r}") from exc
        return self._info(
            key,
            head["ETag"],
            head["ContentLength"],
            head["LastModified"],
            head.get("VersionId", ""),
        )

    def open(self, key: str) -> BinaryIO:
        bucket, rest = self._split(key)
        try:
            body = self.client.get_object(Bucket=bucket, Key=rest)["Body"]
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in MISSING:
                raise NotFoundError(f"{self.name}: no object {key!r}") from None
            raise self._error(exc, f"read {key!r}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"read {key!r}") from exc
        return cast(BinaryIO, io.BufferedReader(_Body(body), 1 << 20))

    def put(self, key: str, source: BinaryIO) -> ObjectInfo:
        bucket, rest = self._split(key)
        try:
            self.client.upload_fileobj(source, bucket, rest, Config=self.transfer)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"write {key!r}") from exc
        info = self.stat(key)
        if info is None:
            raise StorageError(f"{self.name}: wrote {key!r} but cannot find it")
        return info

    def put_file(self, key: str, path: Path) -> ObjectInfo:
        bucket, rest = self._split(key)
        try:
            self.client.upload_file(str(path), bucket, rest, Config=self.transfer)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"write {key!r}") from exc
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
            self.client.download_file(bucket, rest, str(dest), Config=self.transfer)
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) in MISSING:
                raise NotFoundError(f"{self.name}: no object {key!r}") from None
            raise self._error(exc, f"read {key!r}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"read {key!r}") from exc
        return info

    def delete(self, key: str) -> None:
        bucket, rest = self._split(key)
        try:
            self.client.delete_object(Bucket=bucket, Key=rest)
        except (ClientError, BotoCoreError) as exc:
            raise self._error(exc, f"delete {key!r}") from exc

    def ensure_folder(self, path: str) -> None:
        bucket = check_key(path.strip("/")).partition("/")[0]
        try:
            self.client.head_bucket(Bucket=bucket)
            return
        except ClientError as exc:
            if str(exc.response.get("Error", {}).get("Code", "")) not in MISSING | {"NoSuchBucket"}:
                raise self._error(exc, f"look at bucket {bucket!r}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"look at bucket {bucket!r}") from exc
        try:
            self.client.create_bucket(Bucket=bucket)
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code not in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
                raise self._error(exc, f"create bucket {bucket!r}") from exc
        except BotoCoreError as exc:
            raise self._error(exc, f"create bucket {bucket!r}") from exc

    def close(self) -> None:
        self.client.close()
