"""`draft_image` (the generated visual, no text) and `refined_image` (the still a marketer would post)."""

import io

import dagster as dg
from PIL import Image

from assets.common import TORCH_POOL, variant_asset_kwargs
from assets.metadata import artifact_metadata, image_thumbnail_markdown, provenance_metadata
from assets.partition_runner import run_routed_partitions, variant_context
from model_adapters.types import ImageRequest, ImageResult, RefineRequest, frame_size
from resources.artifact_store import BaseArtifactStore
from resources.manifests import ConceptDoc, ImageArtifact, VariantBriefDoc
from resources.model_router import ModelRouter


class DraftImageSettings(dg.Config):
    short_side: int = 576


class RefinedImageSettings(dg.Config):
    min_short_side: int = 1080


def checked_png(result: ImageResult, provider: str, expect_size: tuple[int, int] | None = None) -> bytes:
    """Decode what a provider returned before it is stored: a broken PNG never becomes an artifact."""
    try:
        with Image.open(io.BytesIO(result.png)) as image:
            image.load()
            size = image.size
            fmt = image.format
    except Exception as exc:  # PIL raises many types for bad data
        raise ValueError(f"{provider} returned an image that does not decode: {exc}") from None
    if fmt != "PNG":
        raise ValueError(f"{provider} returned {fmt}, not PNG")
    if size != (result.width, result.height):
        raise ValueError(f"{provider} reported {result.width}x{result.height} but the PNG is {size[0]}x{size[1]}")
    if expect_size is not None and size != expect_size:
        raise ValueError(f"{provider} returned {size[0]}x{size[1]}, asked for {expect_size[0]}x{expect_size[1]}")
    return result.png


def _image_metadata(png: bytes, manifest: ImageArtifact, alt: str) -> dict:
    return {
        "preview": image_thumbnail_markdown(png, alt),
        "size": f"{manifest.width}x{manifest.height}",
        "aspect_ratio": manifest.aspect_ratio,
        **artifact_metadata(manifest.artifact),
        **provenance_metadata(manifest.provenance),
    }


def build_draft_image_asset(code_version: str) -> dg.AssetsDefinition:
    @dg.asset(
        name="draft_image",
        **variant_asset_kwargs(
            group="image",
            kinds={"torch", "png"},
            description="The generated visual at the variant's exact aspect ratio, without text.",
            code_version=code_version,
            pool=TORCH_POOL,
        ),
    )
    def draft_image(
        context: dg.AssetExecutionContext,
        config: DraftImageSettings,
        router: ModelRouter,
        artifacts: BaseArtifactStore,
        brief: dict[str, VariantBriefDoc],
        concept: dict[str, ConceptDoc],
    ) -> dict[str, ImageArtifact]:
        async def work(session, partition_key: str):
            spec, idea = brief[partition_key], concept[partition_key]
            width, height = frame_size(spec.aspect_ratio, config.short_side)
            request = ImageRequest(prompt=idea.image_prompt, width=width, height=height, palette=spec.palette, seed=spec.seed)
            routed = await session.call("image", request, seed=spec.seed, variant=variant_context(spec))
            png = checked_png(routed.value, routed.provenance.adapter_id, (width, height))
            manifest = ImageArtifact(
                partition_key=partition_key,
                artifact=artifacts.put(png, extension=".png", media_type="image/png"),
                width=width,
                height=height,
                aspect_ratio=spec.aspect_ratio,
                provenance=routed.provenance,
            )
            return manifest, {**_image_metadata(png, manifest, idea.image_prompt), "prompt": idea.image_prompt}

        return run_routed_partitions(context, router, artifacts, work)

    return draft_image


def build_refined_image_asset(code_version: str) -> dg.AssetsDefinition:
    @dg.asset(
        name="refined_image",
        **variant_asset_kwargs(
            group="image",
            kinds={"torch", "png"},
            description="Upscaled (short side >= 1080 px), graded toward the brand palette, sharpened, headline set in safe margins.",
            code_version=code_version,
            pool=TORCH_POOL,
        ),
    )
    def refined_image(
        context: dg.AssetExecutionContext,
        config: RefinedImageSettings,
        router: ModelRouter,
        artifacts: BaseArtifactStore,
        brief: dict[str, VariantBriefDoc],
        concept: dict[str, ConceptDoc],
        draft_image: dict[str, ImageArtifact],
    ) -> dict[str, ImageArtifact]:
        async def work(session, partition_key: str):
            spec, idea, draft = brief[partition_key], concept[partition_key], draft_image[partition_key]
            request = RefineRequest(
                source_sha256=draft.artifact.sha256,
                min_short_side=config.min_short_side,
                aspect_ratio=spec.aspect_ratio,
                palette=spec.palette,
                headline=idea.headline,
                seed=spec.seed,
            )
            source_png = artifacts.get(draft.artifact)
            routed = await session.call("refine", request, source_png, seed=spec.seed, variant=variant_context(spec))
            result = routed.value
            if min(result.width, result.height) < config.min_short_side:
                raise ValueError(
                    f"{routed.provenance.adapter_id} returned {result.width}x{result.height}; "
                    f"the short side must be at least {config.min_short_side}"
                )
            png = checked_png(result, routed.provenance.adapter_id)
            if frame_size(spec.aspect_ratio, min(result.width, result.height)) != (result.width, result.height):
                raise ValueError(f"{routed.provenance.adapter_id} returned {result.width}x{result.height}, not {spec.aspect_ratio}")
            manifest = ImageArtifact(
                partition_key=partition_key,
                artifact=artifacts.put(png, extension=".png", media_type="image/png"),
                width=result.width,
                height=result.height,
                aspect_ratio=spec.aspect_ratio,
                provenance=routed.provenance,
            )
            return manifest, {**_image_metadata(png, manifest, idea.headline), "headline": idea.headline}

        return run_routed_partitions(context, router, artifacts, work)

    return refined_image
