"""`video`: the refined still with a slow camera move, the voiceover as AAC, captions burned in."""

import dagster as dg

from assets.checks import MAX_DRIFT_FRAMES, check_av_sync, check_duration
from assets.metadata import artifact_metadata, provenance_metadata
from assets.stages import CheckKind, CheckOutcome, StageCall, StageCheckInput, StageKind, StageSettings
from model_adapters.tasks import TASK_SPECS
from model_adapters.types import VideoRequest, VideoResult, frame_size
from resources.manifests import AudioArtifact, CaptionTrack, ImageArtifact, VideoArtifact


class VideoSettings(StageSettings):
    short_side: int = 720  # 720p class: 720x1280, 720x720, 1280x720
    fps: int = 30
    max_drift_frames: float = MAX_DRIFT_FRAMES  # audio and video stream lengths may differ by this much


async def compose_video(call: StageCall):
    spec, settings, artifacts = call.spec, call.settings, call.artifacts
    still, audio, track = call.inputs["image"], call.inputs["voiceover"], call.inputs["captions"]
    width, height = frame_size(spec.aspect_ratio, settings.short_side)
    # The brief's duration is the video's: the picture is held after the voice for the rest
    # (the voiceover stage fitted the speech, and its `fits_duration` check held it to that).
    tail_s = spec.duration_s - audio.duration_s
    if tail_s < 0:
        raise ValueError(f"the voiceover lasts {audio.duration_s:.3f} s, longer than the brief's {spec.duration_s:g} s")
    request = VideoRequest(
        image_sha256=still.artifact.sha256,
        audio_sha256=audio.artifact.sha256,
        audio_duration_s=audio.duration_s,
        cues=track.cues,
        width=width,
        height=height,
        fps=settings.fps,
        tail_s=round(tail_s, 6),
        seed=spec.seed,
    )
    image_png = await call.input_bytes("image", still.artifact)
    audio_wav = await call.input_bytes("voiceover", audio.artifact)
    routed = await call.call_model(request, image_png, audio_wav)
    result: VideoResult = routed.value
    drift = abs(result.video_duration_s - result.audio_duration_s)
    if drift > settings.max_drift_frames / settings.fps + 1e-6:
        raise ValueError(
            f"{routed.provenance.adapter_id}: audio and video differ by {drift:.3f}s, more than {settings.max_drift_frames:g} frame"
        )
    manifest = VideoArtifact(
        partition_key=call.partition_key,
        artifact=await call.off_loop(artifacts.put, result.mp4, extension=".mp4", media_type="video/mp4"),
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
        **artifact_metadata(manifest.artifact),
        **artifact_metadata(track.vtt, "captions_vtt"),
        **provenance_metadata(routed.provenance),
    }
    if not routed.provenance.cache_hit and routed.provenance.latency_s > 0:  # a cache hit took no time to make
        metadata["realtime_factor"] = dg.MetadataValue.float(round(result.duration_s / routed.provenance.latency_s, 2))
    return manifest, metadata


def _duration_matches_brief(item: StageCheckInput) -> CheckOutcome:
    video: VideoArtifact = item.manifest
    return check_duration(item.artifacts.get(video.artifact), duration_s=item.brief.duration_s)


def _av_in_sync(item: StageCheckInput) -> CheckOutcome:
    video: VideoArtifact = item.manifest
    return check_av_sync(item.artifacts.get(video.artifact), fps=video.fps, max_drift_frames=item.settings.max_drift_frames)


VIDEO = StageKind(
    name="video",
    description="H.264/AAC MP4 (faststart): camera move over the refined still, voiceover, burned-in captions, VTT sidecar.",
    inputs={"image": ImageArtifact, "voiceover": AudioArtifact, "captions": CaptionTrack},
    output=VideoArtifact,
    task=TASK_SPECS["video"],
    work=compose_video,
    settings=VideoSettings,
    checks=(
        CheckKind(
            "av_in_sync",
            True,
            lambda s: f"Measured with PyAV: audio and video stream durations within {s.max_drift_frames:g} frame; moov before mdat.",
            _av_in_sync,
        ),
        CheckKind(
            "duration_matches_brief",
            True,
            lambda s: "Measured with PyAV: the video and audio streams each last the brief's duration_s within one frame.",
            _duration_matches_brief,
        ),
    ),
    accelerator=True,
    kinds=frozenset({"mp4"}),
    rollup_files=lambda stage, manifest: {stage: manifest.artifact},
)

KINDS = (VIDEO,)
