"""Asset checks: they pass on a good campaign and fail, saying why, on bad artifacts.

The session's sample campaign (conftest's `sample_campaign`, every check in
the run) is read through a view with the module's own instance; the bad cases are crafted bytes fed to the check functions, plus
two runs through Dagster: an over-budget ledger (a non-blocking check that
fails) and a clipped voiceover (a blocking check that stops captions and the
video from being made).
"""

import dataclasses
import io
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import dagster as dg
import numpy as np
import pytest
from dagster._core.storage.event_log.base import PartitionKeyFilter
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from PIL import Image

from assets.checks import (
    MAX_CHARS_PER_LINE,
    SEMANTIC_ALIGNMENT_THRESHOLD,
    caption_text,
    check_av_sync,
    check_banned_terms,
    check_budget,
    check_captions,
    check_duration,
    check_loudness,
    check_png,
    check_semantic_alignment,
)
from model_adapters import registry
from model_adapters.captions import parse_webvtt, to_webvtt
from model_adapters.local_video import move_moov_to_front
from model_adapters.media.wav import encode_wav, read_wav, to_pcm16
from resources.brief_schema import load_brief
from resources.policies.budget import CampaignBudget
from resources.policies.shared_limits import shared_limits
from tests.conftest import SAMPLE_BRIEFS, SAMPLE_CAMPAIGN
from tests.helpers import read_artifact, register, run_campaign, sample_campaign_view, studio_definitions

CHECKS = {
    ("draft_image", "png_valid"),
    ("refined_image", "png_valid"),
    ("voiceover", "loudness_within_spec"),
    ("voiceover", "fits_duration"),
    ("voiceover", "speech_intelligible"),
    ("captions", "caption_rules"),
    ("captions", "no_banned_terms"),
    ("concept", "no_banned_terms"),
    ("concept", "on_brief"),
    ("synced_video", "av_in_sync"),
    ("synced_video", "duration_matches_brief"),
    ("synced_video", "campaign_within_budget"),
}
BUDGET_CHECK = dg.AssetCheckKey(dg.AssetKey("synced_video"), "campaign_within_budget")
budget_check_job = dg.define_asset_job("budget_check", selection=dg.AssetSelection.checks(BUDGET_CHECK))


def run_job(definitions, name, instance, keys):
    """A job of `definitions` over the partition range keys[0]..keys[-1] (like `run_campaign`)."""
    return definitions.resolve_job_def(name).execute_in_process(
        instance=instance,
        tags={ASSET_PARTITION_RANGE_START_TAG: keys[0], ASSET_PARTITION_RANGE_END_TAG: keys[-1]},
        raise_on_error=False,
    )


def evaluations(result) -> list[dg.AssetCheckEvaluation]:
    return result.get_asset_check_evaluations()


@pytest.fixture(scope="module")
def campaign(sample_campaign, tmp_path_factory):
    """aurora-lamp (4 variants, every check in the run), the session's: a view with its own instance."""
    with sample_campaign_view(sample_campaign, tmp_path_factory.mktemp("checks"), extra_jobs=[budget_check_job]) as campaign:
        yield campaign


def manifest(campaign, asset: str, key: str | None = None):
    return campaign.load(dg.AssetKey(asset), key or campaign.keys[0])


# --- crafted artifacts ---------------------------------------------------------------------


def png_bytes(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 40)).save(buffer, format=fmt)
    return buffer.getvalue()


def wav_bytes(samples: np.ndarray, rate: int) -> bytes:
    return encode_wav(to_pcm16(samples), rate)  # rounds, clips at full scale


def hard_clipped(wav: bytes, gain_db: float = 18.0) -> bytes:
    """The same recording pushed `gain_db` louder and hard-clipped at full scale."""
    samples, rate = read_wav(wav)
    return wav_bytes(np.clip(samples * 10 ** (gain_db / 20), -1.0, 1.0), rate)


def mp4_bytes(video_s: float, audio_s: float, *, fps: int = 24, faststart: bool = True) -> bytes:
    """A tiny H.264 + AAC MP4 whose video and audio streams last `video_s` and `audio_s`."""
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "clip.mp4")
        with av.open(path, "w") as out:
            video = out.add_stream("libx264", rate=fps)
            video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
            audio = out.add_stream("aac", rate=48000)
            audio.layout = "mono"
            for index in range(round(video_s * fps)):
                frame = av.VideoFrame.from_ndarray(np.full((64, 64, 3), index * 7 % 256, np.uint8), format="rgb24")
                frame.pts = index
                out.mux(video.encode(frame))
            out.mux(video.encode(None))
            total = round(audio_s * 48000)
            tone = (0.2 * np.sin(2 * np.pi * 440 * np.arange(total) / 48000)).astype(np.float32)
            for start in range(0, total, 1024):
                frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(tone[None, start : start + 1024]), format="fltp", layout="mono")
                frame.sample_rate, frame.pts, frame.time_base = 48000, start, Fraction(1, 48000)
                out.mux(audio.encode(frame))
            out.mux(audio.encode(None))
        data = Path(path).read_bytes()
    return move_moov_to_front(data) if faststart else data


# --- a good campaign -------------------------------------------------------------------------


@pytest.mark.e2e
def test_every_check_passes_on_a_good_campaign_once_per_partition(campaign):
    assert campaign.result.success
    found = evaluations(campaign.result)
    assert {(e.asset_key.to_user_string(), e.check_name) for e in found} == CHECKS
    for asset, name in CHECKS:
        mine = [e for e in found if (e.asset_key.to_user_string(), e.check_name) == (asset, name)]
        # One evaluation per variant, each recorded against its own partition.
        assert sorted(e.partition for e in mine) == sorted(campaign.keys), (asset, name)
        for e in mine:
            assert e.passed, e.description
            assert e.partition in e.description and f"{name} passed" in e.description
            assert e.target_materialization_data is not None
    # The instance holds a result per partition (none left "planned").
    for key in campaign.keys:
        records = campaign.instance.event_log_storage.get_latest_asset_check_execution_by_key(
            [dg.AssetCheckKey(dg.AssetKey(a), n) for a, n in CHECKS], partition_filter=PartitionKeyFilter(key=key)
        )
        assert {r.status.value for r in records.values()} == {"SUCCEEDED"}, key
    print(f"\ncampaign with checks and roll-up: {campaign.seconds:.1f} s")


@pytest.mark.e2e
def test_check_metadata_holds_measurements(campaign):
    by_check = {(e.asset_key.to_user_string(), e.check_name, e.partition): e for e in evaluations(campaign.result)}
    key = campaign.keys[0]
    loud = by_check[("voiceover", "loudness_within_spec", key)].metadata
    assert abs(loud["loudness_lufs"].value + 16) <= 1 and loud["true_peak_dbtp"].value <= -1
    sync = by_check[("synced_video", "av_in_sync", key)].metadata
    assert sync["drift_ms"].value <= sync["frame_ms"].value and sync["boxes"].value.index("moov") < sync["boxes"].value.index("mdat")
    on_brief = by_check[("concept", "on_brief", key)].metadata
    assert on_brief["cosine"].value >= SEMANTIC_ALIGNMENT_THRESHOLD
    refined = by_check[("refined_image", "png_valid", key)].metadata
    assert min(refined["width"].value, refined["height"].value) >= 1080


# --- images ----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_png_check_on_stored_images(campaign):
    for key in campaign.keys:
        aspect = manifest(campaign, "brief", key).aspect_ratio
        for asset, min_side in (("draft_image", None), ("refined_image", 1080)):
            image = manifest(campaign, asset, key)
            passed, metadata = check_png(
                read_artifact(image.artifact), aspect, declared_size=(image.width, image.height), min_short_side=min_side
            )
            assert passed, metadata["problems"]


def test_png_check_fails_on_wrong_size_ratio_and_format():
    passed, metadata = check_png(png_bytes(1000, 1000), "9:16", declared_size=(1080, 1920), min_short_side=1080)
    assert not passed
    problems = " | ".join(metadata["problems"])
    assert "manifest says 1080x1920" in problems and "not exactly 9:16" in problems and "short side 1000 px < 1080 px" in problems

    assert check_png(png_bytes(1080, 1920), "9:16", min_short_side=1080).passed
    assert not check_png(png_bytes(1080, 1921), "9:16").passed  # off by one pixel is not the ratio
    small = check_png(png_bytes(540, 960), "9:16", min_short_side=1080)
    assert not small.passed and small.metadata["problems"] == ["short side 540 px < 1080 px"]
    jpeg = check_png(png_bytes(1080, 1920, "JPEG"), "9:16")
    assert not jpeg.passed and jpeg.metadata["problems"] == ["is JPEG, not PNG"]
    garbage = check_png(b"\x89PNG\r\n\x1a\n" + b"\0" * 64, "1:1")
    assert not garbage.passed and "does not decode" in garbage.metadata["problems"][0]


# --- loudness --------------------------------------------------------------------------------


@pytest.mark.e2e
def test_loudness_check_measures_the_bytes(campaign):
    audio = manifest(campaign, "voiceover")
    good = read_artifact(audio.artifact)
    passed, metadata = check_loudness(good)
    assert passed, metadata["problems"]
    assert abs(metadata["loudness_lufs"].value - audio.loudness_lufs) < 0.05

    # The same speech, 18 dB hotter and hard-clipped: far too loud, peaks at full scale.
    passed, metadata = check_loudness(hard_clipped(good))
    assert not passed
    assert metadata["loudness_lufs"].value > -15 and metadata["true_peak_dbtp"].value > -1
    assert metadata["samples_at_full_scale"] > 100
    assert any("integrated loudness" in p for p in metadata["problems"])
    assert any("true peak" in p for p in metadata["problems"])


def test_loudness_check_fails_on_a_synthetic_clipped_tone():
    rate = 22050
    t = np.arange(3 * rate) / rate
    clipped = np.clip(3.0 * np.sin(2 * np.pi * 220 * t), -1.0, 1.0)
    passed, metadata = check_loudness(wav_bytes(clipped, rate))
    assert not passed and len(metadata["problems"]) == 2
    quiet = check_loudness(wav_bytes(0.01 * np.sin(2 * np.pi * 220 * t), rate))
    assert not quiet.passed and "not within 1 LU of -16 LUFS" in quiet.metadata["problems"][0]
    assert not check_loudness(b"RIFF....WAVEnot really").passed


# --- video -----------------------------------------------------------------------------------


@pytest.mark.e2e
def test_av_sync_check_on_the_stored_video(campaign):
    video = manifest(campaign, "synced_video")
    passed, metadata = check_av_sync(read_artifact(video.artifact))
    assert passed, metadata["problems"]
    assert metadata["fps"].value == 24


def test_av_sync_check_fails_on_a_second_of_drift():
    assert check_av_sync(mp4_bytes(2.0, 2.0)).passed
    passed, metadata = check_av_sync(mp4_bytes(3.0, 2.0))
    assert not passed
    assert 990 <= metadata["drift_ms"].value <= 1010
    assert len(metadata["problems"]) == 1 and "differ by" in metadata["problems"][0]


@pytest.mark.e2e
def test_every_video_lasts_the_briefs_duration_within_one_frame(campaign):
    brief = load_brief(SAMPLE_BRIEFS / f"{SAMPLE_CAMPAIGN}.yaml")
    for key in campaign.keys:
        variant = brief.variant(key.split(".", 1)[1])
        mp4 = read_artifact(manifest(campaign, "synced_video", key).artifact)
        with av.open(io.BytesIO(mp4)) as container:
            video = container.streams.video[0]
            frames = sum(1 for _ in container.demux(video) if _.size)
            fps = float(video.average_rate)
        # Decoded, not declared: the frame count is the picture's length.
        assert abs(frames / fps - variant.duration_s) <= 1 / fps + 1e-6, (key, frames, fps, variant.duration_s)
        passed, metadata = check_duration(mp4, duration_s=variant.duration_s)
        assert passed, metadata["problems"]
        voice = manifest(campaign, "voiceover", key)
        assert voice.duration_s <= variant.duration_s - 0.5 + 1e-6  # the picture holds at least min_tail_s


def test_duration_check_fails_a_frame_and_a_half_off():
    assert check_duration(mp4_bytes(2.0, 2.0), duration_s=2.0).passed
    assert check_duration(mp4_bytes(2.0 + 1 / 24, 2.0), duration_s=2.0).passed  # one frame at 24 fps
    passed, metadata = check_duration(mp4_bytes(2.0 + 2 / 24, 2.0), duration_s=2.0)
    assert not passed
    assert len(metadata["problems"]) == 1 and metadata["problems"][0].startswith("video lasts 2.083 s, not the brief's 2 s")
    passed, metadata = check_duration(mp4_bytes(2.0, 2.0), duration_s=3.0)
    assert not passed and len(metadata["problems"]) == 2


def test_av_sync_check_fails_when_moov_is_after_mdat():
    passed, metadata = check_av_sync(mp4_bytes(1.0, 1.0, faststart=False))
    assert not passed and metadata["problems"] == ["moov comes after mdat (not faststart)"]


# --- captions --------------------------------------------------------------------------------


@pytest.mark.e2e
def test_caption_check_on_stored_captions_and_each_broken_rule(campaign):
    key = campaign.keys[0]
    words = manifest(campaign, "voiceover", key).words
    vtt = read_artifact(manifest(campaign, "captions", key).vtt).decode()
    passed, metadata = check_captions(vtt, words)
    assert passed, metadata["problems"]
    cues = parse_webvtt(vtt)
    assert len(cues) >= 2

    def broken(index: int, **changes) -> list[str]:
        edited = list(cues)
        edited[index] = edited[index].model_copy(update=changes)
        passed, metadata = check_captions(to_webvtt(edited), words)
        assert not passed
        return metadata["problems"]

    # The first cue's words on one line of > 42 characters (padded with the next cue's words).
    words_of_first_two = " ".join(cues[0].lines + cues[1].lines)
    edited = [cues[0].model_copy(update={"lines": (words_of_first_two,)}), *cues[2:]]
    passed, metadata = check_captions(to_webvtt(edited), words)
    assert len(words_of_first_two) > MAX_CHARS_PER_LINE and not passed
    assert metadata["problems"] == [f"cue 1 ({cues[0].start_s:.3f}s): line of {len(words_of_first_two)} chars > 42: {words_of_first_two!r}"]

    split = " ".join(cues[0].lines).split()
    third = len(split) // 3
    three_lines = (" ".join(split[:third]), " ".join(split[third : 2 * third]), " ".join(split[2 * third :]))
    assert broken(0, lines=three_lines) == [f"cue 1 ({cues[0].start_s:.3f}s): 3 lines > 2"]
    assert broken(0, end_s=cues[0].start_s + 0.5) == [f"cue 1 ({cues[0].start_s:.3f}s): lasts 0.500s < 0.8s"]
    # 120 ms late for its first word (even if another word starts near the new time).
    late = broken(1, start_s=round(cues[1].start_s + 0.12, 3))
    assert late == [f"cue 2 ({cues[1].start_s + 0.12:.3f}s): starts 120 ms from the start of its first word (> 80 ms)"]
    assert "is not the next spoken words" in broken(1, lines=("Something", "nobody said"))[0]
    # The last cue may be short.
    assert check_captions(to_webvtt([*cues[:-1], cues[-1].model_copy(update={"end_s": cues[-1].start_s + 0.3})]), words).passed


# --- banned terms and alignment ----------------------------------------------------------------


def test_banned_terms_are_whole_words_any_case():
    banned = ("cheap", "guaranteed")
    passed, metadata = check_banned_terms({"headline": "Aurora Lamp", "script": "Warm light, and CHEAP to run."}, banned)
    assert not passed and metadata["problems"] == ["banned term in script: 'cheap'"]
    assert check_banned_terms({"script": "The cheapest? No: the warmest."}, banned).passed
    assert not check_banned_terms(
        {"captions": caption_text(parse_webvtt("WEBVTT\n\n00:00.000 --> 00:01.000\nResults Guaranteed!\n"))}, banned
    ).passed


@pytest.mark.e2e
def test_banned_term_in_a_stored_script_fails(campaign):
    concept = manifest(campaign, "concept")
    brief = manifest(campaign, "brief")
    assert check_banned_terms({"script": concept.script, "headline": concept.headline}, brief.banned_terms).passed
    tainted = concept.script + " And it is cheap."
    passed, metadata = check_banned_terms({"script": tainted, "headline": concept.headline}, brief.banned_terms)
    assert not passed and metadata["problems"] == ["banned term in script: 'cheap'"]


@pytest.mark.e2e
def test_semantic_alignment_passes_the_scripts_and_fails_an_off_topic_one(campaign):
    for key in campaign.keys:
        brief, concept = manifest(campaign, "brief", key), manifest(campaign, "concept", key)
        passed, metadata = check_semantic_alignment(concept.script, brief.product, brief.audience, brief.tone)
        assert passed and metadata["cosine"].value > 0.4, (key, metadata)
    brief = manifest(campaign, "brief")
    off_topic = (
        "Interest rates on fixed mortgages fell again this quarter, so refinancing before the autumn "
        "deadline could lower your monthly payment. Speak to an adviser today."
    )
    passed, metadata = check_semantic_alignment(off_topic, brief.product, brief.audience, brief.tone)
    assert not passed and metadata["cosine"].value < 0.2
    assert "off brief" in metadata["problems"][0]


@pytest.mark.e2e
def test_the_speech_check_transcribes_a_voice_once(campaign, tmp_path, monkeypatch):
    """Whisper's transcript of a WAV is kept beside the artifacts under its `transcript_key`:
    a second check of the same bytes reads it back (same verdict, no Whisper); a damaged record is
    transcribed again. A store of its own: the session's studio is shared."""
    from assets.stage_kinds.voiceover import SPEECH_INTELLIGIBLE, TRANSCRIPTS, VoiceSettings
    from assets.stages import StageCheckInput
    from model_adapters import local_transcribe
    from resources.artifact_store import FilesystemArtifactStore, entry_key

    key = next(k for k in campaign.keys if manifest(campaign, "brief", k).locale.startswith("en"))
    in_run = next(
        e
        for e in evaluations(campaign.result)
        if (e.asset_key.to_user_string(), e.check_name, e.partition) == ("voiceover", "speech_intelligible", key)
    )
    assert isinstance(in_run.metadata["transcript_reused"].value, bool)
    voice = manifest(campaign, "voiceover", key)
    store = FilesystemArtifactStore(root=str(tmp_path / "artifacts"))
    copied = store.put(read_artifact(voice.artifact), extension=".wav", media_type="audio/wav")
    assert copied.sha256 == voice.artifact.sha256
    item = StageCheckInput(
        store,
        manifest(campaign, "brief", key),
        voice.model_copy(update={"artifact": copied}),
        {"concept": manifest(campaign, "concept", key)},
        VoiceSettings(),
    )
    heard = []
    transcribe = local_transcribe.WhisperTranscriber.transcribe
    monkeypatch.setattr(local_transcribe.WhisperTranscriber, "transcribe", lambda self, *a: (heard.append(a), transcribe(self, *a))[1])

    first = SPEECH_INTELLIGIBLE.evaluate(item)
    second = SPEECH_INTELLIGIBLE.evaluate(item)
    assert len(heard) == 1 and first.passed and second.passed
    assert (first.metadata["transcript_reused"], second.metadata["transcript_reused"]) == (False, True)
    assert second.metadata["word_error_rate"] == first.metadata["word_error_rate"] == in_run.metadata["word_error_rate"]
    assert second.metadata["transcript"] == first.metadata["transcript"]

    record = store.root_path / entry_key(TRANSCRIPTS, local_transcribe.get_transcriber().transcript_key(voice.artifact.sha256, "en"))
    record.write_bytes(b'{"text": "truncat')
    third = SPEECH_INTELLIGIBLE.evaluate(item)
    assert len(heard) == 2 and third.metadata["transcript_reused"] is False
    assert third.metadata["word_error_rate"] == first.metadata["word_error_rate"]
    assert SPEECH_INTELLIGIBLE.evaluate(item).metadata["transcript_reused"] is True  # rewritten whole


# --- budget ----------------------------------------------------------------------------------


def test_budget_check_function():
    assert check_budget(24.99, 25).passed
    passed, metadata = check_budget(25.5, 25, campaign_id="aurora-lamp")
    assert not passed and metadata["problems"] == ["campaign 'aurora-lamp' spent $25.5000, over its budget of $25.00"]


@pytest.mark.e2e
def test_over_budget_campaign_fails_its_check_through_dagster(campaign):
    ledger = shared_limits(f"sqlite:///{campaign.home / 'limits.sqlite'}")
    budget = CampaignBudget(SAMPLE_CAMPAIGN, 100.0)
    try:
        # Spend recorded the way the router records it: reserve, then settle at the actual cost.
        ledger.settle(SAMPLE_CAMPAIGN, ledger.reserve(budget, 30.0), 30.0)
        result = run_job(campaign.definitions, "budget_check", campaign.instance, campaign.keys)
        # Not blocking: the step succeeds, the evaluations fail.
        assert result.success
        found = evaluations(result)
        assert sorted(e.partition for e in found) == sorted(campaign.keys)
        for e in found:
            assert not e.passed and not e.blocking
            assert e.description.startswith(f"synced_video [{e.partition}]: campaign_within_budget failed")
            assert "over its budget of $25.00" in e.description
            assert e.metadata["spent_usd"].value >= 30 and e.metadata["budget_usd"].value == 25
    finally:  # the spend taken back, for the module's other tests
        ledger.settle(SAMPLE_CAMPAIGN, ledger.reserve(budget, 0.0), -30.0)


# --- a blocking check stops the run ------------------------------------------------------------


class _ClippingVoice:
    """Stands in for the voice model: real espeak speech, then 18 dB of gain and hard clipping.
    It reports the loudness the clean take had, as a careless provider might."""

    def __init__(self, **kwargs):
        from model_adapters.local_voice import EspeakVoiceAdapter

        self._inner = EspeakVoiceAdapter(**kwargs)
        self.info = self._inner.info

    async def synthesize(self, request):
        result = await self._inner.synthesize(request)
        return dataclasses.replace(result, wav=hard_clipped(result.wav))

    async def aclose(self):
        return None


@pytest.mark.e2e
def test_failing_blocking_check_stops_downstream_assets(campaign, tmp_path, monkeypatch):
    # A copy of the campaign's studio (artifacts, cached model answers, manifests) and a fresh
    # instance, so the module's campaign is left as it was; cached stages return at once.
    home = tmp_path / "studio"
    shutil.copytree(campaign.home, home)
    (home / "dagster").mkdir()
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    # Every voice of the local route (Piper, then espeak) replaced; another adapter version: a
    # cache miss, so the clipping voice is really called.
    for name in ("local-piper", "local-espeak"):
        kind = registry.ADAPTER_KINDS[name]
        monkeypatch.setitem(
            registry.ADAPTER_KINDS,
            kind.name,
            dataclasses.replace(kind, target=f"{__name__}:_ClippingVoice", version=kind.version + "-clipping"),
        )
    key = f"{SAMPLE_CAMPAIGN}.feed-en"
    with dg.instance_for_test() as instance:
        register(instance)
        result = run_campaign(instance, [key], definitions=studio_definitions())
        assert not result.success

        failure = next(e for e in result.all_events if e.event_type_value == "STEP_FAILURE")
        # The check runs inside the model step, as soon as the voiceover is made.
        assert failure.step_key == "variant_media"
        assert "blocking asset check failed" in failure.event_specific_data.error.message
        (evaluation,) = [e for e in evaluations(result) if e.check_name == "loudness_within_spec"]
        assert not evaluation.passed and evaluation.blocking and evaluation.partition == key
        assert evaluation.description.startswith(f"voiceover [{key}]: loudness_within_spec failed: integrated loudness")
        # The manifest repeats the clean take's figures; the check measured the bytes.
        assert abs(evaluation.metadata["manifest_loudness_lufs"].value + 16) <= 1
        assert evaluation.metadata["loudness_lufs"].value > -15

        # The voiceover was made, but nothing downstream of it ran.
        materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
        assert {"concept", "draft_image", "refined_image", "voiceover"} <= materialized
        assert not materialized & {"captions", "synced_video", "campaign_rollup"}
        succeeded = {e.step_key for e in result.all_events if e.event_type_value == "STEP_SUCCESS"}
        assert not succeeded & {"variant_media", "campaign_rollup"}
        checked = {(e.asset_key.to_user_string(), e.check_name) for e in evaluations(result)}
        assert not {c for c in checked if c[0] in ("captions", "synced_video")}
