"""Nothing the project writes can land outside STUDIO_HOME or the bucket prefix, whatever the key;
nothing it loads from shared storage is unpickled."""

import ast
import hashlib
import json
import pickle
from pathlib import Path

import dagster as dg
import pytest

from resources.artifact_store import ArtifactStore, S3ArtifactStore, entry_key, relative_key
from resources.brief_schema import split_partition_key
from resources.io_manager import JsonManifestIOManager, S3JsonManifestIOManager
from resources.manifests import ArtifactRef
from resources.policies.budget import CampaignBudget
from resources.policies.cache import ResponseCache
from resources.policies.shared_limits import shared_limits_for
from resources.s3 import S3Location
from tests.conftest import PROJECT_ROOT

HOSTILE_KEYS = [
    "../escape",
    "../../etc/passwd",
    "/etc/passwd",
    "a/../../b",
    "a/b",
    "..",
    ".",
    ".hidden",
    "a..b",
    "a\\..\\b",
    "a\x00b",
    "camp.var\n",
    "\u0430urora.x",
    "camp.\uff56ar",
    "",
    " camp.var",
    "camp.var/",
    "C:\\Windows\\x",
    "%2e%2e%2fetc",
    "~root",
]
SHA = hashlib.sha256(b"x").hexdigest()


def files_under(root: Path) -> set[Path]:
    return {p for p in root.rglob("*")} if root.exists() else set()


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_manifest_io_manager_refuses_hostile_partition_keys(studio_home, tmp_path, key):
    manager = JsonManifestIOManager()
    before = files_under(tmp_path)
    with pytest.raises(ValueError):
        manager._write(dg.AssetKey("brief"), key, "{}")
    with pytest.raises(ValueError):
        manager.load_manifest(dg.AssetKey("brief"), key)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("segments", [["..", "x"], ["a/../../b"], ["/abs"], ["."], ["ok", ".."], ["a\x00"]])
def test_manifest_io_manager_refuses_hostile_asset_keys(studio_home, tmp_path, segments):
    before = files_under(tmp_path)
    with pytest.raises(ValueError):
        JsonManifestIOManager()._write(dg.AssetKey(segments), "camp.var", "{}")
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("key", HOSTILE_KEYS)
def test_partition_keys_split_only_into_slugs(key):
    with pytest.raises(ValueError):
        split_partition_key(key)


@pytest.mark.parametrize("extension", ["/../../x", ".png/../..", "png", ".PNG\n", "", ".p/g", ".png\x00"])
def test_artifact_store_refuses_hostile_extensions(studio_home, tmp_path, extension):
    before = files_under(tmp_path)
    with pytest.raises(ValueError):
        ArtifactStore().put(b"data", extension=extension, media_type="x/y")
    assert files_under(tmp_path) == before


@pytest.mark.parametrize(
    "uri",
    [
        "file:///etc/passwd",
        "file://{root}/../../secret.png",
        "file://{root}/sha256/2d/{sha}.png/../../../x.png",
        "s3://bucket/x.png",
        "file://{root}/sha256/2d/{sha}.png\n",
    ],
)
def test_artifact_store_reads_only_inside_the_store(studio_home, uri):
    store = ArtifactStore()
    ref = ArtifactRef(uri=uri.format(root=store.root_path, sha=SHA), sha256=SHA, media_type="image/png", size_bytes=1)
    with pytest.raises(ValueError):
        store.get(ref)


@pytest.mark.parametrize("key", ["../" + SHA[:61], SHA + "\n", SHA.upper(), SHA[:63], "a" * 64 + "/..", ""])
def test_entry_and_artifact_keys_are_hex_digests_only(key):
    with pytest.raises(ValueError):
        entry_key("cache", key)
    with pytest.raises(ValueError):
        relative_key(key, ".png")
    with pytest.raises(ValueError):
        entry_key("../cache", SHA)


@pytest.mark.parametrize("campaign", ["../x", "a/b", "abc\n", ".", "..", "\u0430bc", "", "A"])
def test_ledger_refuses_hostile_campaign_ids(studio_home, tmp_path, campaign):
    ledger = shared_limits_for()  # its database made first: the refusal must write nothing more
    before = files_under(tmp_path)
    with pytest.raises(ValueError):
        ledger.reserve(CampaignBudget(campaign, 10.0), 1.0)
    assert files_under(tmp_path) == before


@pytest.mark.parametrize("segment", ["..", ".", "a/../b", "x\n", "", "/abs", "a\x00"])
def test_s3_keys_never_leave_the_prefix(segment):
    location = S3Location.create("studio-bucket", "studio/prefix")
    with pytest.raises(ValueError):
        location.key("manifests", segment)
    for prefix in ("../up", "a/../b", "x\n", "/.."):
        with pytest.raises(ValueError):
            S3Location.create("studio-bucket", prefix)


def test_s3_stores_refuse_hostile_keys_against_a_real_s3_api(tmp_path, monkeypatch):
    """moto's server on loopback: hostile partition keys, URIs and entry keys write nothing anywhere."""
    import boto3
    from dagster_aws.s3 import S3Resource
    from moto.server import ThreadedMotoServer

    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        host, port = server.get_host_and_port()
        endpoint = f"http://{host}:{port}"
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        client.create_bucket(Bucket="studio-bucket")
        client.create_bucket(Bucket="other-bucket")
        s3 = S3Resource(endpoint_url=endpoint, region_name="us-east-1")
        manifests = S3JsonManifestIOManager(s3=s3, bucket="studio-bucket", prefix="tenant/a")
        store = S3ArtifactStore(s3=s3, bucket="studio-bucket", prefix="tenant/a")
        for key in HOSTILE_KEYS:
            with pytest.raises(ValueError):
                manifests._write(dg.AssetKey("brief"), key, "{}")
        with pytest.raises(ValueError):
            manifests._write(dg.AssetKey(["..", "b"]), "camp.var", "{}")
        for extension in ("/../../x", ".png/../..", "png"):
            with pytest.raises(ValueError):
                store.put(b"data", extension=extension, media_type="x/y")
        for uri in (
            f"s3://other-bucket/tenant/a/sha256/2d/{SHA}.png",
            f"s3://studio-bucket/tenant/b/sha256/2d/{SHA}.png",
            f"s3://studio-bucket/tenant/a/../b/sha256/2d/{SHA}.png",
        ):
            with pytest.raises(ValueError):
                store.get(ArtifactRef(uri=uri, sha256=SHA, media_type="image/png", size_bytes=1))
        with pytest.raises(ValueError):
            store.write_entry("cache", "../../x", b"{}")
        # A good write lands under the prefix, and only there.
        ref = store.put(b"fine", extension=".png", media_type="image/png")
        listed = [
            o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="studio-bucket") for o in page.get("Contents", [])
        ]
        assert listed == [ref.uri.removeprefix("s3://studio-bucket/")] and listed[0].startswith("tenant/a/sha256/")
        assert client.list_objects_v2(Bucket="other-bucket").get("KeyCount") == 0
    finally:
        server.stop()


# --- nothing is unpickled -----------------------------------------------------------------


class _Planted:
    """Unpickling this would create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (Path(self.marker).touch, ())


def test_planted_pickles_in_manifest_and_cache_locations_are_refused(studio_home, tmp_path):
    marker = tmp_path / "unpickled-marker"
    payload = pickle.dumps(_Planted(str(marker)))
    manager = JsonManifestIOManager()
    manifest_path = Path(manager.location(dg.AssetKey("draft_image"), "camp.var"))
    manifest_path.parent.mkdir(parents=True)
    manifest_path.write_bytes(payload)
    with pytest.raises(ValueError):  # pydantic's ValidationError: not JSON
        manager.load_manifest(dg.AssetKey("draft_image"), "camp.var")

    store = ArtifactStore()
    cache = ResponseCache(store)
    store.write_entry("cache", SHA, payload)
    assert cache.read(SHA) is None  # a miss, never a load
    assert not marker.exists()


def test_damaged_cache_entries_are_misses_not_crashes(studio_home):
    """Valid JSON in the wrong shape (planted or damaged) must be a cache miss, never an exception."""
    from resources.model_router import RouterSession

    store = ArtifactStore()
    session = RouterSession({}, {}, retry=None, cooldowns=None, ledger=None, cache=ResponseCache(store), store=store)
    shapes = [
        [],
        "text",
        {"result": None},
        {"result": {"kind": "dataclass", "value": {"evil": 1}}},
        {
            "result": {
                "kind": "dataclass",
                "value": {"png": {"$blob": {"uri": "file:///etc/passwd", "sha256": SHA, "media_type": "image/png", "size_bytes": 1}}},
            }
        },
        {"result": {"kind": "model", "value": {"headline": 1}}},
        {"result": {"kind": "dataclass", "value": []}},
    ]
    for index, shape in enumerate(shapes):
        key = hashlib.sha256(str(index).encode()).hexdigest()
        store.write_entry("cache", key, json.dumps(shape).encode())
        for task in ("concept", "image", "voice"):
            assert session._cached(task, key) == (None, False), (shape, task)


PACKAGES = ("orchestration", "assets", "resources", "model_adapters")
FORBIDDEN = {"pickle", "cPickle", "dill", "cloudpickle", "shelve", "marshal", "joblib"}


def test_no_project_package_imports_pickle():
    offenders = []
    for package in PACKAGES:
        for path in sorted((PROJECT_ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text(), str(path))
            for node in ast.walk(tree):
                names = []
                if isinstance(node, ast.Import):
                    names = [alias.name.split(".")[0] for alias in node.names]
                elif isinstance(node, ast.ImportFrom) and node.module:
                    names = [node.module.split(".")[0]]
                elif isinstance(node, ast.Call) and getattr(node.func, "id", "") == "__import__":
                    names = [a.value for a in node.args[:1] if isinstance(a, ast.Constant)]
                offenders += [f"{path.relative_to(PROJECT_ROOT)}:{node.lineno} {n}" for n in names if n in FORBIDDEN]
            if "torch.load(" in path.read_text() and "weights_only=True" not in path.read_text():
                offenders.append(f"{path.relative_to(PROJECT_ROOT)}: torch.load without weights_only=True")
    assert not offenders, offenders
    assert sum(1 for p in PACKAGES for _ in (PROJECT_ROOT / p).rglob("*.py")) > 30  # the scan saw the code
