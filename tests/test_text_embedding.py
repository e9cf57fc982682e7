"""The coalescing embedder: many threads, few batched forward passes, the same vectors."""

import threading

import torch

from model_adapters.text_embedding import CoalescingEmbedder, get_embedder


class _Counting:
    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def embed(self, texts):
        self.batches.append(len(texts))
        return self.inner.embed(texts)


def test_parallel_callers_share_batches_and_get_their_own_vectors():
    texts = [f"a warm lamp for readers, variant {i}, {'late' if i % 2 else 'early'} at night" for i in range(12)]
    counting = _Counting(get_embedder())
    coalescing = CoalescingEmbedder(counting, window_s=0.05)
    results: dict[int, torch.Tensor] = {}
    start = threading.Barrier(len(texts))

    def call(i: int) -> None:
        start.wait()
        results[i] = coalescing.embed_one(texts[i])

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(texts))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert sum(counting.batches) == len(texts) and len(counting.batches) < len(texts) / 2, counting.batches
    alone = get_embedder().embed(texts)
    for i, text in enumerate(texts):
        assert torch.allclose(results[i], alone[i], atol=1e-5), text


def test_an_error_reaches_every_waiting_caller():
    class Broken:
        def embed(self, texts):
            raise RuntimeError("model gone")

    coalescing = CoalescingEmbedder(Broken(), window_s=0.01)
    errors = []

    def call():
        try:
            coalescing.embed_one("x")
        except RuntimeError as exc:
            errors.append(str(exc))

    threads = [threading.Thread(target=call) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == ["model gone"] * 4


def test_the_shared_coalescing_embedder_is_created_once_from_many_threads(monkeypatch):
    from model_adapters import text_embedding

    monkeypatch.setattr(text_embedding, "_coalescing", None)
    got = []
    threads = [threading.Thread(target=lambda: got.append(text_embedding.get_coalescing_embedder())) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert len(got) == 6 and len({id(e) for e in got}) == 1
