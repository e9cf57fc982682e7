"""`music_bed`: an instrumental bed under the voiceover, mixed and loudness-normalised.

The worked example of a new routed stage kind (docs/stages.md): it calls the
`music` task for a bed as long as the voice, mixes it `bed_db` under the
voice, and normalises the mix like a voiceover, so captions and the video
read it as one (same manifest type, same word timings).
"""

import asyncio

import numpy as np

from assets.checks import decode_wav
from assets.stage_kinds.voiceover import LOUDNESS_WITHIN_SPEC, VoiceSettings, audio_metadata
from assets.stages import StageCall, StageKind
from model_adapters import loudness
from model_adapters.media.wav import encode_wav, to_pcm16
from model_adapters.tasks import TASK_SPECS, MusicRequest
from resources.manifests import AudioArtifact, ConceptDoc


class MusicBedSettings(VoiceSettings):
    bed_db: float = -14.0  # the bed's loudness relative to the voice's


def mix(voice: np.ndarray, bed: np.ndarray, rate: int, settings: MusicBedSettings) -> tuple[np.ndarray, float, float]:
    """The bed `bed_db` under the voice, the sum normalised to the target with the true-peak ceiling."""
    bed = np.pad(bed, (0, max(0, len(voice) - len(bed))))[: len(voice)]
    voice_lufs, bed_lufs = loudness.integrated_loudness(voice, rate), loudness.integrated_loudness(bed, rate)
    gain = loudness.db_to_gain(voice_lufs + settings.bed_db - bed_lufs) if np.isfinite(bed_lufs) else 0.0
    return loudness.normalize(voice + gain * bed, rate, settings.target_lufs, settings.max_true_peak_dbtp)


async def mix_music_bed(call: StageCall):
    voice, concept, settings = call.inputs["voiceover"], call.inputs["concept"], call.settings
    request = MusicRequest(
        duration_s=voice.duration_s, mood=call.spec.tone, palette=call.spec.palette, seed=call.spec.seed, sample_rate=voice.sample_rate
    )
    routed = await call.call_model(request)
    voice_samples, rate = decode_wav(await call.input_bytes("voiceover", voice.artifact))
    bed_samples, bed_rate = decode_wav(routed.value.wav)
    if bed_rate != rate:
        raise ValueError(f"{routed.provenance.adapter_id} returned {bed_rate} Hz, asked for {rate} Hz")
    mixed, lufs, peak = await asyncio.to_thread(mix, voice_samples, bed_samples, rate, settings)
    wav = encode_wav(to_pcm16(mixed), rate)
    manifest = AudioArtifact(
        partition_key=call.partition_key,
        artifact=await call.off_loop(call.artifacts.put, wav, extension=".wav", media_type="audio/wav"),
        duration_s=len(mixed) / rate,
        sample_rate=rate,
        loudness_lufs=lufs,
        true_peak_dbtp=peak,
        words=voice.words,  # the voice is not moved: its timings stand
        provenance=routed.provenance,
    )
    return manifest, {**audio_metadata(manifest), "bed_db": settings.bed_db, "headline": concept.headline}


MUSIC_BED = StageKind(
    name="music_bed",
    description="The voiceover with an instrumental bed mixed under it, at the voiceover's loudness.",
    inputs={"voiceover": AudioArtifact, "concept": ConceptDoc},
    output=AudioArtifact,
    task=TASK_SPECS["music"],
    work=mix_music_bed,
    settings=MusicBedSettings,
    checks=(LOUDNESS_WITHIN_SPEC,),
    kinds=frozenset({"wav"}),
    rollup_files=lambda stage, manifest: {stage: manifest.artifact},
)

KINDS = (MUSIC_BED,)
