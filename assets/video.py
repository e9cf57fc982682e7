"""`synced_video`: the refined still with a slow camera move, the voiceover as AAC, captions burned in."""

import dagster as dg

from assets.common import TORCH_POOL, variant_asset_kwargs
from assets.metadata import artifact_metadata, provenance_metadata
from assets.partition_runner import run_routed_partitions, variant_context
from model_adapters.types import VideoRequest, VideoResult, frame_size
from resources.artifact_store import BaseArtifactStore
from resources.manifests import AudioArtifact, CaptionTrack, ImageArtifact, VariantBriefDoc, VideoArtifact
from resources.model_router import ModelRouter


class VideoSettings(dg.Config):
    short_side: int = 720  # 720p class: 720x1280, 720x720, 1280x720
    fps: int = 30
    tail_s: float = 0.5  # picture held after the voice ends


def build_synced_video_asset(code_version: str) -> dg.AssetsDefinition:
    @dg.asset(
        name="synced_video",
        **variant_asset_kwargs(
            group="video",
            kinds={"mp4"},
            description="H.264/AAC MP4 (faststart): camera move over the refined still, voiceover, burned-in captions, VTT sidecar.",
            code_version=code_version,
            pool=TORCH_POOL,
        ),
    )
    def synced_video(
        context: dg.AssetExecutionContext,
        config: VideoSettings,
        router: ModelRouter,
        artifacts: BaseArtifactStore,
        brief: dict[str, VariantBriefDoc],
        refined_image: dict[str, ImageArtifact],
        voiceover: dict[str, AudioArtifact],
        captions: dict[str, CaptionTrack],
    ) -> dict[str, VideoArtifact]:
        async def work(session, partition_key: str):
            spec, still, audio, track = brief[partition_key], refined_image[partition_key], voiceover[partition_key], captions[partition_key]
            width, height = frame_size(spec.aspect_ratio, config.short_side)
            request = VideoRequest(
                image_sha256=still.artifact.sha256,
                audio_sha256=audio.artifact.sha256,
                audio_duration_s=audio.duration_s,
                cues=track.cues,
                width=width,
                height=height,
                fps=config.fps,
                tail_s=config.tail_s,
                seed=spec.seed,
            )
            routed = await session.call(
                "video",
                request,
                artifacts.get(still.artifact),
                artifacts.get(audio.artifact),
                seed=spec.seed,
                variant=variant_context(spec),
            )
            result: VideoResult = routed.value
            drift = abs(result.video_duration_s - result.audio_duration_s)
            if drift > 1.0 / config.fps + 1e-6:
                raise ValueError(f"{routed.provenance.adapter_id}: audio and video differ by {drift:.3f}s, more than one frame")
            manifest = VideoArtifact(
                partition_key=partition_key,
                artifact=artifacts.put(result.mp4, extension=".mp4", media_type="video/mp4"),
                captions_vtt=track.vtt,
                width=result.width,
                height=result.height,
                fps=result.fps,
                duration_s=result.duration_s,
                video_duration_s=result.video_duration_s,
                audio_duration_s=result.audio_duration_s,
                drift_s=drift,
                provenance=routed.provenance,
            )
            metadata = {
                "duration_s": dg.MetadataValue.float(round(result.duration_s, 3)),
                "drift_ms": dg.MetadataValue.float(round(drift * 1000, 2)),
                "size": f"{result.width}x{result.height}@{result.fps}",
                "loudness_lufs": dg.MetadataValue.float(round(audio.loudness_lufs, 2)),
                "realtime_factor": dg.MetadataValue.float(round(result.duration_s / max(routed.provenance.latency_s, 1e-6), 2)),
                **artifact_metadata(manifest.artifact),
                **artifact_metadata(track.vtt, "captions_vtt"),
                **provenance_metadata(routed.provenance),
            }
            return manifest, metadata

        return run_routed_partitions(context, router, artifacts, work)

    return synced_video
