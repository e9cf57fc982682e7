"""An IO manager that stores one JSON manifest per asset partition.

Partitioned assets run as single-run backfills: one step receives many
partition keys. Asset functions therefore always return, and always receive,
a `dict[partition_key, manifest]`, whether the run covers one partition or
twenty. Each partition is written to its own file atomically; nothing is
pickled.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping
from pathlib import Path

import dagster as dg

from resources.manifests import manifest_from_json
from resources.settings import manifests_root

_SAFE_KEY = re.compile(r"^[a-z0-9][a-z0-9.-]{0,200}$")


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as tmp:
            tmp.write(text)
        os.replace(tmp_name, path)
    except BaseException:
        Path(tmp_name).unlink(missing_ok=True)
        raise


class JsonManifestIOManager(dg.ConfigurableIOManager):
    """Manifests under `root` (default `$STUDIO_HOME/manifests`), one file per partition."""

    root: str = ""

    def _root(self) -> Path:
        return Path(self.root).resolve() if self.root else manifests_root()

    def _path(self, asset_key: dg.AssetKey, partition_key: str) -> Path:
        if not _SAFE_KEY.match(partition_key) or ".." in partition_key:
            raise ValueError(f"partition key {partition_key!r} is not safe to use as a file name")
        return self._root().joinpath(*asset_key.path, f"{partition_key}.json")

    def handle_output(self, context: dg.OutputContext, obj: Mapping[str, object]) -> None:
        if obj is None:
            return
        expected = set(context.asset_partition_keys) if context.has_asset_partitions else set()
        if not isinstance(obj, Mapping) or set(obj) != expected:
            raise dg.DagsterInvariantViolationError(
                f"{context.asset_key.to_user_string()} must return one manifest per partition key "
                f"{sorted(expected)}; got {sorted(obj) if isinstance(obj, Mapping) else type(obj).__name__}"
            )
        for partition_key, manifest in obj.items():
            _atomic_write(self._path(context.asset_key, partition_key), manifest.model_dump_json(indent=2))
        if len(obj) == 1:
            context.add_output_metadata({"manifest": dg.MetadataValue.path(str(self._path(context.asset_key, next(iter(obj)))))})

    def load_input(self, context: dg.InputContext) -> dict[str, object]:
        asset_key = context.asset_key
        manifests = {}
        for partition_key in context.asset_partition_keys:
            path = self._path(asset_key, partition_key)
            try:
                manifests[partition_key] = manifest_from_json(path.read_bytes())
            except FileNotFoundError:
                raise dg.DagsterInvariantViolationError(
                    f"no manifest for {asset_key.to_user_string()} partition {partition_key!r} at {path}; "
                    "materialize it first"
                ) from None
        return manifests

    def load_manifest(self, asset_key: dg.AssetKey, partition_key: str):
        """Read one stored manifest outside a run (demo summary, tests)."""
        return manifest_from_json(self._path(asset_key, partition_key).read_bytes())
