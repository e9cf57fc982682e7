"""Materialization metadata that reads well in the Dagster UI, with the same keys on every asset."""

import base64
import io
from typing import Any

import dagster as dg
from PIL import Image

from resources.manifests import ArtifactRef, Provenance

# Also the contact sheet's cell size (assets/rollup.py), which reuses the stored thumbnails.
THUMBNAIL_LONG_SIDE = 360


def thumbnail_of(image: Image.Image) -> bytes:
    """A small JPEG of the picture: the UI preview, and stored beside the image for the roll-up."""
    image = image.convert("RGB")
    image.thumbnail((THUMBNAIL_LONG_SIDE, THUMBNAIL_LONG_SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


def jpeg_markdown(jpeg: bytes, alt: str) -> dg.MarkdownMetadataValue:
    """The JPEG inline in markdown, so the asset page shows the picture."""
    encoded = base64.b64encode(jpeg).decode()
    return dg.MetadataValue.md(f"![{alt}](data:image/jpeg;base64,{encoded})")


def provenance_metadata(provenance: Provenance) -> dict[str, Any]:
    # A route experiment's arm is never silent: the UI names the experiment and the arm.
    experiment = (
        {"experiment": provenance.experiment, "experiment_arm": provenance.experiment_arm or "none"} if provenance.experiment else {}
    )
    return {
        **experiment,
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
