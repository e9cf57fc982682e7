"""Serving stored artifacts to the browser: only files a manifest names, with range requests.

A file is asked for as `/files/<campaign>.<variant>/<sha256>.<ext>`: the
variant's stored manifests are read and the reference whose sha256 matches
is served through the artifact store (`get`, or `read_range` for a part), so
the store's own checks apply (a filesystem path must be the store's, an S3
key the bucket's and prefix's). Nothing the request says becomes a path or a
key: an id that no manifest of that variant names is a 404.

Ranges (RFC 9110 §14): one `bytes=a-b`, `bytes=a-` or `bytes=-n` range gets a
206 with `Content-Range`; several ranges, or a malformed header, get the
whole file (a server may ignore `Range`); a range starting past the end gets
a 416. A part is at most `MAX_PART_BYTES`, so an open-ended `bytes=0-` from a
`<video>` does not read a long video at once; the browser asks for the rest.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel
from starlette.responses import Response

from resources.artifact_store import BaseArtifactStore
from resources.manifests import ArtifactRef

MAX_PART_BYTES = 4 * 1024 * 1024
FILE_NAME = re.compile(r"(?P<sha256>[0-9a-f]{64})(?P<extension>\.[a-z0-9]{1,8})?")
_RANGE = re.compile(r"bytes=(?P<start>\d*)-(?P<end>\d*)")


class Unsatisfiable(Exception):
    """A range that starts past the end of the file (416)."""


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """`[start, stop)` for a single satisfiable byte range, None to send the whole file;
    `Unsatisfiable` when the range starts at or past the end."""
    if not header:
        return None
    match = _RANGE.fullmatch(header.strip())
    if match is None:  # several ranges, another unit, or garbage: ignore it
        return None
    start_text, end_text = match["start"], match["end"]
    if not start_text:
        if not end_text:
            return None
        suffix = int(end_text)
        if suffix == 0 or size == 0:
            raise Unsatisfiable
        return max(0, size - suffix), size
    start = int(start_text)
    end = int(end_text) if end_text else None
    if end is not None and end < start:
        return None  # invalid: ignored, per RFC 9110
    if start >= size:
        raise Unsatisfiable
    end = size - 1 if end is None else end
    return start, min(end, size - 1) + 1


def artifact_refs(value: Any) -> Iterator[ArtifactRef]:
    """Every `ArtifactRef` inside a manifest (nested models, tuples, dicts)."""
    if isinstance(value, ArtifactRef):
        yield value
    elif isinstance(value, BaseModel):
        for name in type(value).model_fields:
            yield from artifact_refs(getattr(value, name))
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from artifact_refs(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from artifact_refs(item)


def ref_extension(ref: ArtifactRef) -> str:
    name = ref.uri.rsplit("/", 1)[-1]
    return name[len(ref.sha256) :] if name.startswith(ref.sha256) else ""


def file_name(ref: ArtifactRef) -> str:
    return ref.sha256 + ref_extension(ref)


def artifact_response(store: BaseArtifactStore, ref: ArtifactRef, range_header: str | None, if_none_match: str | None) -> Response:
    """The file behind `ref` (or the asked part of it), content-addressed so cached for good."""
    etag = f'"{ref.sha256}"'
    headers = {
        "Accept-Ranges": "bytes",
        "ETag": etag,
        "Cache-Control": "private, max-age=31536000, immutable",
        "Content-Disposition": f'inline; filename="{file_name(ref)}"',
    }
    if if_none_match and etag in [tag.strip() for tag in if_none_match.split(",")]:
        return Response(status_code=304, headers=headers)
    size = ref.size_bytes
    try:
        wanted = parse_range(range_header, size)
    except Unsatisfiable:
        return Response(status_code=416, headers={**headers, "Content-Range": f"bytes */{size}"})
    if wanted is None:
        return Response(store.get(ref), status_code=200, media_type=ref.media_type, headers=headers)
    start, stop = wanted[0], min(wanted[1], wanted[0] + MAX_PART_BYTES)
    body = store.read_range(ref, start, stop)
    if len(body) != stop - start:
        raise ValueError(f"artifact {ref.uri}: read {len(body)} bytes of {start}-{stop - 1}")
    return Response(
        body, status_code=206, media_type=ref.media_type, headers={**headers, "Content-Range": f"bytes {start}-{stop - 1}/{size}"}
    )
