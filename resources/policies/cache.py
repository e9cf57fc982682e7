"""The response cache: an unchanged request is never paid for twice.

Key: (provider, adapter kind and version, model, model version, options,
canonical request, hashes of the input blobs). A hit returns the stored
result without calling the provider, across runs and processes. Entries are
JSON records on the artifact store's own storage (filesystem or S3); media
bytes inside a result are content-addressed artifacts and the entry holds
their reference. Nothing is pickled.
"""

import dataclasses
import hashlib
import json
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from model_adapters.types import ConceptResult, ImageResult, Task, VideoResult, VoiceResult, WordTiming, canonical_json

RESULT_TYPES: dict[Task, type] = {
    "concept": ConceptResult,
    "image": ImageResult,
    "refine": ImageResult,
    "voice": VoiceResult,
    "video": VideoResult,
}
_BLOB_EXTENSIONS = {"png": ".png", "wav": ".wav", "mp4": ".mp4"}

PutBlob = Callable[[bytes, str], dict]  # (data, extension) -> a stored artifact reference
GetBlob = Callable[[dict], bytes]  # reference -> data (verified against its sha256)


def cache_key(identity: dict[str, Any], request: BaseModel, blobs: tuple[bytes, ...]) -> str:
    payload = {
        "identity": identity,
        "request": json.loads(canonical_json(request)),
        "blobs": [hashlib.sha256(b).hexdigest() for b in blobs],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def encode_result(result: Any, put_blob: PutBlob) -> dict:
    if isinstance(result, BaseModel):
        return {"kind": "model", "value": result.model_dump(mode="json")}
    fields = {}
    for f in dataclasses.fields(result):
        value = getattr(result, f.name)
        if isinstance(value, bytes):
            fields[f.name] = {"$blob": put_blob(value, _BLOB_EXTENSIONS[f.name])}
        elif f.name == "words":
            fields[f.name] = [w.model_dump(mode="json") for w in value]
        else:
            fields[f.name] = value
    return {"kind": "dataclass", "value": fields}


def decode_result(task: Task, entry: dict, get_blob: GetBlob) -> Any:
    cls = RESULT_TYPES[task]
    if entry["kind"] == "model":
        return cls.model_validate(entry["value"])
    values = {}
    for name, value in entry["value"].items():
        if isinstance(value, dict) and "$blob" in value:
            values[name] = get_blob(value["$blob"])
        elif name == "words":
            values[name] = tuple(WordTiming.model_validate(w) for w in value)
        else:
            values[name] = value
    return cls(**values)


class ResponseCache:
    """Entries as JSON records in the artifact store (`cache/ab/<key>.json`), beside the media they name."""

    NAMESPACE = "cache"

    def __init__(self, store: Any):
        self.store = store

    def read(self, key: str) -> dict | None:
        raw = self.store.read_entry(self.NAMESPACE, key)
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
        except ValueError:  # JSONDecodeError, or bytes that are not even UTF-8 (a planted pickle)
            return None  # a damaged entry is a miss, never a crash
        return entry if isinstance(entry, dict) else None

    def write(self, key: str, entry: dict) -> None:
        self.store.write_entry(self.NAMESPACE, key, json.dumps(entry, sort_keys=True).encode())
