"""A sample campaign through Dagster: sensor -> partitions -> one single-run backfill -> decoded media."""

import hashlib
import io
import shutil
import wave

import av
import dagster as dg
import numpy as np
import pytest
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from PIL import Image

from model_adapters import registry
from model_adapters.captions import parse_webvtt
from orchestration.definitions import build_definitions
from orchestration.sensors import brief_sensor
from resources.brief_source import BriefSource
from resources.io_manager import JsonManifestIOManager
from tests.conftest import SAMPLE_BRIEFS

pytestmark = pytest.mark.e2e

CAMPAIGN = "aurora-lamp"
EXPECTED_REFINED = {"9:16": (1080, 1920), "1:1": (1080, 1080), "16:9": (1920, 1080)}
# A smaller video keeps the test quick; 720p is what `make demo` produces.
FAST_VIDEO = {"ops": {"synced_video": {"config": {"short_side": 360, "fps": 24, "tail_s": 0.5}}}}


def register(instance) -> list[str]:
    result = brief_sensor(dg.build_sensor_context(instance=instance, resources={"briefs": BriefSource()}))
    for request in result.dynamic_partitions_requests:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))
    return [r.partition_key for r in result.run_requests]


def run_campaign(instance, keys, run_config=None):
    job = build_definitions().resolve_job_def("produce_campaign")
    return job.execute_in_process(
        instance=instance,
        run_config=run_config or FAST_VIDEO,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
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


@pytest.fixture
def one_campaign(briefs_folder):
    shutil.copy(SAMPLE_BRIEFS / f"{CAMPAIGN}.yaml", briefs_folder)
    return briefs_folder


def test_campaign_end_to_end(studio_home, one_campaign):
    with dg.instance_for_test() as instance:
        keys = register(instance)
        assert len(keys) == 4
        result = run_campaign(instance, keys)
        assert result.success

        # One materialization per asset per variant, with a readable preview.
        for asset in ("brief", "concept", "draft_image", "refined_image", "voiceover", "captions", "synced_video"):
            events = instance.fetch_materializations(dg.AssetKey(asset), limit=100).records
            assert sorted(e.partition_key for e in events) == sorted(keys), asset
        refined_events = instance.fetch_materializations(dg.AssetKey("refined_image"), limit=100).records
        for record in refined_events:
            metadata = record.asset_materialization.metadata
            assert "data:image/jpeg;base64," in metadata["preview"].value
            assert metadata["model"].value == "torch-refiner@1"
            assert metadata["latency_s"].value > 0

    manifests = JsonManifestIOManager()
    for key in keys:
        brief = manifests.load_manifest(dg.AssetKey("brief"), key)
        concept = manifests.load_manifest(dg.AssetKey("concept"), key)
        assert concept.headline and concept.script
        for term in brief.banned_terms:
            assert term.lower() not in concept.script.lower()

        draft = manifests.load_manifest(dg.AssetKey("draft_image"), key)
        refined = manifests.load_manifest(dg.AssetKey("refined_image"), key)
        draft_png = Image.open(io.BytesIO(read_artifact(draft.artifact)))
        refined_png = Image.open(io.BytesIO(read_artifact(refined.artifact)))
        assert draft_png.format == refined_png.format == "PNG"
        w, h = draft_png.size
        assert w * {"9:16": 16, "1:1": 1, "16:9": 9}[brief.aspect_ratio] == h * {"9:16": 9, "1:1": 1, "16:9": 16}[brief.aspect_ratio]
        assert refined_png.size == EXPECTED_REFINED[brief.aspect_ratio]
        assert np.asarray(refined_png.convert("L")).std() > 10  # a picture, not a flat fill
        assert refined.artifact.uri.endswith(".png")
        assert refined.provenance.seed == brief.seed

        audio = manifests.load_manifest(dg.AssetKey("voiceover"), key)
        with wave.open(io.BytesIO(read_artifact(audio.artifact))) as wav:
            assert wav.getnchannels() == 1 and wav.getsampwidth() == 2
            assert abs(wav.getnframes() / wav.getframerate() - audio.duration_s) < 0.01
        assert abs(audio.loudness_lufs + 16) <= 1 and audio.true_peak_dbtp <= -1.0
        assert len(audio.words) == len(concept.script.split())

        track = manifests.load_manifest(dg.AssetKey("captions"), key)
        cues = parse_webvtt(read_artifact(track.vtt).decode())
        assert cues and all(len(line) <= 42 for cue in cues for line in cue.lines)

        video = manifests.load_manifest(dg.AssetKey("synced_video"), key)
        data = read_artifact(video.artifact)
        boxes = mp4_top_level_boxes(data)
        assert boxes.index("moov") < boxes.index("mdat")
        with av.open(io.BytesIO(data)) as container:
            v, a = container.streams.video[0], container.streams.audio[0]
            assert v.codec_context.name == "h264" and v.codec_context.pix_fmt == "yuv420p"
            assert a.codec_context.name == "aac"
            assert (v.codec_context.width, v.codec_context.height) == (video.width, video.height)
            assert min(video.width, video.height) == 360
            v_dur, a_dur = float(v.duration * v.time_base), float(a.duration * a.time_base)
        assert abs(v_dur - a_dur) <= 1 / 24 + 1e-6
        assert abs(v_dur - (audio.duration_s + 0.5)) <= 1 / 24 + 1e-6


class _FailingForWide:
    """Stands in for the image model: fails on one variant, like a provider error would."""

    def __init__(self, **kwargs):
        from model_adapters.local_image import ProceduralImageGenerator

        self._inner = ProceduralImageGenerator(**kwargs)
        self.info = self._inner.info

    async def generate(self, request):
        if request.width > request.height:
            raise RuntimeError("model crashed on a wide frame")
        return await self._inner.generate(request)

    async def aclose(self):
        await self._inner.aclose()


def test_one_failing_variant_is_named_and_others_keep_their_artifacts(studio_home, one_campaign, monkeypatch):
    kind = registry.ADAPTER_KINDS["local-procedural-image"]
    monkeypatch.setitem(
        registry.ADAPTER_KINDS,
        kind.name,
        registry.AdapterKind(kind.name, kind.task, f"{__name__}:_FailingForWide", kind.version),
    )
    with dg.instance_for_test() as instance:
        keys = register(instance)
        result = run_campaign(instance, keys)
        assert not result.success
        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        message = failure.event_specific_data.error.message
        assert "1 of 4 variants failed in draft_image" in message
        assert "aurora-lamp.banner-de: RuntimeError: model crashed on a wide frame" in message
        # Upstream stages materialized for every variant and stay available.
        assert len(instance.fetch_materializations(dg.AssetKey("concept"), limit=10).records) == 4
    # The three good draft images were stored; nothing half-written.
    stored = list((studio_home / "artifacts").rglob("*.png"))
    assert len(stored) == 3
    assert not list((studio_home / "artifacts").rglob(".tmp-*"))
