"""`captions`: WebVTT and SRT cut from the voiceover's word timings.

Not a routed task: cue layout is a deterministic function of the word timings
(line and duration rules), not a model's judgement. The same settings lay the
cues out and check them.
"""

import dagster as dg

from assets.checks import CUE_WORD_START_TOLERANCE_S, caption_text, check_banned_terms, check_captions
from assets.metadata import artifact_metadata
from assets.stages import CheckKind, CheckOutcome, StageCall, StageCheckInput, StageKind, StageSettings
from model_adapters.captions import MAX_CHARS_PER_LINE, MAX_LINES, MIN_CUE_S, build_cues, caption_excerpt, parse_webvtt, to_srt, to_webvtt
from resources.manifests import AudioArtifact, CaptionTrack


class CaptionSettings(StageSettings):
    max_chars_per_line: int = MAX_CHARS_PER_LINE
    max_lines: int = MAX_LINES
    min_cue_s: float = MIN_CUE_S
    # How far a cue may start from its first word's start (the check's tolerance).
    cue_start_tolerance_s: float = CUE_WORD_START_TOLERANCE_S


async def cut_captions(call: StageCall):
    audio, artifacts, settings = call.inputs["voiceover"], call.artifacts, call.settings
    cues = tuple(build_cues(audio.words, settings.max_chars_per_line, settings.max_lines, settings.min_cue_s))
    vtt = await call.off_loop(artifacts.put, to_webvtt(cues).encode(), extension=".vtt", media_type="text/vtt")
    srt = await call.off_loop(artifacts.put, to_srt(cues).encode(), extension=".srt", media_type="application/x-subrip")
    track = CaptionTrack(partition_key=call.partition_key, vtt=vtt, srt=srt, cues=cues, source_audio_sha256=audio.artifact.sha256)
    metadata = {
        "cues": len(cues),
        "excerpt": dg.MetadataValue.md(caption_excerpt(cues)),
        **artifact_metadata(vtt, "vtt"),
        **artifact_metadata(srt, "srt"),
    }
    return track, metadata


def _caption_rules(item: StageCheckInput) -> CheckOutcome:
    track: CaptionTrack = item.manifest
    words, settings = item.inputs["voiceover"].words, item.settings
    results = {
        name: check_captions(
            item.artifacts.get(ref).decode("utf-8"),
            words,
            max_chars_per_line=settings.max_chars_per_line,
            max_lines=settings.max_lines,
            min_cue_s=settings.min_cue_s,
            start_tolerance_s=settings.cue_start_tolerance_s,
        )
        for name, ref in (("vtt", track.vtt), ("srt", track.srt))
    }
    problems = [f"{name}: {p}" for name, (_, md) in results.items() for p in md["problems"]]
    metadata = {k: v for k, v in results["vtt"].metadata.items() if k != "problems"}
    return CheckOutcome(not problems, {**metadata, "problems": problems})


def _banned_terms(item: StageCheckInput) -> CheckOutcome:
    track: CaptionTrack = item.manifest
    texts = {
        name: caption_text(parse_webvtt(item.artifacts.get(ref).decode("utf-8"))) for name, ref in (("vtt", track.vtt), ("srt", track.srt))
    }
    return check_banned_terms(texts, item.brief.banned_terms)


CAPTIONS = StageKind(
    name="captions",
    description="Captions from the word timings: <= 42 chars a line, <= 2 lines a cue, cues >= 0.8 s.",
    inputs={"voiceover": AudioArtifact},
    output=CaptionTrack,
    task=None,
    work=cut_captions,
    settings=CaptionSettings,
    checks=(
        CheckKind(
            "caption_rules",
            True,
            lambda s: (
                f"From the stored WebVTT and SRT: <= {s.max_chars_per_line} chars a line, <= {s.max_lines} lines a cue, "
                f"cues >= {s.min_cue_s:g} s except the last, each starting within {s.cue_start_tolerance_s * 1000:.0f} ms of a word start."
            ),
            _caption_rules,
        ),
        CheckKind(
            "no_banned_terms",
            True,
            lambda s: "No banned term of the brief (whole word, any case) in the stored caption text (WebVTT and SRT).",
            _banned_terms,
        ),
    ),
    kinds=frozenset({"vtt", "srt"}),
    rollup_files=lambda stage, manifest: {f"{stage}_vtt": manifest.vtt, f"{stage}_srt": manifest.srt},
)

KINDS = (CAPTIONS,)
