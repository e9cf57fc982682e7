"""The artifact store: bytes, content-addressed by sha256, written atomically.

A file is written to a temporary name in its final folder and renamed into
place, so a crash never leaves a half-written artifact under a name a
manifest could point to. Equal bytes land on the same key, so a re-run that
produces the same output writes nothing new.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import dagster as dg
from pydantic import PrivateAttr

from resources.manifests import ArtifactRef
from resources.settings import artifacts_root

_EXTENSION = re.compile(r"^\.[a-z0-9]{1,8}$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class ArtifactStore(dg.ConfigurableResource):
    """Filesystem artifact store; `root` defaults to `$STUDIO_HOME/artifacts`."""

    root: str = ""
    _root: Path | None = PrivateAttr(default=None)

    @property
    def root_path(self) -> Path:
        if self._root is None:
            self._root = Path(self.root).resolve() if self.root else artifacts_root()
        return self._root

    def _relative_key(self, sha256: str, extension: str) -> str:
        if not _SHA256.match(sha256):
            raise ValueError(f"not a sha256 hex digest: {sha256!r}")
        if not _EXTENSION.match(extension):
            raise ValueError(f"artifact extension must look like '.png', got {extension!r}")
        return f"sha256/{sha256[:2]}/{sha256}{extension}"

    def put(self, data: bytes, *, extension: str, media_type: str) -> ArtifactRef:
        digest = sha256_hex(data)
        path = self.root_path / self._relative_key(digest, extension)
        if not (path.is_file() and path.stat().st_size == len(data)):
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            try:
                with os.fdopen(fd, "wb") as tmp:
                    tmp.write(data)
                    tmp.flush()
                    os.fsync(tmp.fileno())
                os.replace(tmp_name, path)
            except BaseException:
                Path(tmp_name).unlink(missing_ok=True)
                raise
        return ArtifactRef(uri=path.as_uri(), sha256=digest, media_type=media_type, size_bytes=len(data))

    def path_for(self, ref: ArtifactRef) -> Path:
        """The local file behind a reference, refusing anything outside the store."""
        extension = Path(ref.uri).suffix
        path = self.root_path / self._relative_key(ref.sha256, extension)
        if path.as_uri() != ref.uri:
            raise ValueError(f"artifact URI {ref.uri!r} is not inside the store at {self.root_path}")
        return path

    def get(self, ref: ArtifactRef) -> bytes:
        path = self.path_for(ref)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"artifact {ref.uri} is missing from the store") from None
        if sha256_hex(data) != ref.sha256:
            raise ValueError(f"artifact {ref.uri} does not match its sha256 {ref.sha256}")
        return data
