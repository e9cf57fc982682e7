"""`captions`: WebVTT and SRT cut from the voiceover's word timings.

Not a routed task: cue layout is a deterministic function of the word timings
(line and duration rules), not a model's judgement.
"""

import dagster as dg

from assets.metadata import artifact_metadata
from assets.stages import Stage, StageCall
from model_adapters.captions import build_cues, caption_excerpt, to_srt, to_webvtt
from resources.manifests import CaptionTrack


async def cut_captions(call: StageCall):
    audio, artifacts = call.inputs["voiceover"], call.artifacts
    cues = tuple(build_cues(audio.words))
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


CAPTIONS = Stage(
    name="captions",
    upstream=("voiceover",),
    task=None,
    group="audio",
    kinds=frozenset({"vtt", "srt"}),
    description="Captions from the word timings: <= 42 chars a line, <= 2 lines a cue, cues >= 0.8 s.",
    work=cut_captions,
)
