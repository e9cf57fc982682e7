"""IO managers that store one JSON manifest per asset partition.

Partitioned assets run as single-run backfills: one step receives many
partition keys. Asset functions therefore always return, and always receive,
a `dict[partition_key, manifest]`, whether the run covers one partition or
twenty. Each partition is written on its own, atomically; nothing is pickled.

Two places, one behaviour, chosen per environment in `orchestration/storage.py`:

- `JsonManifestIOManager`: `$STUDIO_HOME/manifests/<asset>/<partition>.json`
  (temp file + rename).
- `S3JsonManifestIOManager`: `s3://<bucket>/<prefix>/manifests/<asset>/<partition>.json`
  (one PUT of the complete object).

The file above is the *current* manifest, overwritten by each materialization.
Every manifest written is also kept as a *version*: the same JSON, content-
addressed by its sha256 beside the artifacts (`manifest-versions/ab/<sha256>.json`
under the artifact store's root or bucket prefix, never deleted), and each
materialization's metadata `manifest_versions` maps its partition keys to the
version written. `studio history` lists them; `studio pin` writes one back as
the current manifest (`restore_version`; docs/operations.md).
"""

from __future__ import annotations

import abc
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_aws.s3 import S3Resource
from pydantic import Field, PrivateAttr

from model_adapters.media.files import atomic_write
from resources.artifact_store import entry_key, sha256_hex
from resources.manifests import Manifest, manifest_from_json
from resources.s3 import S3Location, S3Wiring, read_object
from resources.settings import artifacts_root, manifests_root

# Where each manifest version is kept (an entry namespace of the artifact store's layout), and
# the materialization metadata naming the version written for each partition of the output.
MANIFEST_VERSIONS_NAMESPACE = "manifest-versions"
MANIFEST_VERSIONS_METADATA_KEY = "manifest_versions"


def manifest_version_id(text: str | bytes) -> str:
    """A manifest version's id: the sha256 of its JSON exactly as stored."""
    return sha256_hex(text.encode("utf-8") if isinstance(text, str) else text)


_SAFE_KEY = re.compile(r"^[a-z0-9][a-z0-9.-]{0,200}$")


def _check_partition_key(partition_key: str) -> str:
    # fullmatch: `$` in `match` would accept a trailing newline.
    if not isinstance(partition_key, str) or not _SAFE_KEY.fullmatch(partition_key) or ".." in partition_key:
        raise ValueError(f"partition key {partition_key!r} is not safe to use as a file name")
    return partition_key


_SAFE_ASSET_SEGMENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]{0,200}")


def _check_asset_key(asset_key: dg.AssetKey) -> list[str]:
    """Asset key segments become folder names: Python identifiers-like words only."""
    for segment in asset_key.path:
        if not _SAFE_ASSET_SEGMENT.fullmatch(segment):
            raise ValueError(f"asset key {asset_key.to_user_string()!r}: segment {segment!r} is not safe as a folder name")
    return list(asset_key.path)


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, text.encode("utf-8"))


class BaseManifestIOManager(dg.ConfigurableIOManager, abc.ABC):
    """dict[partition_key, manifest] in and out; where the JSON lives is the subclass's business."""

    @abc.abstractmethod
    def _write(self, asset_key: dg.AssetKey, partition_key: str, text: str) -> None: ...

    @abc.abstractmethod
    def _read(self, asset_key: dg.AssetKey, partition_key: str) -> bytes:
        """The stored JSON; FileNotFoundError if there is none."""

    @abc.abstractmethod
    def _location_metadata(self, asset_key: dg.AssetKey, partition_key: str) -> dg.MetadataValue: ...

    @abc.abstractmethod
    def location(self, asset_key: dg.AssetKey, partition_key: str) -> str:
        """Where one partition's manifest lives, for messages."""

    @abc.abstractmethod
    def _write_version(self, version: str, text: str) -> None:
        """Keep one manifest version under its id (equal JSON, equal place: rewriting is harmless)."""

    @abc.abstractmethod
    def _read_version(self, version: str) -> bytes | None:
        """A kept version's JSON, or None if there is none."""

    @abc.abstractmethod
    def version_location(self, version: str) -> str:
        """Where one manifest version is kept, for messages."""

    def keep_version(self, text: str) -> str:
        """Keep this manifest JSON as a version; its id."""
        version = manifest_version_id(text)
        self._write_version(version, text)
        return version

    def version_bytes(self, version: str) -> bytes:
        """A kept version's JSON, checked against its id; FileNotFoundError if it is not kept."""
        entry_key(MANIFEST_VERSIONS_NAMESPACE, version)  # ValueError unless a sha256 hex digest: nothing escapes the store
        data = self._read_version(version)
        if data is None:
            raise FileNotFoundError(f"no manifest version {version} at {self.version_location(version)}")
        if manifest_version_id(data) != version:
            raise ValueError(f"manifest version at {self.version_location(version)} does not match its sha256 {version}")
        return data

    def load_version(self, version: str) -> Manifest:
        return manifest_from_json(self.version_bytes(version))

    def current_version(self, asset_key: dg.AssetKey, partition_key: str) -> str:
        """The version id of the current manifest; FileNotFoundError if there is none."""
        return manifest_version_id(self._read(asset_key, partition_key))

    def restore_version(self, asset_key: dg.AssetKey, partition_key: str, version: str) -> Manifest:
        """Write a kept version back as the current manifest, byte for byte (so its id is the same)."""
        data = self.version_bytes(version)
        manifest = manifest_from_json(data)
        self._write(asset_key, partition_key, data.decode("utf-8"))
        return manifest

    def handle_output(self, context: dg.OutputContext, obj: Mapping[str, Manifest]) -> None:
        if obj is None:
            return
        expected = set(context.asset_partition_keys) if context.has_asset_partitions else set()
        if not isinstance(obj, Mapping) or set(obj) != expected:
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()} must return one manifest per partition key "
                f"{sorted(expected)}; got {sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__}"
            )
        versions = {}
        for partition_key, manifest in obj.items():
            text = manifest.model_dump_json(indent=2)
            # The version first: a current manifest never names a version that is not kept.
            versions[partition_key] = self.keep_version(text)
            self._write(context.asset_key, partition_key, text)
        # One map for the output (an IO manager's metadata is the same on every partition's
        # materialization): each partition's version is looked up by its key.
        metadata: dict[str, Any] = {MANIFEST_VERSIONS_METADATA_KEY: dg.MetadataValue.json(versions)} if versions else {}
        if len(obj) == 1:
            metadata["manifest"] = self._location_metadata(context.asset_key, next(iter(obj)))
        if metadata:
            context.add_output_metadata(metadata)

    def load_input(self, context: dg.InputContext) -> dict[str, Manifest]:
        asset_key = context.asset_key
        manifests = {}
        for partition_key in context.asset_partition_keys:
            try:
                manifests[partition_key] = manifest_from_json(self._read(asset_key, partition_key))
            except FileNotFoundError:
                raise dg.DagsterInvariantViolationError(
                    f"no manifest for {asset_key.to_user_string()} partition {partition_key!r} at "
                    f"{self.location(asset_key, partition_key)}; materialize it first"
                ) from None
        return manifests

    def load_manifest(self, asset_key: dg.AssetKey, partition_key: str) -> Manifest:
        """Read one stored manifest outside a run (demo summary, tests); FileNotFoundError if missing."""
        return manifest_from_json(self._read(asset_key, partition_key))


class JsonManifestIOManager(BaseManifestIOManager):
    """Manifests under `root` (default `$STUDIO_HOME/manifests`), one file per partition."""

    root: str = ""
    # Where manifest versions are kept: the artifact store's root (default `$STUDIO_HOME/artifacts`).
    artifacts_root: str = ""

    def _root(self) -> Path:
        return Path(self.root).resolve() if self.root else manifests_root()

    def _version_path(self, version: str) -> Path:
        root = Path(self.artifacts_root).resolve() if self.artifacts_root else artifacts_root()
        return root / entry_key(MANIFEST_VERSIONS_NAMESPACE, version)

    def _write_version(self, version: str, text: str) -> None:
        path = self._version_path(version)
        if not path.is_file():  # content-addressed: there already means the same JSON
            _atomic_write(path, text)

    def _read_version(self, version: str) -> bytes | None:
        try:
            return self._version_path(version).read_bytes()
        except FileNotFoundError:
            return None

    def version_location(self, version: str) -> str:
        return str(self._version_path(version))

    def _path(self, asset_key: dg.AssetKey, partition_key: str) -> Path:
        return self._root().joinpath(*_check_asset_key(asset_key), f"{_check_partition_key(partition_key)}.json")

    def _write(self, asset_key: dg.AssetKey, partition_key: str, text: str) -> None:
        _atomic_write(self._path(asset_key, partition_key), text)

    def _read(self, asset_key: dg.AssetKey, partition_key: str) -> bytes:
        return self._path(asset_key, partition_key).read_bytes()

    def _location_metadata(self, asset_key: dg.AssetKey, partition_key: str) -> dg.MetadataValue:
        return dg.MetadataValue.path(str(self._path(asset_key, partition_key)))

    def location(self, asset_key: dg.AssetKey, partition_key: str) -> str:
        return str(self._path(asset_key, partition_key))


class S3JsonManifestIOManager(S3Wiring, BaseManifestIOManager):
    """Manifests as JSON objects at `s3://<bucket>/<prefix>/manifests/<asset>/<partition>.json`."""

    s3: S3Resource
    bucket: str = Field(description="The bucket (STUDIO_S3_BUCKET).")
    prefix: str = Field(default="", description="Key prefix inside the bucket (STUDIO_S3_PREFIX).")

    _location: S3Location | None = PrivateAttr(default=None)
    _client: Any = PrivateAttr(default=None)  # S3Wiring makes both on first use

    def key(self, asset_key: dg.AssetKey, partition_key: str) -> str:
        return self.s3_location.key("manifests", *_check_asset_key(asset_key), f"{_check_partition_key(partition_key)}.json")

    def _write(self, asset_key: dg.AssetKey, partition_key: str, text: str) -> None:
        self.client.put_object(
            Bucket=self.s3_location.bucket,
            Key=self.key(asset_key, partition_key),
            Body=text.encode("utf-8"),
            ContentType="application/json",
        )

    def _read(self, asset_key: dg.AssetKey, partition_key: str) -> bytes:
        key = self.key(asset_key, partition_key)
        data = read_object(self.client, self.s3_location.bucket, key)
        if data is None:
            raise FileNotFoundError(f"no manifest at {self.s3_location.uri(key)}")
        return data

    def _location_metadata(self, asset_key: dg.AssetKey, partition_key: str) -> dg.MetadataValue:
        return dg.MetadataValue.url(self.location(asset_key, partition_key))

    def _version_key(self, version: str) -> str:
        # The artifact store's layout under the same bucket and prefix (S3ArtifactStore.write_entry).
        return self.s3_location.key(entry_key(MANIFEST_VERSIONS_NAMESPACE, version))

    def _write_version(self, version: str, text: str) -> None:
        self.client.put_object(
            Bucket=self.s3_location.bucket, Key=self._version_key(version), Body=text.encode("utf-8"), ContentType="application/json"
        )

    def _read_version(self, version: str) -> bytes | None:
        return read_object(self.client, self.s3_location.bucket, self._version_key(version))

    def version_location(self, version: str) -> str:
        return self.s3_location.uri(self._version_key(version))

    def location(self, asset_key: dg.AssetKey, partition_key: str) -> str:
        return self.s3_location.uri(self.key(asset_key, partition_key))
