"""`captions`: WebVTT and SRT cut from the voiceover's word timings.

Not a routed task: cue layout is a deterministic function of the word timings
(line and duration rules), not a model's judgement.
"""

import dagster as dg

from assets.common import variant_asset_kwargs
from assets.metadata import artifact_metadata
from assets.partition_runner import run_partitions
from model_adapters.captions import build_cues, caption_excerpt, to_srt, to_webvtt
from resources.artifact_store import BaseArtifactStore
from resources.manifests import AudioArtifact, CaptionTrack

CAPTIONS_CODE_VERSION = "1"


def build_captions_asset() -> dg.AssetsDefinition:
    @dg.asset(
        name="captions",
        **variant_asset_kwargs(
            group="audio",
            kinds={"vtt", "srt"},
            description="Captions from the word timings: <= 42 chars a line, <= 2 lines a cue, cues >= 0.8 s.",
            code_version=CAPTIONS_CODE_VERSION,
        ),
    )
    def captions(
        context: dg.AssetExecutionContext, artifacts: BaseArtifactStore, voiceover: dict[str, AudioArtifact]
    ) -> dict[str, CaptionTrack]:
        async def work(partition_key: str):
            audio = voiceover[partition_key]
            cues = tuple(build_cues(audio.words))
            vtt = artifacts.put(to_webvtt(cues).encode(), extension=".vtt", media_type="text/vtt")
            srt = artifacts.put(to_srt(cues).encode(), extension=".srt", media_type="application/x-subrip")
            track = CaptionTrack(partition_key=partition_key, vtt=vtt, srt=srt, cues=cues, source_audio_sha256=audio.artifact.sha256)
            metadata = {
                "cues": len(cues),
                "excerpt": dg.MetadataValue.md(caption_excerpt(cues)),
                **artifact_metadata(vtt, "vtt"),
                **artifact_metadata(srt, "srt"),
            }
            return track, metadata

        return run_partitions(context, work)

    return captions
