import hashlib

import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG

from resources.artifact_store import ArtifactStore
from resources.io_manager import JsonManifestIOManager
from resources.manifests import ArtifactRef, ImageArtifact, Provenance, manifest_from_json


def test_put_is_content_addressed_and_atomic(studio_home):
    store = ArtifactStore()
    ref = store.put(b"hello", extension=".png", media_type="image/png")
    digest = hashlib.sha256(b"hello").hexdigest()
    assert ref.sha256 == digest and ref.size_bytes == 5
    path = store.path_for(ref)
    assert path == studio_home / "artifacts" / "sha256" / digest[:2] / f"{digest}.png"
    assert store.put(b"hello", extension=".png", media_type="image/png") == ref
    assert store.get(ref) == b"hello"
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".tmp-")]


def test_get_refuses_tampered_outside_or_missing(studio_home, tmp_path):
    store = ArtifactStore()
    ref = store.put(b"data", extension=".wav", media_type="audio/wav")
    store.path_for(ref).write_bytes(b"evil")
    with pytest.raises(ValueError, match="does not match its sha256"):
        store.get(ref)
    outside = ArtifactRef(uri=(tmp_path / "x.wav").as_uri(), sha256=ref.sha256, media_type="audio/wav", size_bytes=4)
    with pytest.raises(ValueError, match="not inside the store"):
        store.get(outside)
    with pytest.raises(ValueError, match="extension"):
        store.put(b"x", extension="/../../x", media_type="text/plain")
    missing = store.put(b"gone", extension=".txt", media_type="text/plain")
    store.path_for(missing).unlink()
    with pytest.raises(FileNotFoundError, match="missing from the store"):
        store.get(missing)


def _manifest(key: str, store: ArtifactStore) -> ImageArtifact:
    prov = Provenance(task="image", provider="local", adapter_id="a", model="m", model_version="1", request_hash="0" * 64, latency_s=0.1)
    return ImageArtifact(
        partition_key=key,
        artifact=store.put(key.encode(), extension=".png", media_type="image/png"),
        width=2,
        height=2,
        aspect_ratio="1:1",
        provenance=prov,
    )


def _run_range(assets, instance, first, last):
    return dg.materialize(
        assets,
        instance=instance,
        resources={"manifest_io_manager": JsonManifestIOManager(), "artifacts": ArtifactStore()},
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        raise_on_error=False,
    )


def test_io_manager_writes_and_reads_one_json_per_partition(studio_home):
    partitions = dg.DynamicPartitionsDefinition(name="variants")
    seen_downstream: dict[str, object] = {}

    @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), io_manager_key="manifest_io_manager")
    def draft_image(context: dg.AssetExecutionContext, artifacts: ArtifactStore):
        return {k: _manifest(k, artifacts) for k in context.partition_keys}

    @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), io_manager_key="manifest_io_manager")
    def downstream(context: dg.AssetExecutionContext, draft_image):
        seen_downstream.update(draft_image)
        return {k: draft_image[k] for k in context.partition_keys}

    keys = ["c.a", "c.b", "c.c"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("variants", keys)
        assert _run_range([draft_image, downstream], instance, "c.a", "c.c").success
        assert set(seen_downstream) == set(keys)
        # One key: still a dict, the same code path.
        seen_downstream.clear()
        assert _run_range([draft_image, downstream], instance, "c.b", "c.b").success
        assert list(seen_downstream) == ["c.b"]

    io_manager = JsonManifestIOManager()
    for key in keys:
        path = studio_home / "manifests" / "draft_image" / f"{key}.json"
        assert manifest_from_json(path.read_bytes()) == io_manager.load_manifest(dg.AssetKey("draft_image"), key)
        assert io_manager.load_manifest(dg.AssetKey("draft_image"), key).partition_key == key
    with pytest.raises(ValueError, match="not safe"):
        io_manager._path(dg.AssetKey("x"), "../../etc")


def test_io_manager_refuses_output_missing_a_partition(studio_home):
    partitions = dg.DynamicPartitionsDefinition(name="variants")

    @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), io_manager_key="manifest_io_manager")
    def draft_image(context: dg.AssetExecutionContext, artifacts: ArtifactStore):
        return {k: _manifest(k, artifacts) for k in context.partition_keys[:1]}

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("variants", ["c.a", "c.b"])
        result = _run_range([draft_image], instance, "c.a", "c.b")
    assert not result.success
    assert "must return one manifest per partition key" in str(result.all_events)
    assert not (studio_home / "manifests" / "draft_image").exists()
