"""S3 storage against a real S3 API: moto's server on loopback, spoken to over HTTP by boto3.

The server runs in a thread of the test process on an ephemeral port; each
test gets a fresh bucket and the environment a deployment would set
(STUDIO_ENV=s3, STUDIO_S3_BUCKET, STUDIO_S3_PREFIX, AWS_ENDPOINT_URL, region,
throwaway credentials). No real AWS account or profile can be reached.
"""

import hashlib
import json
import logging
import uuid
from dataclasses import dataclass

import boto3
import dagster as dg
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dagster_aws.s3 import S3Resource
from moto.server import ThreadedMotoServer

from assets.common import MANIFEST_IO_MANAGER_KEY
from orchestration.definitions import build_definitions
from orchestration.storage import ARTIFACTS_KEY, resolved_resource, storage_resources
from resources.artifact_store import ArtifactStore, BaseArtifactStore, S3ArtifactStore
from resources.io_manager import JsonManifestIOManager, S3JsonManifestIOManager
from resources.manifests import ArtifactRef, ImageArtifact, Provenance, manifest_from_json
from resources.settings import DEFAULT_S3_PREFIX
from tests.helpers import VARIANT_ASSETS, assert_campaign_media, assert_materialized_per_partition, register, run_campaign

REGION = "us-east-1"
PREFIX = "studio/test"


@dataclass
class S3Env:
    endpoint: str
    bucket: str
    prefix: str
    client: object

    def resource(self) -> S3Resource:
        return S3Resource(endpoint_url=self.endpoint, region_name=REGION)

    def keys(self) -> list[str]:
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket)
        return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


@pytest.fixture(scope="session")
def moto_endpoint():
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def s3_env(moto_endpoint, studio_home, tmp_path, monkeypatch) -> S3Env:
    # Only the moto server, with throwaway credentials: no profile, no real account.
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN", "AWS_ENDPOINT_URL_S3", "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_REGION", REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    bucket = f"studio-test-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("STUDIO_ENV", "s3")
    monkeypatch.setenv("STUDIO_S3_BUCKET", bucket)
    monkeypatch.setenv("STUDIO_S3_PREFIX", PREFIX)
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    client.create_bucket(Bucket=bucket)
    return S3Env(endpoint=moto_endpoint, bucket=bucket, prefix=PREFIX, client=client)


def _count_calls(store, operation: str) -> list[str]:
    calls: list[str] = []
    store.client.meta.events.register(f"before-call.s3.{operation}", lambda **kw: calls.append(operation))
    return calls


def test_s3_put_is_content_addressed_one_complete_put(s3_env):
    store = S3ArtifactStore(s3=s3_env.resource(), bucket=s3_env.bucket, prefix=s3_env.prefix)
    puts = _count_calls(store, "PutObject")
    multipart = _count_calls(store, "CreateMultipartUpload")

    ref = store.put(b"hello", extension=".png", media_type="image/png")
    digest = hashlib.sha256(b"hello").hexdigest()
    assert ref == ArtifactRef(
        uri=f"s3://{s3_env.bucket}/{PREFIX}/sha256/{digest[:2]}/{digest}.png",
        sha256=digest,
        media_type="image/png",
        size_bytes=5,
    )
    head = s3_env.client.head_object(Bucket=s3_env.bucket, Key=f"{PREFIX}/sha256/{digest[:2]}/{digest}.png")
    assert head["ContentType"] == "image/png" and head["Metadata"]["sha256"] == digest
    # Equal bytes: HEAD finds them, nothing is written again.
    assert store.put(b"hello", extension=".png", media_type="image/png") == ref
    assert puts == ["PutObject"] and multipart == []
    assert store.get(ref) == b"hello"
    assert s3_env.keys() == [f"{PREFIX}/sha256/{digest[:2]}/{digest}.png"]


def test_s3_get_refuses_tampered_outside_or_missing(s3_env):
    store = S3ArtifactStore(s3=s3_env.resource(), bucket=s3_env.bucket, prefix=s3_env.prefix)
    ref = store.put(b"data", extension=".wav", media_type="audio/wav")
    s3_env.client.put_object(Bucket=s3_env.bucket, Key=store.key_for(ref), Body=b"evil")
    with pytest.raises(ValueError, match="does not match its sha256"):
        store.get(ref)

    elsewhere = [
        ref.uri.replace(PREFIX, "other"),
        ref.uri.replace(s3_env.bucket, "another-bucket"),
        ref.uri.replace(f"{PREFIX}/", f"{PREFIX}/../"),
        ref.uri.replace("s3://", "file:///"),
    ]
    for uri in elsewhere:
        with pytest.raises(ValueError, match="not inside the store"):
            store.get(ref.model_copy(update={"uri": uri}))
    with pytest.raises(ValueError, match="extension"):
        store.put(b"x", extension="/../../x", media_type="text/plain")
    with pytest.raises(ValueError, match="sha256"):
        store.get(ref.model_copy(update={"sha256": "../" + ref.sha256[3:]}))

    missing = store.put(b"gone", extension=".txt", media_type="text/plain")
    s3_env.client.delete_object(Bucket=s3_env.bucket, Key=store.key_for(missing))
    with pytest.raises(FileNotFoundError, match="missing from the store"):
        store.get(missing)

    for bad_prefix in ("../escape", "a/../b", "a//b/.hidden", "spaces in it"):
        bad = S3ArtifactStore(s3=s3_env.resource(), bucket=s3_env.bucket, prefix=bad_prefix)
        with pytest.raises(ValueError, match="S3 prefix"):
            bad.put(b"x", extension=".txt", media_type="text/plain")
    assert all(key.startswith(f"{PREFIX}/sha256/") for key in s3_env.keys())


def _manifest(key: str, store: BaseArtifactStore) -> ImageArtifact:
    prov = Provenance(task="image", provider="local", adapter_id="a", model="m", model_version="1", request_hash="0" * 64, latency_s=0.1)
    return ImageArtifact(
        partition_key=key,
        artifact=store.put(key.encode(), extension=".png", media_type="image/png"),
        width=2,
        height=2,
        aspect_ratio="1:1",
        provenance=prov,
    )


def _run_range(assets, instance, first, last, resources):
    return dg.materialize(
        assets,
        instance=instance,
        resources=resources,
        tags={ASSET_PARTITION_RANGE_START_TAG: first, ASSET_PARTITION_RANGE_END_TAG: last},
        raise_on_error=False,
    )


def test_s3_read_range_returns_the_asked_bytes_of_a_whole_object(s3_env):
    """What the review app's range requests read (a video seeking): a ranged GET, not the object."""
    store = S3ArtifactStore(s3=s3_env.resource(), bucket=s3_env.bucket, prefix=s3_env.prefix)
    data = bytes(range(256)) * 40
    ref = store.put(data, extension=".mp4", media_type="video/mp4")
    gets = []
    store.client.meta.events.register("provide-client-params.s3.GetObject", lambda params, **_: gets.append(params.get("Range")))
    assert store.read_range(ref, 0, 10) == data[:10]
    assert store.read_range(ref, 5000, 10240) == data[5000:]
    assert store.read_range(ref, 7, 7) == b""
    assert gets == ["bytes=0-9", "bytes=5000-10239"]  # the empty range asks for nothing
    # An object of another size than the manifest says is refused, as `get` refuses a tampered one.
    s3_env.client.put_object(Bucket=s3_env.bucket, Key=store.key_for(ref), Body=data[:-1])
    with pytest.raises(ValueError):
        store.read_range(ref, 0, 10)
    s3_env.client.delete_object(Bucket=s3_env.bucket, Key=store.key_for(ref))
    with pytest.raises(FileNotFoundError, match="missing from the store"):
        store.read_range(ref, 0, 10)


def test_s3_io_manager_writes_and_reads_one_json_object_per_partition(s3_env):
    resources = storage_resources("s3")  # EnvVars, resolved by Dagster when the run starts
    partitions = dg.DynamicPartitionsDefinition(name="variants")
    seen: dict[str, object] = {}

    @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), io_manager_key=MANIFEST_IO_MANAGER_KEY)
    def draft_image(context: dg.AssetExecutionContext, artifacts: S3ArtifactStore):
        return {k: _manifest(k, artifacts) for k in context.partition_keys}

    @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), io_manager_key=MANIFEST_IO_MANAGER_KEY)
    def downstream(context: dg.AssetExecutionContext, draft_image):
        seen.update(draft_image)
        return {k: draft_image[k] for k in context.partition_keys}

    keys = ["c.a", "c.b", "c.c"]
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("variants", keys)
        assert _run_range([draft_image, downstream], instance, "c.a", "c.c", resources).success
        assert set(seen) == set(keys)
        seen.clear()
        result = _run_range([draft_image, downstream], instance, "c.b", "c.b", resources)
        assert result.success and list(seen) == ["c.b"]
        [materialization] = result.asset_materializations_for_node("draft_image")
        assert materialization.metadata["manifest"].value == f"s3://{s3_env.bucket}/{PREFIX}/manifests/draft_image/c.b.json"

    io_manager = S3JsonManifestIOManager(s3=s3_env.resource(), bucket=s3_env.bucket, prefix=PREFIX)
    for key in keys:
        obj = s3_env.client.get_object(Bucket=s3_env.bucket, Key=f"{PREFIX}/manifests/draft_image/{key}.json")
        assert obj["ContentType"] == "application/json"
        body = obj["Body"].read()
        assert json.loads(body)["partition_key"] == key  # plain JSON, never a pickle
        assert manifest_from_json(body) == io_manager.load_manifest(dg.AssetKey("draft_image"), key)
    with pytest.raises(ValueError, match="not safe"):
        io_manager.key(dg.AssetKey("x"), "../../etc")
    with pytest.raises(FileNotFoundError, match="no manifest at s3://"):
        io_manager.load_manifest(dg.AssetKey("draft_image"), "c.zzz")
    # Nothing outside the prefix's three shapes: current manifests, artifacts, and every manifest
    # version kept by its sha256 (history and pins: resources/io_manager.py).
    kept = ("manifests/", "sha256/", "manifest-versions/")
    assert all(any(k.startswith(f"{PREFIX}/{shape}") for shape in kept) for k in s3_env.keys()), sorted(s3_env.keys())
    assert any(k.startswith(f"{PREFIX}/manifest-versions/") for k in s3_env.keys())


def test_s3_io_manager_refuses_output_missing_a_partition(s3_env):
    partitions = dg.DynamicPartitionsDefinition(name="variants")

    @dg.asset(partitions_def=partitions, backfill_policy=dg.BackfillPolicy.single_run(), io_manager_key=MANIFEST_IO_MANAGER_KEY)
    def draft_image(context: dg.AssetExecutionContext, artifacts: S3ArtifactStore):
        return {k: _manifest(k, artifacts) for k in context.partition_keys[:1]}

    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions("variants", ["c.a", "c.b"])
        result = _run_range([draft_image], instance, "c.a", "c.b", storage_resources("s3"))
    assert not result.success
    assert "must return one manifest per partition key" in str(result.all_events)
    assert not [k for k in s3_env.keys() if "/manifests/" in k]


def test_storage_is_chosen_by_studio_env_when_definitions_are_built(studio_home, monkeypatch):
    for name in ("STUDIO_ENV", "STUDIO_S3_BUCKET", "STUDIO_S3_PREFIX", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    local = build_definitions().resources
    assert type(local[ARTIFACTS_KEY]) is ArtifactStore and type(local[MANIFEST_IO_MANAGER_KEY]) is JsonManifestIOManager

    monkeypatch.setenv("STUDIO_ENV", "s3")
    with pytest.raises(ValueError, match="STUDIO_S3_BUCKET"):
        build_definitions()
    monkeypatch.setenv("STUDIO_S3_BUCKET", "campaign-media")
    remote = build_definitions().resources
    store, manifests = remote[ARTIFACTS_KEY], remote[MANIFEST_IO_MANAGER_KEY]
    assert isinstance(store, S3ArtifactStore) and isinstance(manifests, S3JsonManifestIOManager)
    # Config names the variable; the value is read when a run starts.
    assert store.bucket == dg.EnvVar("STUDIO_S3_BUCKET") and isinstance(store.bucket, dg.EnvVar)
    assert store.prefix == DEFAULT_S3_PREFIX and store.s3.endpoint_url is None

    monkeypatch.setenv("STUDIO_ENV", "gcs")
    with pytest.raises(ValueError, match="STUDIO_ENV='gcs' is not one of local, s3"):
        build_definitions()


@pytest.mark.e2e
def test_campaign_end_to_end_on_s3(s3_env, studio_home, one_campaign):
    definitions = build_definitions()
    with dg.instance_for_test() as instance:
        keys = register(instance)
        assert len(keys) == 4
        result = run_campaign(instance, keys, definitions=definitions)
        assert result.success
        assert_materialized_per_partition(instance, keys)
        for record in instance.fetch_materializations(dg.AssetKey("synced_video"), limit=10).records:
            assert record.asset_materialization.metadata["file"].value.startswith(f"s3://{s3_env.bucket}/{PREFIX}/sha256/")

    # Everything went to the bucket, under the prefix; nothing to the local disk.
    assert not (studio_home / "artifacts").exists() and not (studio_home / "manifests").exists()
    stored = s3_env.keys()
    assert all(k.startswith(f"{PREFIX}/") for k in stored)
    manifests = {k for k in stored if k.startswith(f"{PREFIX}/manifests/")}
    assert manifests == {f"{PREFIX}/manifests/{asset}/{key}.json" for asset in VARIANT_ASSETS for key in keys}
    # The router's response cache lives on the same storage, beside the artifacts.
    cache_entries = {k for k in stored if k.startswith(f"{PREFIX}/cache/")}
    assert cache_entries and all(k.endswith(".json") for k in cache_entries)
    extensions = {k.rsplit(".", 1)[-1] for k in stored if k not in manifests | cache_entries}
    # json: the campaign roll-up summary; jpg: the image previews
    assert extensions == {"png", "jpg", "wav", "vtt", "srt", "mp4", "json"}

    # Read back from S3 through the same resources and decode every medium.
    with resolved_resource(definitions, MANIFEST_IO_MANAGER_KEY) as io_manager, resolved_resource(definitions, ARTIFACTS_KEY) as store:
        video = io_manager.load_manifest(dg.AssetKey("synced_video"), keys[0])
        assert video.artifact.uri.startswith(f"s3://{s3_env.bucket}/{PREFIX}/sha256/")
        assert_campaign_media(keys, io_manager.load_manifest, store.get)
