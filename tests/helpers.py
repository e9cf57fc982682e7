"""Helpers shared by the end-to-end tests (local filesystem, S3, Postgres instance).

`assert_campaign_media` checks one materialized campaign through whatever
storage holds it: it takes how to load a manifest and how to read an
artifact's bytes, so the filesystem, S3 and Postgres runs check the same
things.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import time
import wave
from collections.abc import Callable, Iterable
from types import SimpleNamespace

import av
import dagster as dg
import numpy as np
import pytest
from PIL import Image

from assets.dagster_api import partition_range_tags
from model_adapters.captions import parse_webvtt
from orchestration.definitions import build_definitions
from orchestration.variant_runs import requested_partition_keys
from resources.brief_source import BriefSource
from resources.io_manager import JsonManifestIOManager
from tests.conftest import SAMPLE_BRIEFS, SAMPLE_CAMPAIGN

CAMPAIGN = SAMPLE_CAMPAIGN
EXPECTED_REFINED = {"9:16": (1080, 1920), "1:1": (1080, 1080), "16:9": (1920, 1080)}
# A smaller video keeps the test quick; 720p is what `make demo` produces.
FAST_VIDEO = {"ops": {"variant_media": {"config": {"synced_video": {"short_side": 360, "fps": 24}}}}}


def shipped_pipelines() -> dict:
    """The pipelines of config/pipelines/, resolved against the shipped local routing."""
    from orchestration.components import StudioPipelines

    return StudioPipelines(routing="config/routing.local.yaml", pipelines_dir="config/pipelines").resolve_pipelines()[0]


# The campaign pipeline's stages, from config/pipelines/campaign.yaml: what every variant has.
CAMPAIGN_STAGES = shipped_pipelines()["campaign"].stage_names
VARIANT_ASSETS = ("brief", *CAMPAIGN_STAGES)


def brief_sensor(definitions=None) -> dg.SensorDefinition:
    return (definitions or build_definitions()).resolve_sensor_def("brief_sensor")


def register(instance, definitions=None) -> list[str]:
    """What the brief sensor does on a tick: the partitions of every brief's variants; the keys it requests."""
    definitions = definitions or build_definitions()
    result = brief_sensor(definitions)(dg.build_sensor_context(instance=instance, resources={"briefs": BriefSource()}))
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    # Each request is read in its own pipeline's partitions: the ones its job runs over.
    return [
        key
        for request in result.run_requests
        for key in request_keys(instance, request, definitions.resolve_job_def(request.job_name).partitions_def.name)
    ]


def request_keys(instance, request: dg.RunRequest, partitions_name: str = "variants") -> list[str]:
    """The variants a run request covers: its partition key, or its range in the instance's order."""
    return requested_partition_keys(request, instance.get_dynamic_partitions(partitions_name))


def run_campaign(instance, keys, run_config=None, definitions=None, job_name="produce_campaign"):
    job = (definitions or build_definitions()).resolve_job_def(job_name)
    return job.execute_in_process(
        instance=instance,
        run_config=run_config or FAST_VIDEO,
        tags=partition_range_tags(keys[0], keys[-1]),
        raise_on_error=False,
    )


def read_artifact(ref) -> bytes:
    data = open(ref.uri.removeprefix("file://"), "rb").read()
    assert hashlib.sha256(data).hexdigest() == ref.sha256
    return data


def mp4_top_level_boxes(data: bytes) -> list[str]:
    boxes, offset = [], 0
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        boxes.append(data[offset + 4 : offset + 8].decode("latin-1"))
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return boxes


def assert_materialized_per_partition(instance, keys: Iterable[str]) -> None:
    """One materialization per asset per variant, with a readable preview."""
    for asset in VARIANT_ASSETS:
        events = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
        assert sorted(e.partition_key for e in events) == sorted(keys), asset
    refined_events = instance.fetch_materializations(dg.AssetKey("refined_image"), limit=100).records
    for record in refined_events:
        metadata = record.asset_materialization.metadata
        assert "data:image/jpeg;base64," in metadata["preview"].value
        assert metadata["model"].value == "torch-refiner@1"
        assert metadata["latency_s"].value > 0
    # The same keys on every model stage (what the UI shows), and each stage's own figures.
    provenance_keys = {"provider", "adapter", "model", "seed", "latency_s", "cost_usd", "attempts", "cache_hit", "fallbacks"}
    own_keys = {
        "concept": {"headline", "script", "image_prompt"},
        "draft_image": {"preview", "file", "size", "prompt"},
        "refined_image": {"preview", "file", "size", "headline"},
        "voiceover": {"file", "duration_s", "loudness_lufs", "true_peak_dbtp"},
        "synced_video": {"file", "duration_s", "drift_ms", "loudness_lufs", "captions_vtt"},
    }
    for asset, keys_wanted in own_keys.items():
        for record in instance.fetch_materializations(dg.AssetKey(asset), limit=100).records:
            missing = (provenance_keys | keys_wanted) - set(record.asset_materialization.metadata)
            assert not missing, (asset, missing)
    for record in instance.fetch_materializations(dg.AssetKey("captions"), limit=100).records:
        assert {"cues", "excerpt", "vtt", "srt"} <= set(record.asset_materialization.metadata)


def assert_campaign_media(
    keys: Iterable[str],
    load_manifest: Callable[[dg.AssetKey, str], object],
    read: Callable[[object], bytes] = read_artifact,
    *,
    short_side: int = 360,
    fps: int = 24,
) -> None:
    """Every variant's manifests are there and its media decode as what they claim to be."""
    for key in keys:
        brief = load_manifest(dg.AssetKey("brief"), key)
        concept = load_manifest(dg.AssetKey("concept"), key)
        assert concept.headline and concept.script
        for term in brief.banned_terms:
            assert term.lower() not in concept.script.lower()

        draft = load_manifest(dg.AssetKey("draft_image"), key)
        refined = load_manifest(dg.AssetKey("refined_image"), key)
        draft_png = Image.open(io.BytesIO(read(draft.artifact)))
        refined_png = Image.open(io.BytesIO(read(refined.artifact)))
        assert draft_png.format == refined_png.format == "PNG"
        w, h = draft_png.size
        assert w * {"9:16": 16, "1:1": 1, "16:9": 9}[brief.aspect_ratio] == h * {"9:16": 9, "1:1": 1, "16:9": 16}[brief.aspect_ratio]
        assert refined_png.size == EXPECTED_REFINED[brief.aspect_ratio]
        assert np.asarray(refined_png.convert("L")).std() > 10  # a picture, not a flat fill
        assert refined.artifact.uri.endswith(".png")
        assert refined.provenance.seed == brief.seed

        audio = load_manifest(dg.AssetKey("voiceover"), key)
        with wave.open(io.BytesIO(read(audio.artifact))) as wav:
            assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
            assert abs(wav.getnframes() / wav.getframerate() - audio.duration_s) < 0.01
        assert abs(audio.loudness_lufs + 16) <= 1 and audio.true_peak_dbtp <= -1.0
        assert len(audio.words) == len(concept.script.split())

        track = load_manifest(dg.AssetKey("captions"), key)
        cues = parse_webvtt(read(track.vtt).decode())
        assert cues and all(len(line) <= 42 for cue in cues for line in cue.lines)

        video = load_manifest(dg.AssetKey("synced_video"), key)
        data = read(video.artifact)
        boxes = mp4_top_level_boxes(data)
        assert boxes.index("moov") < boxes.index("mdat")
        with av.open(io.BytesIO(data)) as container:
            v, a = container.streams.video[0], container.streams.audio[0]
            assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
            assert a.codec_context.name == "aac"
            assert (v.codec_context.width, v.codec_context.height) == (video.width, video.height)
            assert min(video.width, video.height) == short_side
            v_dur, a_dur = float(v.duration * v.time_base), float(a.duration * a.time_base)
        assert abs(v_dur - a_dur) <= 1 / fps + 1e-6
        # The brief's duration is the video's (the picture held after the voice), within one frame.
        assert abs(v_dur - brief.duration_s) <= 1 / fps + 1e-6
        assert audio.duration_s <= brief.duration_s - 0.5 + 1e-6


def studio_definitions(extra_jobs=()) -> dg.Definitions:
    """The project's definitions (checks and roll-up included), plus jobs a test needs."""
    definitions = build_definitions()
    if not extra_jobs:
        return definitions
    return dg.Definitions.merge(definitions, dg.Definitions(jobs=list(extra_jobs)))


def materialize_sample_campaign(root) -> SimpleNamespace:
    """The sample campaign registered and produced once under `root` (conftest's session fixture
    `sample_campaign`): its studio (artifacts, manifests, cached model answers), its briefs folder and
    the Dagster instance that recorded the run, closed, so `sample_campaign_view` can copy it."""
    home, briefs, instance_dir = root / "studio", root / "briefs", root / "instance"
    for folder in (home, briefs, instance_dir):  # the instance lives beside the studio, not in it
        folder.mkdir()
    shutil.copy(SAMPLE_BRIEFS / f"{CAMPAIGN}.yaml", briefs)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STUDIO_HOME", str(home))
        env.setenv("STUDIO_BRIEFS_DIR", str(briefs))
        with dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
            keys = register(instance)
            started = time.perf_counter()
            result = run_campaign(instance, keys)
            seconds = time.perf_counter() - started
    return SimpleNamespace(home=home, briefs=briefs, instance_dir=instance_dir, keys=keys, result=result, seconds=seconds)


@contextlib.contextmanager
def sample_campaign_view(template: SimpleNamespace, root, extra_jobs=()):
    """The session's materialized sample campaign, for one module or test, with its own instance.

    The instance is a copy of the one that recorded the campaign (its run, events, partitions and
    check results), so what one module records there (runs, check evaluations, partitions) no other
    sees; the briefs folder is a copy too. The studio's files are the template's, shared: tests
    may add files (the roll-up tests make the roll-up again) but never change a variant's manifests
    or media; a test that would works on a copy of `home` with a fresh instance (as
    test_asset_checks' blocking-check test does). STUDIO_HOME points at the template while the view
    is open."""
    briefs, instance_dir = root / "briefs", root / "instance"
    shutil.copytree(template.briefs, briefs)
    shutil.copytree(template.instance_dir, instance_dir)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("STUDIO_HOME", str(template.home))
        env.setenv("STUDIO_BRIEFS_DIR", str(briefs))
        definitions = studio_definitions(extra_jobs)
        with dg.instance_for_test(temp_dir=str(instance_dir)) as instance:
            yield SimpleNamespace(
                home=template.home,
                briefs=briefs,
                instance=instance,
                keys=template.keys,
                result=template.result,
                seconds=template.seconds,
                definitions=definitions,
                load=JsonManifestIOManager().load_manifest,
            )
