"""`voiceover`: the concept's script spoken in the variant's locale, with word timings, at -16 LUFS."""

import io
import wave
from collections.abc import Sequence
from typing import TYPE_CHECKING

import dagster as dg
from pydantic import Field

from assets.checks import LOUDNESS_TOLERANCE_LU, MAX_TRUE_PEAK_DBTP, TARGET_LUFS, check_loudness
from assets.metadata import artifact_metadata, provenance_metadata
from assets.stages import CheckKind, CheckOutcome, StageCall, StageCheckInput, StageKind, StageSettings
from model_adapters.received import describe_received, error_text
from model_adapters.tasks import TASK_SPECS
from model_adapters.types import VoiceRequest, VoiceResult
from resources.manifests import AudioArtifact, ConceptDoc, VariantBriefDoc

if TYPE_CHECKING:
    from model_adapters.local_transcribe import Transcript

# Set from measured distributions (benchmarks/results/voice_wer.md): clean voices stay far below,
# garbled speech far above.
MAX_WORD_ERROR_RATE = 0.6
# The picture held after the voice, at least (the concept leaves room for it too).
MIN_TAIL_S = 0.5


class VoiceSettings(StageSettings):
    """The loudness the voice is asked for and the check's limits around it; how the speech is
    fitted into the brief's duration."""

    target_lufs: float = TARGET_LUFS
    loudness_tolerance_lu: float = LOUDNESS_TOLERANCE_LU
    max_true_peak_dbtp: float = MAX_TRUE_PEAK_DBTP
    # The picture is held at least this long after the voice (the video's tail, captions cleared):
    # the voice has the brief's duration minus this.
    min_tail_s: float = Field(default=MIN_TAIL_S, ge=0, le=10)
    # How far the voice's natural pace may be changed to fit: up to 15 % faster is still natural
    # ad delivery; slowing more than 10 % drags, so shorter speech leaves the picture held longer.
    max_speed: float = Field(default=1.15, ge=1.0, le=1.15)
    min_speed: float = Field(default=0.9, ge=0.85, le=1.0)
    # Speech filling less than this share of its time is slowed down (to at most min_speed) when
    # asking again is free (a local voice).
    min_fill: float = Field(default=0.8, gt=0, le=1)
    # The most words Whisper may get wrong, as a share of the script's (docs/operations.md,
    # "Speech recognition as the judge", says how this was set from measured distributions).
    max_word_error_rate: float = Field(default=MAX_WORD_ERROR_RATE, ge=0, le=1)


def fitted_speed(duration_s: float, available_s: float, settings: VoiceSettings) -> float:
    """The pace (a multiplier of the voice's own) that fits speech of `duration_s` at pace 1.0
    into `available_s`: faster when it is too long, slower when it fills too little; 1.0 when it
    fits. A 2 % margin: pauses do not scale with the pace."""
    if duration_s > available_s:
        return round(min(settings.max_speed, duration_s / available_s * 1.02), 3)
    if duration_s < settings.min_fill * available_s:
        target = (settings.min_fill + 1) / 2 * available_s  # aim between the floor and full
        return round(max(settings.min_speed, duration_s / target), 3)
    return 1.0


def checked_wav(result: VoiceResult, provider: str) -> bytes:
    """Parse the WAV header before storing: a malformed file never becomes an artifact."""
    try:
        with wave.open(io.BytesIO(result.wav)) as wav:
            frames, rate = wav.getnframes(), wav.getframerate()
    except (wave.Error, EOFError) as exc:
        raise ValueError(
            f"{provider} returned audio that is not a valid WAV ({error_text(exc)}); {describe_received(result.wav)}"
        ) from None
    if rate != result.sample_rate or frames == 0:
        raise ValueError(f"{provider} returned a WAV with {frames} frames at {rate} Hz (reported {result.sample_rate} Hz)")
    return result.wav


async def speak(call: StageCall):
    spec, idea, settings = call.spec, call.inputs["concept"], call.settings
    request = VoiceRequest(
        text=idea.script,
        locale=spec.locale,
        voice=spec.voice,
        target_lufs=settings.target_lufs,
        true_peak_dbtp=settings.max_true_peak_dbtp,
    )
    routed = await call.call_model(request)
    result: VoiceResult = routed.value
    # The brief's duration is a contract: speech that does not fit at the voice's own pace is
    # asked again a little faster (or slower), once; `fits_duration` judges what comes back.
    speed = fitted_speed(result.duration_s, spec.duration_s - settings.min_tail_s, settings)
    # Too long must be fixed; too short is only worth a second call when it costs nothing (a
    # paid voice's short speech is held on the picture instead).
    if speed < 1.0 and call.session.charges(routed.provenance.adapter_id):
        speed = 1.0
    if speed != 1.0:
        routed = await call.call_model(request.model_copy(update={"speed": speed}))
        result = routed.value
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
    return manifest, {
        **audio_metadata(manifest),
        "duration_target_s": spec.duration_s,
        "words": len(result.words),
        "locale": spec.locale,
        "speed": dg.MetadataValue.float(speed),
    }


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
    "loudness_within_spec",
    True,
    lambda s: (
        f"Measured from the WAV: integrated loudness {s.target_lufs:g} LUFS +/- {s.loudness_tolerance_lu:g} LU, "
        f"true peak <= {s.max_true_peak_dbtp:g} dBTP."
    ),
    _loudness,
)


def _fits_duration(item: StageCheckInput) -> CheckOutcome:
    audio: AudioArtifact = item.manifest
    with wave.open(io.BytesIO(item.artifacts.get(audio.artifact))) as wav:
        measured_s = wav.getnframes() / wav.getframerate()
    available_s = item.brief.duration_s - item.settings.min_tail_s
    fits = measured_s <= available_s + 1e-6
    return CheckOutcome(
        fits,
        {
            "problems": []
            if fits
            else [
                f"the speech lasts {measured_s:.3f} s; the brief's {item.brief.duration_s:g} s leaves it {available_s:.3f} s "
                f"before the held tail, even paced up to {item.settings.max_speed:g}x"
            ],
            "voice_s": dg.MetadataValue.float(round(measured_s, 3)),
            "available_s": dg.MetadataValue.float(round(available_s, 3)),
            "brief_duration_s": dg.MetadataValue.float(item.brief.duration_s),
        },
    )


TRANSCRIPTS = "transcripts"  # the artifact store's records of Whisper's transcripts, by `transcript_key`


def _heard(item: StageCheckInput, audio: AudioArtifact, language: str) -> tuple["Transcript", bool]:
    """Whisper's transcript of the voiceover and whether it was read back rather than made now.

    Identical voices are common (variants of a brief whose concepts came out the same ask the
    same speech, and the response cache answers the repeat with the same WAV), and Whisper costs
    about a CPU second a clip on the CPU; its transcript depends only on the bytes, the model and
    the settings (`transcript_key`), so one worker's transcript serves every check of the same WAV.
    """
    from model_adapters.local_transcribe import Transcript, get_transcriber

    transcriber = get_transcriber()
    key = transcriber.transcript_key(audio.artifact.sha256, language)
    stored = item.artifacts.read_entry(TRANSCRIPTS, key)
    if stored is not None:
        try:
            return Transcript.from_json(stored), True
        except ValueError:
            pass  # a damaged record is made again and rewritten
    transcript = transcriber.transcribe(item.artifacts.get(audio.artifact), language)
    item.artifacts.write_entry(TRANSCRIPTS, key, transcript.to_json())
    return transcript, False


def _load_recognizer(briefs: Sequence[VariantBriefDoc]) -> None:
    """Loads Whisper when the run has a variant it can judge."""
    from model_adapters.local_transcribe import get_transcriber, supported_language

    if any(supported_language(brief.locale) for brief in briefs):
        get_transcriber().load()


def _speech_intelligible(item: StageCheckInput) -> CheckOutcome:
    # Imported here: the definitions load without CTranslate2; the model loads once per process.
    from model_adapters.local_transcribe import offset_summary, start_offsets, supported_language, word_error_rate

    audio: AudioArtifact = item.manifest
    language = supported_language(item.brief.locale)
    if language is None:
        return CheckOutcome(
            True,
            {
                "judged": False,
                "why": f"no local recognizer for {item.brief.locale}: Whisper tiny.en hears English only",
                "problems": [],
            },
        )
    script = item.inputs["concept"].script
    transcript, reused = _heard(item, audio, language)
    error_rate = word_error_rate(script, transcript.text)
    offsets = offset_summary(start_offsets(audio.words, transcript))
    passed = error_rate <= item.settings.max_word_error_rate
    problems = (
        []
        if passed
        else [
            f"Whisper heard {transcript.text!r}: word error rate {error_rate:.2f} against the script, "
            f"above {item.settings.max_word_error_rate:.2f}"
        ]
    )
    return CheckOutcome(
        passed,
        {
            "judged": True,
            "transcript": dg.MetadataValue.md(f"**Heard:** {transcript.text}\n\n**Script:** {script}"),
            "word_error_rate": dg.MetadataValue.float(round(error_rate, 4)),
            "recognizer": f"{transcript.model} {transcript.model_version}",
            "transcript_reused": reused,  # from an earlier check of the same WAV, model and settings
            "word_start_offset_median_ms": dg.MetadataValue.float(round(offsets["median_abs_s"] * 1000, 1)),
            "word_start_offset_p90_ms": dg.MetadataValue.float(round(offsets["p90_abs_s"] * 1000, 1)),
            "words_matched": offsets["matched"],
            "problems": problems,
        },
    )


SPEECH_INTELLIGIBLE = CheckKind(
    "speech_intelligible",
    True,
    lambda s: (
        f"Whisper tiny.en transcribes the WAV (English locales): word error rate against the script "
        f"<= {s.max_word_error_rate:.2f}; the transcript and each word's start against the voice's own timings "
        f"are recorded. Other languages are not judged (no local recognizer)."
    ),
    _speech_intelligible,
    prepare=_load_recognizer,
)

FITS_DURATION = CheckKind(
    "fits_duration",
    True,
    lambda s: (
        f"Measured from the WAV: the speech ends at least {s.min_tail_s:g} s before the brief's duration "
        f"(paced {s.min_speed:g}x-{s.max_speed:g}x to fit), so the video can be exactly that long."
    ),
    _fits_duration,
)

VOICEOVER = StageKind(
    name="voiceover",
    description="Speech of the script in the variant's locale and voice, with word timings, at -16 LUFS / -1 dBTP.",
    inputs={"concept": ConceptDoc},
    output=AudioArtifact,
    task=TASK_SPECS["voice"],
    work=speak,
    settings=VoiceSettings,
    checks=(LOUDNESS_WITHIN_SPEC, FITS_DURATION, SPEECH_INTELLIGIBLE),
    kinds=frozenset({"wav"}),
    rollup_files=lambda stage, manifest: {stage: manifest.artifact},
)

KINDS = (VOICEOVER,)
