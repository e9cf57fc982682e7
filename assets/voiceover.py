"""`voiceover`: the concept's script spoken in the variant's locale, with word timings, at −16 LUFS."""

import io
import wave

import dagster as dg

from assets.common import ESPEAK_POOL, variant_asset_kwargs
from assets.metadata import artifact_metadata, provenance_metadata
from assets.partition_runner import run_routed_partitions, variant_context
from model_adapters.types import VoiceRequest, VoiceResult
from resources.artifact_store import BaseArtifactStore
from resources.manifests import AudioArtifact, ConceptDoc, VariantBriefDoc
from resources.model_router import ModelRouter


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


def build_voiceover_asset(code_version: str) -> dg.AssetsDefinition:
    @dg.asset(
        name="voiceover",
        **variant_asset_kwargs(
            group="audio",
            kinds={"wav"},
            description="Speech of the script in the variant's locale and voice, with word timings, at -16 LUFS / -1 dBTP.",
            code_version=code_version,
            pool=ESPEAK_POOL,
        ),
    )
    def voiceover(
        context: dg.AssetExecutionContext,
        router: ModelRouter,
        artifacts: BaseArtifactStore,
        brief: dict[str, VariantBriefDoc],
        concept: dict[str, ConceptDoc],
    ) -> dict[str, AudioArtifact]:
        async def work(session, partition_key: str):
            spec, idea = brief[partition_key], concept[partition_key]
            request = VoiceRequest(text=idea.script, locale=spec.locale, voice=spec.voice)
            routed = await session.call("voice", request, seed=spec.seed, variant=variant_context(spec))
            result: VoiceResult = routed.value
            wav = checked_wav(result, routed.provenance.adapter_id)
            manifest = AudioArtifact(
                partition_key=partition_key,
                artifact=artifacts.put(wav, extension=".wav", media_type="audio/wav"),
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

        return run_routed_partitions(context, router, artifacts, work)

    return voiceover
