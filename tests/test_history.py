"""Every version of a stage's output is kept; `studio history`, `studio pin` and `studio unpin`
(orchestration/history.py, assets/versions.py) on a variant run through Dagster on the local routing.

The end-to-end test: a one-variant campaign (de-DE: the phrase bank and espeak, the quickest local
route), then `regenerate_images` with another draft size so refined_image has two versions; pin the
older, let the automation ask for what follows and run it; the video is the one made from the older
image (the same bytes: the response cache answers the same request) and the roll-up shows it pinned;
a later `regenerate_images` keeps the pin; unpin returns both to the latest. Nothing is deleted.
"""

import copy
import hashlib
import json

import dagster as dg
import pytest

from assets.versions import PINNED_BY_KEY, PINNED_VERSION_KEY, VERSION_ACTION_KEY, recorded_version
from orchestration.cli import main
from orchestration.definitions import build_definitions
from orchestration.instance import local_instance
from resources.artifact_store import S3ArtifactStore
from resources.io_manager import MANIFEST_VERSIONS_NAMESPACE, JsonManifestIOManager, S3JsonManifestIOManager, manifest_version_id
from resources.manifests import ArtifactRef, ImageArtifact, Provenance
from tests.helpers import FAST_VIDEO, register, run_campaign
from tests.test_s3_storage import PREFIX, moto_endpoint, s3_env  # noqa: F401  (fixtures)

BRIEF = """campaign_id: pin-lamp
product: Pin Lamp
audience: people who keep the old one
tone: Warm
palette: ["#1b1f3b", "#f4a259", "#f7ede2"]
banned_terms: ["cheap"]
budget_usd: 5
variants:
  - id: square-de
    locale: de-DE
    aspect_ratio: "1:1"
    duration_s: 4
    tier: standard
"""
KEY = "pin-lamp.square-de"
REFINED, VIDEO = dg.AssetKey("refined_image"), dg.AssetKey("synced_video")


def _image_manifest(seed: int) -> ImageArtifact:
    ref = ArtifactRef(uri="file:///nowhere/a.png", sha256="a" * 64, media_type="image/png", size_bytes=1)
    provenance = Provenance(
        task="image", provider="p", adapter_id="a", model="m", model_version="1", seed=seed, request_hash="r", latency_s=0.1
    )
    return ImageArtifact(partition_key=KEY, artifact=ref, width=1, height=1, aspect_ratio="1:1", provenance=provenance)


def _check_version_store(manager, asset_key: dg.AssetKey) -> list[str]:
    """Two versions kept, both readable and restorable byte for byte; a tampered one refused."""
    texts = [_image_manifest(seed).model_dump_json(indent=2) for seed in (1, 2)]
    versions = [manager.keep_version(text) for text in texts]
    assert versions == [hashlib.sha256(text.encode()).hexdigest() for text in texts]
    for version, text in zip(versions, texts, strict=False):
        assert manager.version_bytes(version) == text.encode()
        restored = manager.restore_version(asset_key, KEY, version)
        assert restored.provenance.seed == json.loads(text)["provenance"]["seed"]
        assert manager.current_version(asset_key, KEY) == version
    with pytest.raises(FileNotFoundError, match="no manifest version"):
        manager.version_bytes("b" * 64)
    with pytest.raises(ValueError):
        manager.version_bytes("../../etc/passwd")
    return versions


def test_manifest_versions_are_kept_content_addressed_on_files(studio_home):
    manager = JsonManifestIOManager()
    versions = _check_version_store(manager, REFINED)
    path = studio_home / "artifacts" / MANIFEST_VERSIONS_NAMESPACE / versions[0][:2] / f"{versions[0]}.json"
    assert path.is_file()
    path.write_text(path.read_text().replace('"seed": 1', '"seed": 9'))  # not what its id says
    with pytest.raises(ValueError, match="does not match its sha256"):
        manager.load_version(versions[0])


def test_manifest_versions_are_kept_content_addressed_on_s3(s3_env):  # noqa: F811
    manager = S3JsonManifestIOManager(s3=s3_env.resource(), bucket=s3_env.bucket, prefix=PREFIX)
    versions = _check_version_store(manager, REFINED)
    assert f"{PREFIX}/{MANIFEST_VERSIONS_NAMESPACE}/{versions[1][:2]}/{versions[1]}.json" in s3_env.keys()
    # The artifact store's layout: the store reads the same record under the same bucket and prefix.
    store = S3ArtifactStore(s3=s3_env.resource(), bucket=s3_env.bucket, prefix=PREFIX)
    assert manifest_version_id(store.read_entry(MANIFEST_VERSIONS_NAMESPACE, versions[1])) == versions[1]


def _regenerate_images_config(draft_short_side: int) -> dict:
    config = copy.deepcopy(FAST_VIDEO)
    config["ops"]["variant_media"]["config"]["draft_image"] = {"short_side": draft_short_side}
    return config


def _requested(result, definitions) -> dict[str, set]:
    keys = definitions.resolve_asset_graph().get_all_asset_keys()
    return {k.to_user_string(): set(result.get_requested_partitions(k)) for k in keys if result.get_requested_partitions(k)}


def _latest(instance, asset_key):
    return instance.fetch_materializations(dg.AssetRecordsFilter(asset_key, asset_partitions=[KEY]), limit=1).records[0]


def _rollup(instance, store):
    from assets.rollup import load_rollup

    record = instance.fetch_materializations(dg.AssetKey("campaign_rollup"), limit=1).records[0]
    summary = record.asset_materialization.metadata["pin-lamp/summary"].value
    path = getattr(summary, "path", summary)
    data = open(path, "rb").read()
    ref = ArtifactRef(uri=f"file://{path}", sha256=hashlib.sha256(data).hexdigest(), media_type="application/json", size_bytes=len(data))
    return load_rollup(store, ref).variants[0]


def _store_files(home) -> dict[str, str]:
    root = home / "artifacts"
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in root.rglob("*")
        if p.is_file() and not p.name.startswith(".tmp-")
    }


@pytest.mark.e2e
def test_pin_an_older_refined_image_then_unpin(studio_home, briefs_folder, monkeypatch, capsys):
    from resources.artifact_store import ArtifactStore

    (briefs_folder / "pin-lamp.yaml").write_text(BRIEF)
    monkeypatch.setenv("USER", "alice")
    load = JsonManifestIOManager().load_manifest
    store = ArtifactStore()
    definitions = build_definitions()
    instance = local_instance()  # $DAGSTER_HOME: the instance the CLI opens too
    assert register(instance, definitions) == [KEY]
    cursor = dg.evaluate_automation_conditions(defs=definitions, instance=instance).cursor

    assert run_campaign(instance, [KEY], definitions=definitions).success
    older, older_video = load(REFINED, KEY), load(VIDEO, KEY)
    older_version = JsonManifestIOManager().current_version(REFINED, KEY)
    assert recorded_version(_latest(instance, REFINED).asset_materialization.metadata, KEY) == older_version

    # Another draft size: the images are made again, and the video from them.
    assert run_campaign(instance, [KEY], _regenerate_images_config(448), definitions, job_name="regenerate_images").success
    newer, newer_video = load(REFINED, KEY), load(VIDEO, KEY)
    newer_version = JsonManifestIOManager().current_version(REFINED, KEY)
    assert newer_version != older_version and newer.artifact.sha256 != older.artifact.sha256
    assert newer_video.artifact.sha256 != older_video.artifact.sha256
    files_before_pin = _store_files(studio_home)
    cursor = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=cursor).cursor

    capsys.readouterr()
    assert main(["history", KEY, "--stage", "refined_image"]) == 0
    listed = capsys.readouterr().out
    assert f"2 version(s); current {newer_version[:12]}" in listed
    assert listed.index(newer_version[:12], listed.index("VERSION")) < listed.index(older_version[:12], listed.index("VERSION"))
    assert f"* {newer_version[:12]}" in listed and "torch-refiner@1" in listed
    assert listed.count("png_valid:pass") == 2  # each version's own evaluation

    # Pin the older refined image.
    assert main(["pin", KEY, "--stage", "refined_image", "--version", older_version[:12]]) == 0
    assert "synced_video" in capsys.readouterr().out
    assert JsonManifestIOManager().current_version(REFINED, KEY) == older_version
    pin_record = _latest(instance, REFINED)
    metadata = pin_record.asset_materialization.metadata
    assert metadata[VERSION_ACTION_KEY].value == "pin" and metadata[PINNED_VERSION_KEY].value == older_version
    assert metadata[PINNED_BY_KEY].value == "alice" and recorded_version(metadata, KEY) == older_version
    # Pinning it again records nothing.
    assert main(["pin", KEY, "--stage", "refined_image", "--version", older_version]) == 0
    assert "already pinned" in capsys.readouterr().out
    assert _latest(instance, REFINED).storage_id == pin_record.storage_id

    # The automation asks for what reads the refined image (and the roll-up), nothing else.
    after_pin = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=cursor)
    cursor = after_pin.cursor
    requested = _requested(after_pin, definitions)
    assert requested.get("synced_video") == {KEY}
    assert set(requested) <= {"synced_video", "campaign_rollup"}
    assert run_campaign(instance, [KEY], definitions=definitions, job_name="regenerate_video").success
    assert load(VIDEO, KEY).artifact.sha256 == older_video.artifact.sha256  # the video of the older image
    rolled = _rollup(instance, store)
    assert rolled.artifacts["refined_image"] == older.artifact.uri
    assert rolled.versions["refined_image"].version == older_version and rolled.versions["refined_image"].pinned
    assert not rolled.versions["synced_video"].pinned

    # Regenerating the images keeps the pin: the pinned output stands (assets/reuse.py).
    assert run_campaign(instance, [KEY], _regenerate_images_config(448), definitions, job_name="regenerate_images").success
    assert JsonManifestIOManager().current_version(REFINED, KEY) == older_version
    assert _latest(instance, REFINED).asset_materialization.metadata[PINNED_VERSION_KEY].value == older_version
    assert load(VIDEO, KEY).artifact.sha256 == older_video.artifact.sha256
    # (the sensor ticks meanwhile: what those runs recorded is handled before the unpin)
    cursor = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=cursor).cursor

    assert main(["history", KEY, "--stage", "refined_image"]) == 0
    listed = capsys.readouterr().out
    assert f"pinned {older_version[:12]}" in listed and f"*P{older_version[:12]}" in listed
    assert f"pinned {older_version[:12]} at " in listed and "by alice" in listed

    # Unpin: back to the latest made version, and the video and roll-up follow.
    assert main(["unpin", KEY, "--stage", "refined_image"]) == 0
    assert f"back to the latest made version {newer_version[:12]}" in capsys.readouterr().out
    assert JsonManifestIOManager().current_version(REFINED, KEY) == newer_version
    unpin_metadata = _latest(instance, REFINED).asset_materialization.metadata
    assert unpin_metadata[VERSION_ACTION_KEY].value == "unpin" and PINNED_VERSION_KEY not in unpin_metadata
    after_unpin = dg.evaluate_automation_conditions(defs=definitions, instance=instance, cursor=cursor)
    assert _requested(after_unpin, definitions).get("synced_video") == {KEY}
    assert run_campaign(instance, [KEY], definitions=definitions, job_name="regenerate_video").success
    assert load(VIDEO, KEY).artifact.sha256 == newer_video.artifact.sha256
    rolled = _rollup(instance, store)
    assert rolled.artifacts["refined_image"] == newer.artifact.uri
    assert rolled.versions["refined_image"].version == newer_version and not rolled.versions["refined_image"].pinned
    assert main(["unpin", KEY, "--stage", "refined_image"]) == 0
    assert "not pinned; nothing recorded" in capsys.readouterr().out

    # Nothing was deleted or changed in the store; every version listed is still there.
    files_now = _store_files(studio_home)
    assert {path: digest for path, digest in files_now.items() if path in files_before_pin} == files_before_pin
    for version in (older_version, newer_version):
        assert JsonManifestIOManager().load_version(version).artifact.sha256 in {older.artifact.sha256, newer.artifact.sha256}
    assert store.holds(older.artifact) and store.holds(older_video.artifact)

    # Invalid input: exit 2 and what was wrong; nothing recorded.
    before = _latest(instance, REFINED).storage_id
    assert main(["history", "pin-lamp.nope"]) == 2
    assert "pin-lamp.nope: no such variant" in capsys.readouterr().err
    assert main(["history", KEY, "--stage", "mood_board"]) == 2
    assert "has no stage 'mood_board'; its stages: concept" in capsys.readouterr().err
    assert main(["pin", KEY, "--stage", "refined_image", "--version", "0123456789ab"]) == 2
    assert "refined_image has no version '0123456789ab'" in capsys.readouterr().err
    assert main(["pin", KEY, "--stage", "refined_image", "--version", "ab"]) == 2
    assert "too short" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["pin", KEY, "--stage", "refined_image"])
    assert exited.value.code == 2
    assert _latest(instance, REFINED).storage_id == before
