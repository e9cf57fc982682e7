"""Materialization metadata that reads well in the Dagster UI, with the same keys on every asset."""

import base64
import io
from typing import Any

import dagster as dg
from PIL import Image

from resources.manifests import ArtifactRef, Provenance

THUMBNAIL_LONG_SIDE = 320


def image_thumbnail_markdown(png: bytes, alt: str) -> dg.MarkdownMetadataValue:
    """A small JPEG inline in markdown, so the asset page shows the picture."""
    with Image.open(io.BytesIO(png)) as image:
        image = image.convert("RGB")
        image.thumbnail((THUMBNAIL_LONG_SIDE, THUMBNAIL_LONG_SIDE))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
    encoded = base64.b64encode(buffer.getvalue()).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/jpeg;base64,{encoded})")


def provenance_metadata(provenance: Provenance) -> dict[str, Any]:
    return {
        "provider": provenance.provider,
        "adapter": provenance.adapter_id,
        "model": f"{provenance.model}@{provenance.model_version}",
        "seed": provenance.seed if provenance.seed is not None else -1,
        "latency_s": dg.MetadataValue.float(provenance.latency_s),
        "cost_usd": dg.MetadataValue.float(provenance.cost_usd),
        "attempts": provenance.attempts,
        "cache_hit": provenance.cache_hit,
        "waited_s": dg.MetadataValue.float(provenance.waited_s),
        "fallbacks": ", ".join(provenance.fallbacks) or "none",
        "attempt_errors": dg.MetadataValue.md("\n".join(f"- {e}" for e in provenance.errors) or "none"),
        "request_hash": provenance.request_hash[:16],
    }


def artifact_metadata(ref: ArtifactRef, label: str = "file") -> dict[str, Any]:
    path = ref.uri.removeprefix("file://")
    return {
        label: dg.MetadataValue.path(path) if ref.uri.startswith("file://") else dg.MetadataValue.url(ref.uri),
        f"{label}_sha256": ref.sha256[:16],
        f"{label}_bytes": ref.size_bytes,
    }
