"""`voiceover`: the concept's script spoken in the variant's locale, with word timings, at -16 LUFS."""

import io
import wave

import dagster as dg

from assets.checks import LOUDNESS_TOLERANCE_LU, MAX_TRUE_PEAK_DBTP, TARGET_LUFS, check_loudness
from assets.metadata import artifact_metadata, provenance_metadata
from assets.stages import CheckKind, CheckOutcome, StageCall, StageCheckInput, StageKind, StageSettings
from model_adapters.received import describe_received, error_text
from model_adapters.tasks import TASK_SPECS
from model_adapters.types import VoiceRequest, VoiceResult
from resources.manifests import AudioArtifact, ConceptDoc


class VoiceSettings(StageSettings):
    """The loudness the voice is asked for, and the check's limits around it."""

    target_lufs: float = TARGET_LUFS
    loudness_tolerance_lu: float = LOUDNESS_TOLERANCE_LU
    max_true_peak_dbtp: float = MAX_TRUE_PEAK_DBTP


def checked_wav(result: VoiceResult, provider: str) -> bytes:
    """Parse the WAV header before storing: a malformed file never becomes an artifact."""
    try:
        with wave.open(io.BytesIO(result.wav)) as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{provider} returned audio that is not a valid WAV ({error_text(exc)}); {describe_received(result.wav)}") from None
    if rate != result.sample_rate or frames == 0:
        raise ValueError(f"{provider} returned a WAV with {frames} frames at {rate} Hz (reported {result.sample_rate} Hz)")
    return result.wav


async def speak(call: StageCall):
    spec, idea, settings = call.spec, call.inputs["concept"], call.settings
    request = VoiceRequest(
        text=idea.script, locale=spec.locale, voice=spec.voice,
        target_lufs=settings.target_lufs, true_peak_dbtp=settings.max_true_peak_dbtp,
    )
    routed = await call.call_model(request)
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
    return manifest, {**audio_metadata(manifest), "duration_target_s": spec.duration_s, "words": len(result.words), "locale": spec.locale}


def audio_metadata(manifest: AudioArtifact) -> dict:
    """What the UI shows of any stage that makes an `AudioArtifact`: length, loudness, file, provenance."""
    return {
        "duration_s": dg.MetadataValue.float(round(manifest.duration_s, 3)),
        "loudness_lufs": dg.MetadataValue.float(round(manifest.loudness_lufs, 2)),
        "true_peak_dbtp": dg.MetadataValue.float(round(manifest.true_peak_dbtp, 2)),
        **artifact_metadata(manifest.artifact),
        **provenance_metadata(manifest.provenance),
    }


def _loudness(item: StageCheckInput) -> CheckOutcome:
    audio: AudioArtifact = item.manifest
    settings = item.settings
    passed, metadata = check_loudness(
        item.artifacts.get(audio.artifact),
        target_lufs=settings.target_lufs,
        tolerance_lu=settings.loudness_tolerance_lu,
        max_true_peak_dbtp=settings.max_true_peak_dbtp,
    )
    metadata["manifest_loudness_lufs"] = dg.MetadataValue.float(round(audio.loudness_lufs, 3))
    metadata["manifest_true_peak_dbtp"] = dg.MetadataValue.float(round(audio.true_peak_dbtp, 3))
    return CheckOutcome(passed, metadata)


LOUDNESS_WITHIN_SPEC = CheckKind(
    "loudness_within_spec", True,
    lambda s: (
        f"Measured from the WAV: integrated loudness {s.target_lufs:g} LUFS +/- {s.loudness_tolerance_lu:g} LU, "
        f"true peak <= {s.max_true_peak_dbtp:g} dBTP."
    ),
    _loudness,
)

VOICEOVER = StageKind(
    name="voiceover",
    description="Speech of the script in the variant's locale and voice, with word timings, at -16 LUFS / -1 dBTP.",
    inputs={"concept": ConceptDoc},
    output=AudioArtifact,
    task=TASK_SPECS["voice"],
    work=speak,
    settings=VoiceSettings,
    checks=(LOUDNESS_WITHIN_SPEC,),
    kinds=frozenset({"wav"}),
    rollup_files=lambda stage, manifest: {stage: manifest.artifact},
)

KINDS = (VOICEOVER,)
