"""S3 locations shared by the S3 artifact store and the S3 manifest IO manager.

One bucket, one prefix; every key is built here from validated parts, so no
key can leave the prefix. `S3Wiring` makes the location and the client, once,
for both resources. Credentials never pass through here: the boto3
client comes from dagster-aws's `S3Resource`, which uses the standard AWS
chain (environment variables, ECS task role, Kubernetes service account).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

from botocore.exceptions import ClientError

if TYPE_CHECKING:  # the stubs are a test-time dependency (mypy-boto3-s3); at run time the client is boto3's
    from dagster_aws.s3 import S3Resource
    from mypy_boto3_s3 import S3Client

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_PREFIX_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=-]{0,127}$")
_KEY_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,200}$")


@dataclass(frozen=True)
class S3Location:
    """A bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str

    @classmethod
    def create(cls, bucket: str, prefix: str) -> S3Location:
        if not _BUCKET.fullmatch(bucket or "") or ".." in bucket:
            raise ValueError(f"not a valid S3 bucket name: {bucket!r}")
        stripped = (prefix or "").strip("/")
        for segment in stripped.split("/") if stripped else ():
            if not _PREFIX_SEGMENT.fullmatch(segment):
                raise ValueError(
                    f"S3 prefix {prefix!r}: segment {segment!r} must start with a letter or digit "
                    "and hold only letters, digits, '.', '_', '=' or '-'"
                )
        return cls(bucket=bucket, prefix=stripped)

    def key(self, *parts: str) -> str:
        """`<prefix>/<parts...>`; each part is one or more already-safe segments."""
        for part in parts:
            for segment in part.split("/"):
                if not _KEY_SEGMENT.fullmatch(segment):
                    raise ValueError(f"unsafe S3 key segment {segment!r} in {part!r}")
        return "/".join([self.prefix, *parts] if self.prefix else parts)

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def __str__(self) -> str:
        return self.uri(self.prefix) if self.prefix else f"s3://{self.bucket}"


class S3Wiring:
    """The location and boto3 client of an S3-backed resource (the artifact store, the manifest IO
    manager), each made once, on first use.

    A mixin: the resource declares the config fields ``s3``, ``bucket``, ``prefix`` and the private
    attributes ``_location``, ``_client`` (pydantic collects those only from the resource's own class).
    """

    if TYPE_CHECKING:
        s3: S3Resource
        bucket: str
        prefix: str
        _location: S3Location | None
        _client: S3Client | None

    @property
    def s3_location(self) -> S3Location:
        if self._location is None:
            self._location = S3Location.create(self.bucket, self.prefix)
        return self._location

    @property
    def client(self) -> S3Client:
        # One boto3 client per resource instance (creating one costs ~0.3 s; clients are thread-safe).
        if self._client is None:
            client: S3Client = self.s3.get_client()  # dagster-aws types its client as Any
            self._client = client
        return self._client


def is_not_found(error: ClientError) -> bool:
    """HEAD answers a bare 404; GET answers NoSuchKey."""
    code = str(error.response.get("Error", {}).get("Code", ""))
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code in {"404", "NoSuchKey", "NotFound"} or status == 404


def read_object(client: S3Client, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or None when there is no such key (other errors propagate)."""
    try:
        response = client.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        if is_not_found(error):
            return None
        raise
    with response["Body"] as body:
        return body.read()
