"""`voiceover`: the concept's script spoken in the variant's locale, with word timings, at −16 LUFS."""

import io
import wave

import dagster as dg

from assets.metadata import artifact_metadata, provenance_metadata
from assets.stages import Stage, StageCall
from model_adapters.types import VoiceRequest, VoiceResult
from resources.manifests import AudioArtifact


def checked_wav(result: VoiceResult, provider: str) -> bytes:
    """Parse the WAV header before storing: a malformed file never becomes an artifact."""
    try:
        with wave.open(io.BytesIO(result.wav)) as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{provider} returned audio that is not a valid WAV: {exc}") from None
    if rate != result.sample_rate or frames == 0:
        raise ValueError(f"{provider} returned a WAV with {frames} frames at {rate} Hz (reported {result.sample_rate} Hz)")
    return result.wav


async def speak(call: StageCall):
    spec, idea = call.spec, call.inputs["concept"]
    request = VoiceRequest(text=idea.script, locale=spec.locale, voice=spec.voice)
    routed = await call.session.call("voice", request, seed=spec.seed, variant=call.variant())
    result: VoiceResult = routed.value
    wav = checked_wav(result, routed.provenance.adapter_id)
    manifest = AudioArtifact(
        partition_key=call.partition_key,
        artifact=await call.off_loop(call.artifacts.put, wav, extension=".wav", media_type="audio/wav"),
        duration_s=result.duration_s,
        sample_rate=result.sample_rate,
        loudness_lufs=result.loudness_lufs,
        true_peak_dbtp=result.true_peak_dbtp,
        words=result.words,
        provenance=routed.provenance,
    )
    metadata = {
        "duration_s": dg.MetadataValue.float(round(result.duration_s, 3)),
        "duration_target_s": spec.duration_s,
        "loudness_lufs": dg.MetadataValue.float(round(result.loudness_lufs, 2)),
        "true_peak_dbtp": dg.MetadataValue.float(round(result.true_peak_dbtp, 2)),
        "words": len(result.words),
        "locale": spec.locale,
        **artifact_metadata(manifest.artifact),
        **provenance_metadata(routed.provenance),
    }
    return manifest, metadata


VOICEOVER = Stage(
    name="voiceover",
    upstream=("concept",),
    task="voice",
    group="audio",
    kinds=frozenset({"wav"}),
    description="Speech of the script in the variant's locale and voice, with word timings, at -16 LUFS / -1 dBTP.",
    work=speak,
)
