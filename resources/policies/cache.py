"""The response cache: an unchanged request is never paid for twice.

Key: (provider, adapter kind and version, model, model version, options,
canonical request, hashes of the input blobs). A hit returns the stored
result without calling the provider, across runs and processes. An answer
that a blocking check rejected, or that a later stage proved broken, is
marked `rejected` in its entry and is never served again. Entries are
JSON records on the artifact store's own storage (filesystem or S3); media
bytes inside a result are content-addressed artifacts and the entry holds
their reference. Nothing is pickled.
"""

import hashlib
import json
from collections.abc import Callable
from typing import Any, Protocol

from pydantic import BaseModel

from model_adapters.tasks import Blob, task_spec
from model_adapters.types import Task, canonical_json

JsonObject = dict[str, Any]  # a JSON object as `json.loads` returns it
PutBlob = Callable[[bytes, Blob], JsonObject]  # (data, how it is stored) -> a stored artifact reference
GetBlob = Callable[[JsonObject], bytes]  # reference -> data (verified against its sha256)


class EntryStore(Protocol):
    """Where entries live: the artifact store's JSON records (resources/artifact_store.py)."""

    def read_entry(self, namespace: str, key: str) -> bytes | None: ...

    def write_entry(self, namespace: str, key: str, data: bytes) -> None: ...


def cache_key(identity: dict[str, Any], request: BaseModel, blobs: tuple[bytes, ...]) -> str:
    payload = {
        "identity": identity,
        "request": json.loads(canonical_json(request)),
        "blobs": [hashlib.sha256(b).hexdigest() for b in blobs],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def encode_result(task: Task, result: Any, put_blob: PutBlob) -> JsonObject:
    """A result as a JSON entry; its bytes (the task spec's blobs) stored through `put_blob`."""
    return task_spec(task).encode_result(result, put_blob)


def decode_result(task: Task, entry: JsonObject, get_blob: GetBlob) -> Any:
    return task_spec(task).decode_result(entry, get_blob)


class ResponseCache:
    """Entries as JSON records in the artifact store (`cache/ab/<key>.json`), beside the media they name."""

    NAMESPACE = "cache"

    def __init__(self, store: EntryStore):
        self.store = store

    def read(self, key: str) -> JsonObject | None:
        raw = self.store.read_entry(self.NAMESPACE, key)
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:  # JSONDecodeError, or bytes that are not even UTF-8 (a planted pickle)
            return None  # a damaged entry is a miss, never a crash
        return entry if isinstance(entry, dict) else None

    def write(self, key: str, entry: JsonObject) -> None:
        self.store.write_entry(self.NAMESPACE, key, json.dumps(entry, sort_keys=True).encode())

    def mark_rejected(self, key: str, reason: str) -> bool:
        """Keep the entry (what was answered stays inspectable) but never serve it again; a new
        answer to the same request writes over it. False when there is no such entry."""
        entry = self.read(key)
        if entry is None:
            return False
        self.write(key, {**entry, "rejected": reason})
        return True

    def is_rejected(self, key: str) -> bool:
        entry = self.read(key)
        return bool(entry and entry.get("rejected"))
