"""A stage under an S3 prefix: multipart writes, reads that resume after a dropped
connection, botocore's retries with backoff on every call."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator
from contextlib import contextmanager
from typing import BinaryIO

from dbt_project.errors import ConfigError, StageError
from dbt_project.settings import current
from dbt_project.stage.base import Writer, check_key, read_whole

# S3 multipart parts must be >= 5 MiB (but the last); 8 MiB keeps memory small.
PART_SIZE = 8 * 1024 * 1024


def s3_client(max_attempts: int | None = None):
    """An S3 client with exponential backoff and jitter on every call.

    ``max_attempts`` counts every try (``ETL_S3_MAX_ATTEMPTS`` when not given).
    botocore reads AWS_ENDPOINT_URL itself (the moto server in tests).
    """
    import boto3
    from botocore.config import Config

    attempts = max_attempts or current().s3_max_attempts
    return boto3.client(
        "s3",
        config=Config(
            retries={"mode": "standard", "total_max_attempts": attempts},
            connect_timeout=10,
            read_timeout=60,
        ),
    )


class _MultipartWriter:
    """Buffers one part at a time; small files go up in a single PUT on close."""

    def __init__(self, client, bucket: str, key: str):
        self.client, self.bucket, self.key = client, bucket, key
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []

    def write(self, data: bytes) -> int:
        self.buffer += data
        while len(self.buffer) >= PART_SIZE:
            self._send(bytes(self.buffer[:PART_SIZE]))
            del self.buffer[:PART_SIZE]
        return len(data)

    def _send(self, body: bytes) -> None:
        if self.upload_id is None:
            self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)[
                "UploadId"
            ]
        number = len(self.parts) + 1
        etag = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=body
        )["ETag"]
        self.parts.append({"ETag": etag, "PartNumber": number})

    def close(self) -> None:
        if self.upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
            return
        if self.buffer:
            self._send(bytes(self.buffer))
            self.buffer.clear()
        self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=self.key,
            UploadId=self.upload_id,
            MultipartUpload={"Parts": self.parts},
        )

    def abort(self) -> None:
        if self.upload_id is not None:
            # Best effort: the bucket's lifecycle rule aborts any leftover upload too.
            with contextlib.suppress(Exception):
                self.client.abort_multipart_upload(
                    Bucket=self.bucket, Key=self.key, UploadId=self.upload_id
                )


class _ResumingBody(io.RawIOBase):
    """A streaming S3 body that resumes with a Range request after a dropped connection."""

    def __init__(self, client, bucket: str, key: str, max_resumes: int = 5):
        self.client, self.bucket, self.key = client, bucket, key
        self.position = 0
        self.resumes_left = max_resumes
        self.body = self._open()

    def _open(self):
        kwargs = {"Bucket": self.bucket, "Key": self.key}
        if self.position:
            kwargs["Range"] = f"bytes={self.position}-"
        return self.client.get_object(**kwargs)["Body"]

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        from botocore.exceptions import ConnectionError as BotoConnectionError
        from botocore.exceptions import IncompleteReadError, ResponseStreamingError
        from urllib3.exceptions import ProtocolError, ReadTimeoutError

        while True:
            try:
                data = self.body.read(len(buffer))
                break
            except (
                # botocore wraps a connection dropped mid-body in ResponseStreamingError,
                # and reports a body cut short at a clean close as IncompleteReadError.
                ResponseStreamingError,
                IncompleteReadError,
                BotoConnectionError,
                ProtocolError,
                ReadTimeoutError,
                ConnectionError,
            ):
                if self.resumes_left <= 0:
                    raise
                self.resumes_left -= 1
                self.body = self._open()
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)

    def close(self) -> None:
        try:
            self.body.close()
        finally:
            super().close()


class S3Stage:
    def __init__(self, bucket: str, prefix: str = "", client=None):
        if not bucket:
            raise ConfigError("the S3 stage needs a bucket: s3://bucket[/prefix]")
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client or s3_client()
        self.uri = f"s3://{bucket}/{self.prefix}"

    def _key(self, key: str) -> str:
        return self.prefix + check_key(key)

    def describe(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    @contextmanager
    def writer(self, key: str) -> Iterator[Writer]:
        writer = _MultipartWriter(self.client, self.bucket, self._key(key))
        try:
            yield writer
            writer.close()
        except BaseException:
            writer.abort()
            raise

    @contextmanager
    def reader(self, key: str) -> Iterator[BinaryIO]:
        from botocore.exceptions import ClientError

        try:
            raw = _ResumingBody(self.client, self.bucket, self._key(key))
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("NoSuchKey", "404"):
                raise StageError(
                    f"stage file {self.describe(key)} does not exist; re-run the extract"
                ) from exc
            raise
        with io.BufferedReader(raw, buffer_size=1024 * 1024) as handle:
            yield handle

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=data, **extra)

    def get_bytes(self, key: str, *, max_bytes: int | None = None) -> bytes:
        with self.reader(key) as handle:
            return read_whole(handle, self.describe(key), max_bytes)

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
            return True
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    def list(self, prefix: str) -> list[str]:
        keys: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix):
            keys.extend(item["Key"][len(self.prefix) :] for item in page.get("Contents", []))
        return sorted(keys)
