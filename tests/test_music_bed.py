"""The worked example of docs/stages.md: a routed stage kind (`music_bed`) composed into a pipeline by YAML."""

import shutil

import dagster as dg
import numpy as np
import pytest
import yaml

from assets.checks import check_loudness, decode_wav
from model_adapters import loudness
from model_adapters.local_music import LocalMusicBed, pad
from model_adapters.tasks import MusicRequest
from model_adapters.types import VideoRequest, frame_size, request_hash
from resources.io_manager import JsonManifestIOManager
from tests.conftest import PROJECT_ROOT, SAMPLE_BRIEFS
from tests.helpers import read_artifact, register, run_campaign, studio_definitions

EXAMPLE = PROJECT_ROOT / "config" / "pipelines" / "examples" / "campaign_music.yaml"


def test_the_bed_is_deterministic_exactly_as_long_as_asked_and_quiet():
    import asyncio

    request = MusicRequest(duration_s=2.5, mood="Warm", palette=("#1b1f3b",), seed=7)
    first = asyncio.run(LocalMusicBed().compose_music(request))
    again = asyncio.run(LocalMusicBed().compose_music(request))
    assert first.wav == again.wav
    samples, rate = decode_wav(first.wav)
    assert rate == 22050 and len(samples) == round(2.5 * 22050) and first.duration_s == pytest.approx(2.5)
    assert loudness.integrated_loudness(samples, rate) == pytest.approx(-23.0, abs=0.5)
    other = pad(request.model_copy(update={"seed": 8}))
    assert not np.allclose(other, pad(request))


@pytest.mark.e2e
def test_a_music_bed_pipeline_from_yaml_mixes_under_the_voice_and_feeds_the_video(studio_home, briefs_folder, tmp_path, monkeypatch):
    folder = tmp_path / "pipelines"
    folder.mkdir()
    shutil.copy(EXAMPLE, folder)
    monkeypatch.setenv("STUDIO_PIPELINES_DIR", str(folder))
    brief = yaml.safe_load((SAMPLE_BRIEFS / "aurora-lamp.yaml").read_text())
    brief.update(campaign_id="lamp-music", pipeline="campaign_music")
    brief["variants"] = [{"id": "one", "locale": "en-US", "aspect_ratio": "1:1", "duration_s": 5}]
    (briefs_folder / "lamp-music.yaml").write_text(yaml.safe_dump(brief))

    definitions = studio_definitions()
    config = {"ops": {"campaign_music__variant_media": {"config": {"synced_video": {"short_side": 240, "fps": 24}}}}}
    with dg.instance_for_test() as instance:
        keys = register(instance, definitions)
        assert keys == ["lamp-music.one"]
        result = run_campaign(instance, keys, run_config=config, definitions=definitions, job_name="produce_campaign_music")
        assert result.success
    load = JsonManifestIOManager().load_manifest
    key = keys[0]

    def manifest(stage):
        return load(dg.AssetKey(["campaign_music", stage]), key)

    voice, mixed = manifest("voiceover"), manifest("voice_with_music")
    voice_samples, rate = decode_wav(read_artifact(voice.artifact))
    mixed_bytes = read_artifact(mixed.artifact)
    mixed_samples, mixed_rate = decode_wav(mixed_bytes)
    assert (mixed_rate, len(mixed_samples)) == (rate, len(voice_samples)) and mixed.words == voice.words
    assert check_loudness(mixed_bytes).passed  # -16 LUFS, true peak under -1 dBTP, measured
    # What is left of the mix once the voice is taken out is the bed, about `bed_db` (-14 dB) under it.
    gain = float(np.dot(mixed_samples, voice_samples) / np.dot(voice_samples, voice_samples))
    bed = mixed_samples - gain * voice_samples
    assert loudness.integrated_loudness(bed, rate) - loudness.integrated_loudness(mixed_samples, rate) == pytest.approx(-14.0, abs=2.0)
    assert mixed.provenance.adapter_id == "local-music" and mixed.provenance.task == "music"

    # The video was made from the mix (its request names the mix's bytes), with the voice's captions.
    brief_doc, refined, captions, video = manifest("brief"), manifest("refined_image"), manifest("captions"), manifest("synced_video")
    width, height = frame_size(brief_doc.aspect_ratio, 240)
    expected = VideoRequest(
        image_sha256=refined.artifact.sha256,
        audio_sha256=mixed.artifact.sha256,
        audio_duration_s=mixed.duration_s,
        cues=captions.cues,
        width=width,
        height=height,
        fps=24,
        tail_s=round(brief_doc.duration_s - mixed.duration_s, 6),
        seed=brief_doc.seed,  # the brief's length
    )
    assert video.provenance.request_hash == request_hash(expected)
