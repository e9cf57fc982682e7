"""The artifact store: bytes, content-addressed by sha256, written atomically.

Two stores behind one interface (`put`, `get`), chosen per environment in
`orchestration/storage.py` under the resource key `artifacts`:

- `FilesystemArtifactStore` (also importable as `ArtifactStore`): a file is
  written to a temporary name in its final folder and renamed into place.
- `S3ArtifactStore`: one PUT of the complete object (never a multipart
  upload), so an object is either absent or whole under its key.

Either way a crash never leaves a half-written artifact under a name a
manifest could point to, and equal bytes land on the same key, so a re-run
that produces the same output writes nothing new (S3: HEAD before PUT).
"""

from __future__ import annotations

import abc
import base64
import hashlib
import os
import re
from pathlib import Path, PurePosixPath
from typing import Any

import dagster as dg
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from model_adapters.media.files import atomic_write
from resources.manifests import ArtifactRef
from resources.s3 import S3Location, S3Wiring, is_not_found, read_object
from resources.settings import artifacts_root

_EXTENSION = re.compile(r"^\.[a-z0-9]{1,8}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def relative_key(sha256: str, extension: str) -> str:
    """`sha256/ab/<sha256>.<ext>`: the only shape of key either store writes or reads."""
    if not _SHA256.fullmatch(sha256):
        raise ValueError(f"not a sha256 hex digest: {sha256!r}")
    if not _EXTENSION.fullmatch(extension):
        raise ValueError(f"artifact extension must look like '.png', got {extension!r}")
    return f"sha256/{sha256[:2]}/{sha256}{extension}"


def entry_key(namespace: str, key: str) -> str:
    """`<namespace>/ab/<key>.json` for small named JSON records kept beside the
    artifacts (the router's response cache): hex keys only, so nothing escapes."""
    if namespace not in ENTRY_NAMESPACES:
        raise ValueError(f"unknown entry namespace {namespace!r}")
    if not _SHA256.fullmatch(key):
        raise ValueError(f"entry keys are sha256 hex digests, got {key!r}")
    return f"{namespace}/{key[:2]}/{key}.json"


# The router's response cache; the roll-up's drawn contact sheets, by what they show; every
# version of every stage manifest, by its own sha256 (resources/io_manager.py: history and pins).
ENTRY_NAMESPACES = ("cache", "contact-sheets", "manifest-versions", "transcripts")


def _verified(ref: ArtifactRef, data: bytes) -> bytes:
    if sha256_hex(data) != ref.sha256:
        raise ValueError(f"artifact {ref.uri} does not match its sha256 {ref.sha256}")
    return data


# Bare on purpose (hence the ignore): ConfigurableResource[X] would make pydantic build a new base class at run time.
class BaseArtifactStore(dg.ConfigurableResource, abc.ABC):  # type: ignore[type-arg]
    """What the assets use: `put` bytes, get an `ArtifactRef`; `get` the bytes back, verified."""

    @abc.abstractmethod
    def put(self, data: bytes, *, extension: str, media_type: str) -> ArtifactRef: ...

    @abc.abstractmethod
    def get(self, ref: ArtifactRef) -> bytes:
        """The bytes behind `ref`; ValueError if they do not match its sha256 or it is not in this store."""

    def holds(self, ref: ArtifactRef) -> bool:
        """Whether the store has `ref`'s object at its size (without reading it): a stored
        manifest is reused only while its files are there."""
        try:
            self.get(ref)
        except (FileNotFoundError, ValueError):
            return False
        return True

    def read_range(self, ref: ArtifactRef, start: int, stop: int) -> bytes:
        """Bytes `[start, stop)` of `ref`'s object, for HTTP range requests (the review app's
        gallery: a video seeks without the whole file being read). A part cannot be checked
        against the sha256; the stores below check the object's size instead. This default
        reads the whole object (verified) and slices it."""
        return self.get(ref)[start:stop]

    @abc.abstractmethod
    def write_entry(self, namespace: str, key: str, data: bytes) -> None:
        """Write a small named record (atomically / in one PUT) on the same storage as the artifacts."""

    @abc.abstractmethod
    def read_entry(self, namespace: str, key: str) -> bytes | None:
        """A record written by `write_entry`, or None if there is none."""


class FilesystemArtifactStore(BaseArtifactStore):
    """Filesystem artifact store; `root` defaults to `$STUDIO_HOME/artifacts`."""

    root: str = ""
    _root: Path | None = PrivateAttr(default=None)

    @property
    def root_path(self) -> Path:
        if self._root is None:
            self._root = Path(self.root).resolve() if self.root else artifacts_root()
        return self._root

    def _relative_key(self, sha256: str, extension: str) -> str:
        return relative_key(sha256, extension)

    def put(self, data: bytes, *, extension: str, media_type: str) -> ArtifactRef:
        digest = sha256_hex(data)
        path = self.root_path / relative_key(digest, extension)
        if not (path.is_file() and path.stat().st_size == len(data)):
            path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write(path, data, durable=True)
        return ArtifactRef(uri=path.as_uri(), sha256=digest, media_type=media_type, size_bytes=len(data))

    def path_for(self, ref: ArtifactRef) -> Path:
        """The local file behind a reference, refusing anything outside the store."""
        extension = Path(ref.uri).suffix
        path = self.root_path / relative_key(ref.sha256, extension)
        if path.as_uri() != ref.uri:
            raise ValueError(f"artifact URI {ref.uri!r} is not inside the store at {self.root_path}")
        return path

    def holds(self, ref: ArtifactRef) -> bool:
        try:
            path = self.path_for(ref)
        except ValueError:
            return False
        return path.is_file() and path.stat().st_size == ref.size_bytes

    def get(self, ref: ArtifactRef) -> bytes:
        path = self.path_for(ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"artifact {ref.uri} is missing from the store") from None
        return _verified(ref, data)

    def read_range(self, ref: ArtifactRef, start: int, stop: int) -> bytes:
        path = self.path_for(ref)
        try:
            with path.open("rb") as file:
                if os.fstat(file.fileno()).st_size != ref.size_bytes:
                    raise ValueError(f"artifact {ref.uri} is not {ref.size_bytes} bytes long")
                file.seek(start)
                return file.read(max(0, stop - start))
        except FileNotFoundError:
            raise FileNotFoundError(f"artifact {ref.uri} is missing from the store") from None

    def write_entry(self, namespace: str, key: str, data: bytes) -> None:
        path = self.root_path / entry_key(namespace, key)
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write(path, data)

    def read_entry(self, namespace: str, key: str) -> bytes | None:
        try:
            return (self.root_path / entry_key(namespace, key)).read_bytes()
        except FileNotFoundError:
            return None


# The name the assets import; the filesystem store is the embedded default.
ArtifactStore = FilesystemArtifactStore


class S3ArtifactStore(S3Wiring, BaseArtifactStore):
    """Artifacts at `s3://<bucket>/<prefix>/sha256/ab/<sha256>.<ext>`, one complete PUT each."""

    s3: S3Resource
    bucket: str = Field(description="The bucket (STUDIO_S3_BUCKET).")
    prefix: str = Field(default="", description="Key prefix inside the bucket (STUDIO_S3_PREFIX).")

    _location: S3Location | None = PrivateAttr(default=None)
    _client: Any = PrivateAttr(default=None)  # S3Wiring makes both on first use

    def _exists_with_size(self, key: str, size: int) -> bool:
        try:
            head = self.client.head_object(Bucket=self.s3_location.bucket, Key=key)
        except ClientError as error:
            if is_not_found(error):
                return False
            raise
        return head.get("ContentLength") == size

    def put(self, data: bytes, *, extension: str, media_type: str) -> ArtifactRef:
        digest = sha256_hex(data)
        key = self.s3_location.key(relative_key(digest, extension))
        if not self._exists_with_size(key, len(data)):
            # A single PutObject: S3 makes the object visible only once it is complete, and
            # checks the body against ChecksumSHA256, so a torn upload is refused, not stored.
            self.client.put_object(
                Bucket=self.s3_location.bucket,
                Key=key,
                Body=data,
                ContentType=media_type,
                ChecksumSHA256=base64.b64encode(bytes.fromhex(digest)).decode("ascii"),
                Metadata={"sha256": digest},
            )
        return ArtifactRef(uri=self.s3_location.uri(key), sha256=digest, media_type=media_type, size_bytes=len(data))

    def key_for(self, ref: ArtifactRef) -> str:
        """The object key behind a reference, refusing anything outside this bucket and prefix."""
        key = self.s3_location.key(relative_key(ref.sha256, PurePosixPath(ref.uri).suffix))
        if self.s3_location.uri(key) != ref.uri:
            raise ValueError(f"artifact URI {ref.uri!r} is not inside the store at {self.s3_location}")
        return key

    def holds(self, ref: ArtifactRef) -> bool:
        try:
            key = self.key_for(ref)
        except ValueError:
            return False
        return self._exists_with_size(key, ref.size_bytes)

    def get(self, ref: ArtifactRef) -> bytes:
        data = read_object(self.client, self.s3_location.bucket, self.key_for(ref))
        if data is None:
            raise FileNotFoundError(f"artifact {ref.uri} is missing from the store")
        return _verified(ref, data)

    def read_range(self, ref: ArtifactRef, start: int, stop: int) -> bytes:
        if stop <= start:
            return b""
        try:
            response = self.client.get_object(Bucket=self.s3_location.bucket, Key=self.key_for(ref), Range=f"bytes={start}-{stop - 1}")
        except ClientError as error:
            if is_not_found(error):
                raise FileNotFoundError(f"artifact {ref.uri} is missing from the store") from None
            raise
        # "bytes 0-99/1234": the object's whole size follows the slash.
        total = str(response.get("ContentRange", "")).rpartition("/")[2]
        if total.isdigit() and int(total) != ref.size_bytes:
            raise ValueError(f"artifact {ref.uri} is not {ref.size_bytes} bytes long")
        with response["Body"] as body:
            return body.read()

    def write_entry(self, namespace: str, key: str, data: bytes) -> None:
        object_key = self.s3_location.key(entry_key(namespace, key))
        self.client.put_object(Bucket=self.s3_location.bucket, Key=object_key, Body=data, ContentType="application/json")

    def read_entry(self, namespace: str, key: str) -> bytes | None:
        return read_object(self.client, self.s3_location.bucket, self.s3_location.key(entry_key(namespace, key)))
