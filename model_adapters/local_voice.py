"""Local text-to-speech with espeak-ng, with word timings.

espeak-ng (library and voice data from the ``espeakng-loader`` wheel) is called
through ctypes in synchronous mode: the synth callback receives the PCM and the
events, and WORD events give each word's character offset and its audio
position. Those are turned into `WordTiming`s on the whitespace-separated
words of the text (punctuation stays attached, captions want it), with start
and end snapped to where the audio actually has energy.

The audio is normalised to the requested integrated loudness and true-peak
ceiling (see `model_adapters.loudness`) and returned as a 16-bit mono WAV.

espeak-ng keeps its state in process globals (one voice, one callback, one
set of parameters), so every use of it holds `_ESPEAK_LOCK`. Nothing is
loaded at import time. Each synthesis loads and initialises a fresh instance
of the library (~5 ms) and unloads it afterwards: espeak has internal state
that no API call resets, and a fresh instance is what makes the same request
give the same bytes (see `_espeak_session`). The random seed, used by breathy
variants, is fixed too.
"""

from __future__ import annotations

import _ctypes
import asyncio
import atexit
import bisect
import ctypes
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from model_adapters.locales import ESPEAK_LOCALE_VOICES, normalize_locale
from model_adapters.media.wav import PCM16_SCALE
from model_adapters.types import AdapterError, AdapterInfo, Price, VoiceRequest, VoiceResult, WordTiming
from model_adapters.voice_delivery import deliver_voice

PROVIDER = "local"
MODEL = "espeak-ng"

# Locale (BCP 47, canonical case) -> espeak voice (model_adapters/locales.py keeps the table,
# so the registry can declare espeak's locales without loading this module).
LOCALE_VOICES: dict[str, str] = ESPEAK_LOCALE_VOICES

DEFAULT_VOICE = "default"
MIN_WPM, MAX_WPM = 80, 450

# --- espeak-ng C API (speak_lib.h) --------------------------------------------

_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # report errors instead of calling exit()
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_EVENT_LIST_TERMINATED = 0
_EVENT_WORD = 1
_EE_OK = 0
_PARAM_RATE, _PARAM_VOLUME, _PARAM_PITCH, _PARAM_RANGE = 1, 2, 3, 4
_PARAM_PUNCTUATION, _PARAM_CAPITALS, _PARAM_WORDGAP = 5, 6, 7
_RAND_SEED = 1  # any fixed value: what matters is that it is the same every call


class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based, in characters
        ("length", ctypes.c_int),  # in characters
        ("audio_position", ctypes.c_int),  # ms from the start of the text
        ("sample", ctypes.c_int),
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


class _Voice(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        # (priority byte, NUL-terminated language) pairs, ended by a 0 byte:
        # not a C string, so kept as a raw pointer.
        ("languages", ctypes.c_void_p),
        ("identifier", ctypes.c_char_p),
        ("gender", ctypes.c_ubyte),
        ("age", ctypes.c_ubyte),
        ("variant", ctypes.c_ubyte),
        ("xx1", ctypes.c_ubyte),
        ("score", ctypes.c_int),
        ("spare", ctypes.c_void_p),
    ]


_SynthCallback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))

# One lock for every use of the library: espeak keeps its state in process
# globals (one voice, one callback, one set of parameters).
_ESPEAK_LOCK = threading.Lock()


@dataclass(frozen=True)
class _WordEvent:
    char_index: int  # 0-based code-point index into the text
    time_s: float


@dataclass(frozen=True)
class _RawSpeech:
    pcm: np.ndarray  # int16 mono
    sample_rate: int
    word_events: tuple[_WordEvent, ...]


@dataclass(frozen=True)
class _VoiceCatalogue:
    # Lower-cased voice name, identifier, identifier basename or language code
    # -> the identifier basename that espeak_SetVoiceByName selects exactly.
    voices: dict[str, str]
    variants: frozenset[str]  # variant file names, exact case, as espeak opens them


@dataclass(frozen=True)
class _LibraryFacts:
    version: str
    catalogue: _VoiceCatalogue


def _declare_signatures(lib: ctypes.CDLL) -> None:
    lib.espeak_Info.argtypes = [ctypes.c_void_p]
    lib.espeak_Info.restype = ctypes.c_char_p
    lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
    lib.espeak_Initialize.restype = ctypes.c_int
    lib.espeak_Terminate.argtypes = []
    lib.espeak_Terminate.restype = ctypes.c_int
    lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
    lib.espeak_SetSynthCallback.restype = None
    lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
    lib.espeak_SetVoiceByName.restype = ctypes.c_int
    lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
    lib.espeak_SetParameter.restype = ctypes.c_int
    lib.espeak_ListVoices.argtypes = [ctypes.c_void_p]
    lib.espeak_ListVoices.restype = ctypes.POINTER(ctypes.POINTER(_Voice))
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed.restype = None
    lib.espeak_Synth.argtypes = [
        ctypes.c_void_p,  # text
        ctypes.c_size_t,  # size in bytes, including the NUL
        ctypes.c_uint,  # position
        ctypes.c_int,  # position type
        ctypes.c_uint,  # end position
        ctypes.c_uint,  # flags
        ctypes.POINTER(ctypes.c_uint),  # unique identifier (out)
        ctypes.c_void_p,  # user data
    ]
    lib.espeak_Synth.restype = ctypes.c_int


class _Session:
    """One freshly loaded, initialised instance of libespeak-ng (see `_espeak_session`)."""

    def __init__(self, lib: ctypes.CDLL, data_path: str, sample_rate: int) -> None:
        self._lib = lib
        self._data_path = data_path
        self.sample_rate = sample_rate
        # Filled by the callback during espeak_Synth.
        self._chunks: list[bytes] = []
        self._events: list[_WordEvent] = []
        # Keep a reference: ctypes does not, and a collected callback crashes.
        self._callback = _SynthCallback(self._on_synth)
        lib.espeak_SetSynthCallback(self._callback)

    def version(self) -> str:
        info: bytes = self._lib.espeak_Info(None)  # restype c_char_p: bytes
        return info.decode()

    def catalogue(self) -> _VoiceCatalogue:
        """What a request may name as a voice.

        espeak_SetVoiceByName matches a voice's name, identifier or identifier
        basename, not a language code ("en-gb" fails). Language codes are
        accepted here anyway and mapped to the voice espeak ranks first for
        that language ("en-gb" -> "en", "fr-fr" -> "fr").
        """
        voices: dict[str, str] = {}
        best_for_language: dict[str, tuple[int, str]] = {}
        for voice in self._list_voices():
            identifier = voice.identifier.decode()
            basename = identifier.rsplit("/", 1)[-1].lower()
            for key in (voice.name.decode().lower(), identifier.lower(), basename):
                voices.setdefault(key, basename)
            for priority, language in _voice_languages(voice.languages):
                if language not in best_for_language or priority < best_for_language[language][0]:
                    best_for_language[language] = (priority, basename)
        for language, (_, basename) in best_for_language.items():
            voices.setdefault(language, basename)
        # espeak opens variants as files under voices/!v and silently ignores a
        # missing one, so only exact file names pass.
        variants_dir = Path(self._data_path) / "voices" / "!v"
        variants = frozenset(p.name for p in variants_dir.iterdir() if p.is_file())
        return _VoiceCatalogue(voices, variants)

    def _list_voices(self) -> list[_Voice]:
        array = self._lib.espeak_ListVoices(None)
        voices = []
        index = 0
        while array[index]:
            voices.append(array[index].contents)
            index += 1
        return voices

    def synthesize(self, text: str, voice: str, words_per_minute: int) -> _RawSpeech:
        status = self._lib.espeak_SetVoiceByName(voice.encode())
        if status != _EE_OK:
            raise AdapterError(f"espeak could not select voice {voice!r} (status {status})", provider=PROVIDER)
        for parameter, value in (
            (_PARAM_RATE, words_per_minute),
            (_PARAM_VOLUME, 100),
            (_PARAM_PITCH, 50),
            (_PARAM_RANGE, 50),
            (_PARAM_PUNCTUATION, 0),
            (_PARAM_CAPITALS, 0),
            (_PARAM_WORDGAP, 0),
        ):
            self._lib.espeak_SetParameter(parameter, value, 0)
        # Breathy variants (f3, ...) mix in rand() noise.
        self._lib.espeak_ng_SetRandSeed(_RAND_SEED)

        self._chunks, self._events = [], []
        encoded = text.encode("utf-8") + b"\0"
        buffer = ctypes.create_string_buffer(encoded, len(encoded))
        status = self._lib.espeak_Synth(buffer, len(encoded), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None)
        if status != _EE_OK:
            raise AdapterError(f"espeak_Synth failed (status {status})", provider=PROVIDER)
        pcm = np.frombuffer(b"".join(self._chunks), dtype="<i2").copy()
        return _RawSpeech(pcm, self.sample_rate, tuple(self._events))

    def _on_synth(self, wav: ctypes._Pointer[ctypes.c_short], num_samples: int, events: ctypes._Pointer[_Event]) -> int:
        """espeak's callback: a PCM chunk and the events that fall in it. 0 = go on."""
        if num_samples > 0 and wav:
            self._chunks.append(ctypes.string_at(wav, num_samples * 2))
        index = 0
        while events[index].type != _EVENT_LIST_TERMINATED:
            event = events[index]
            if event.type == _EVENT_WORD:
                self._events.append(_WordEvent(event.text_position - 1, event.audio_position / 1000.0))
            index += 1
        return 0

    def close(self) -> None:
        self._lib.espeak_Terminate()
        # Any later use fails in Python instead of jumping into unmapped code.
        self._lib = None  # type: ignore[assignment]


def _voice_languages(pointer: int | None) -> list[tuple[int, str]]:
    """Decode espeak_VOICE.languages: (priority byte, C string) pairs until a 0 byte.
    A lower priority number is a better match."""
    languages: list[tuple[int, str]] = []
    if not pointer:
        return languages
    while (priority := ctypes.c_ubyte.from_address(pointer).value) != 0:
        language = ctypes.string_at(pointer + 1)
        languages.append((priority, language.decode().lower()))
        pointer += 2 + len(language)
    return languages


_PRIVATE_COPY: tuple[int, Path] | None = None  # (owning pid, path)


def _private_library_path() -> Path:
    """This process's own copy of libespeak-ng, made on first use (hold `_ESPEAK_LOCK`).

    With a file of its own, nothing else in the process (another espeak-based
    component) shares our library instance: unloading really unloads it, and
    our espeak_Terminate never pulls the rug from under someone else.
    """
    global _PRIVATE_COPY
    if _PRIVATE_COPY is None or _PRIVATE_COPY[0] != os.getpid() or not _PRIVATE_COPY[1].exists():
        import espeakng_loader

        source = Path(espeakng_loader.get_library_path())
        folder = Path(tempfile.mkdtemp(prefix="studio-espeak-"))
        atexit.register(_remove_private_copy, folder, os.getpid())
        shutil.copy2(source, folder / source.name)
        _PRIVATE_COPY = (os.getpid(), folder / source.name)
    return _PRIVATE_COPY[1]


def _remove_private_copy(folder: Path, owner_pid: int) -> None:
    if os.getpid() == owner_pid:  # not in a forked child, whose parent still uses it
        shutil.rmtree(folder, ignore_errors=True)


def _load_library() -> ctypes.CDLL:
    import espeakng_loader

    try:
        return ctypes.CDLL(str(_private_library_path()))
    except OSError:
        pass  # e.g. a temp dir mounted noexec: fall back to the packaged file
    try:
        return ctypes.CDLL(espeakng_loader.get_library_path())
    except OSError as exc:
        raise AdapterError(f"cannot load libespeak-ng: {exc}", provider=PROVIDER) from exc


def _unload(lib: ctypes.CDLL) -> None:
    handle = lib._handle
    if hasattr(_ctypes, "dlclose"):
        _ctypes.dlclose(handle)
    else:  # Windows
        _ctypes.FreeLibrary(handle)  # type: ignore[attr-defined]


@contextmanager
def _espeak_session() -> Iterator[_Session]:
    """A freshly loaded and initialised espeak, unloaded afterwards. Hold `_ESPEAK_LOCK`.

    Why not initialise once and keep it: espeak keeps function-level statics
    (the pitch-flutter phase, the automatic gain control, the glottal cycle
    counter) that no API call resets, so one instance speaks the same text
    slightly differently each time (a few samples longer or shorter, a
    different waveform). A fresh instance costs about 5 ms and makes the same
    request give the same bytes, whatever ran before it.
    """
    import espeakng_loader

    data_path = espeakng_loader.get_data_path()
    lib = _load_library()
    try:
        _declare_signatures(lib)
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT)
        if rate <= 0:
            raise AdapterError(f"espeak_Initialize failed ({rate}) with data at {data_path}", provider=PROVIDER)
        session = _Session(lib, data_path, rate)
        try:
            yield session
        finally:
            session.close()
    finally:
        _unload(lib)


_FACTS: _LibraryFacts | None = None


def _library_facts() -> _LibraryFacts:
    """Version and voice list, read on first use. Takes the lock only then, so
    validating a request never waits for a synthesis in progress."""
    global _FACTS
    if _FACTS is None:
        with _ESPEAK_LOCK:
            if _FACTS is None:
                with _espeak_session() as session:
                    _FACTS = _LibraryFacts(session.version(), session.catalogue())
    return _FACTS


def espeak_version() -> str:
    """The espeak-ng version string (espeak_Info), e.g. "1.52.0"."""
    return _library_facts().version


# --- locales and voices --------------------------------------------------------


def canonical_locale(locale: str) -> str:
    """'en_us' / 'EN-us' -> 'en-US' (BCP 47 case: model_adapters/locales.py); what is not a
    language tag is returned as given, so the caller's lookup fails naming it."""
    try:
        return normalize_locale(locale)
    except ValueError:
        return locale


def resolve_voice(locale: str, voice: str | None) -> str:
    """The espeak voice name for a locale and a requested voice.

    `voice` None, "" or "default" is the locale's default voice; anything else
    is an espeak voice (name, identifier, basename or language code) with an
    optional "+variant" (e.g. "en-us+f3"), both checked against the shipped
    data. Returns the canonical form espeak selects exactly ("English
    (Great Britain)+f3" and "en-gb+f3" both give "en+f3").
    Raises ValueError naming what is unknown.
    """
    key = canonical_locale(locale)
    if key not in LOCALE_VOICES:
        raise ValueError(f"unsupported locale {locale!r} for the espeak-ng voice adapter; supported: {', '.join(sorted(LOCALE_VOICES))}")
    if voice is None or voice.strip().lower() in ("", DEFAULT_VOICE):
        return LOCALE_VOICES[key]
    return check_voice_name(voice, locale)


def check_voice_name(voice: str, locale: str | None = None) -> str:
    """An espeak voice (name, identifier, basename or language code) with an optional
    "+variant", checked against the shipped data; its canonical form. ValueError naming
    what is unknown."""
    base, plus, variant = voice.strip().partition("+")
    catalogue = _library_facts().catalogue
    canonical = catalogue.voices.get(base.strip().lower())
    for_locale = f" for locale {locale!r}" if locale else ""
    if canonical is None:
        raise ValueError(f"unknown espeak-ng voice {base!r} (requested voice {voice!r}{for_locale})")
    if not plus:
        return canonical
    if variant not in catalogue.variants:
        raise ValueError(
            f"unknown espeak-ng voice variant {variant!r} (requested voice {voice!r}); variants: {', '.join(sorted(catalogue.variants))}"
        )
    return f"{canonical}+{variant}"


# --- word timings ---------------------------------------------------------------

# A sample this far below the loudest one counts as silence. espeak's pauses
# are digital zeros, so the exact value is not critical. Per sample rather than
# a windowed RMS: a window would smear the next word's onset back into the
# pause before it and make the previous word seem to end there.
_SILENCE_BELOW_PEAK_DB = 50.0


def _energy_mask(pcm: np.ndarray) -> np.ndarray:
    """Per sample: is its magnitude above the silence floor?"""
    magnitude = np.abs(pcm.astype(np.int32))
    peak = int(magnitude.max()) if len(magnitude) else 0
    return magnitude > peak * 10 ** (-_SILENCE_BELOW_PEAK_DB / 20)


# Scripts written without spaces between words: there, espeak's WORD events
# (phrase-sized for Japanese, character-sized for Chinese) are the only word
# boundaries there are.
_UNSPACED_SCRIPT = re.compile("[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def _tokens(text: str, events: tuple[_WordEvent, ...]) -> list[tuple[int, int]]:
    """(start, end) character spans of the words of `text`.

    Words are whitespace-separated, punctuation attached ("coffee," is one
    word: captions want the comma). A word in an unspaced script is further
    cut where espeak starts a new word.
    """
    cuts = sorted({e.char_index for e in events})
    spans: list[tuple[int, int]] = []
    for match in re.finditer(r"\S+", text):
        start, end = match.span()
        if _UNSPACED_SCRIPT.search(match.group()):
            inner = [c for c in cuts if start < c < end]
            bounds = [start, *inner, end]
            spans.extend(pairwise(bounds))
        else:
            spans.append((start, end))
    return spans


def _first_event_per_token(spans: list[tuple[int, int]], events: tuple[_WordEvent, ...]) -> list[float | None]:
    """Time of the first WORD event inside each span (None if espeak gave none,
    e.g. for a dash, or for "of-the-art" inside "state-of-the-art").
    An event that points at whitespace belongs to the next word."""
    times: list[float | None] = [None] * len(spans)
    starts = [start for start, _ in spans]
    for event in events:
        i = bisect.bisect_right(starts, event.char_index) - 1
        if i < 0 or event.char_index >= spans[i][1]:
            i += 1
        if i < len(spans) and times[i] is None:
            times[i] = event.time_s
    return times


def _voiced_span(voiced: np.ndarray, begin: int, stop: int) -> tuple[int, int]:
    """First and one-past-last voiced sample in [begin, stop); (begin, begin) if none."""
    found = np.flatnonzero(voiced[begin:stop])
    if len(found) == 0:
        return begin, begin
    return begin + int(found[0]), begin + int(found[-1]) + 1


def word_timings(text: str, events: tuple[_WordEvent, ...], pcm: np.ndarray, sample_rate: int) -> tuple[WordTiming, ...]:
    """One WordTiming per word of `text` (see `_tokens`).

    A word starts at the first energy after its WORD event (espeak emits the
    event before the pause that precedes the word) and ends at its last energy
    before the next word's event, so pauses belong to no word; the last word
    ends where speech ends. A word espeak gave no event gets a zero-length
    timing at the previous word's end (or the next word's start if it is first).
    """
    spans = _tokens(text, events)
    voiced = _energy_mask(pcm)
    # (word index, event time) for the words espeak marked.
    marked = [(i, t) for i, t in enumerate(_first_event_per_token(spans, events)) if t is not None]

    voiced_spans: dict[int, tuple[float, float]] = {}
    for k, (i, time_s) in enumerate(marked):
        begin = min(len(pcm), round(time_s * sample_rate))
        stop = round(marked[k + 1][1] * sample_rate) if k + 1 < len(marked) else len(pcm)
        first, last = _voiced_span(voiced, begin, max(begin, min(len(pcm), stop)))
        voiced_spans[i] = (first / sample_rate, last / sample_rate)

    words: list[WordTiming] = []
    previous_end = 0.0
    for i, (first_char, end_char) in enumerate(spans):
        if i in voiced_spans:
            start = max(voiced_spans[i][0], previous_end)
            end = max(start, voiced_spans[i][1])
        elif words or not voiced_spans:
            start = end = previous_end
        else:  # unmarked first word: pin it to the first marked word's start
            start = end = voiced_spans[marked[0][0]][0]
        words.append(WordTiming(word=text[first_char:end_char], start_s=round(start, 4), end_s=round(end, 4)))
        previous_end = end
    return tuple(words)


# --- WAV -------------------------------------------------------------------------


# --- the adapter -------------------------------------------------------------------


def _speakable(text: str) -> str:
    """Control characters (a NUL would end the C string) become spaces; one for
    one, so character offsets from espeak still index the original text."""
    return "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in text)


class EspeakVoiceAdapter:
    """Voice adapter: espeak-ng speech, loudness-normalised, with word timings."""

    def __init__(self, adapter_id: str = "local-espeak", max_concurrency: int = 1, words_per_minute: int = 165):
        if not MIN_WPM <= words_per_minute <= MAX_WPM:
            raise ValueError(f"words_per_minute must be in [{MIN_WPM}, {MAX_WPM}], got {words_per_minute}")
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.words_per_minute = words_per_minute
        # Reads the version (and voice list) from espeak once per process,
        # ~5 ms; the version is part of the adapter's identity (cache keys, lineage).
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="voice",
            provider=PROVIDER,
            model=MODEL,
            model_version=espeak_version(),
            price=Price(per_1k_characters=0.0),
            capabilities=frozenset(f"locale:{locale}" for locale in LOCALE_VOICES),
            max_concurrency=max_concurrency,
        )

    async def synthesize(self, request: VoiceRequest) -> VoiceResult:
        voice = resolve_voice(request.locale, request.voice)
        if not request.text.strip():
            raise ValueError("voice request text is empty")
        return await asyncio.to_thread(self._synthesize_blocking, request, voice)

    def _synthesize_blocking(self, request: VoiceRequest, voice: str) -> VoiceResult:
        text = _speakable(request.text)
        with _ESPEAK_LOCK, _espeak_session() as session:
            # `speed` scales the rate (the voiceover stage fits speech into the brief's duration).
            raw = session.synthesize(text, voice, round(self.words_per_minute * request.speed))
        if not np.any(raw.pcm):
            raise AdapterError(f"espeak produced no audio for {request.text[:60]!r}", provider=PROVIDER)
        # Timings come from the raw audio: gain and limiting do not move anything.
        words = word_timings(text, raw.word_events, raw.pcm, raw.sample_rate)
        return deliver_voice(raw.pcm.astype(np.float32) / PCM16_SCALE, raw.sample_rate, words, request)

    async def aclose(self) -> None:
        """Nothing to release: each synthesis loads and unloads its own espeak."""
