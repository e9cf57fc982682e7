"""`image` (the generated visual, no text) and `refine` (the still a marketer would post)."""

import io

from PIL import Image

from assets.checks import check_png
from assets.metadata import artifact_metadata, jpeg_markdown, provenance_metadata, thumbnail_of
from assets.stages import CheckKind, CheckOutcome, StageCall, StageCheckInput, StageKind, StageSettings
from model_adapters.media.png import remember_decoded
from model_adapters.received import describe_received, error_text
from model_adapters.tasks import TASK_SPECS
from model_adapters.types import ImageRequest, ImageResult, RefineRequest, frame_size
from resources.manifests import ConceptDoc, ImageArtifact


class DraftImageSettings(StageSettings):
    short_side: int = 576


class RefinedImageSettings(StageSettings):
    min_short_side: int = 1080


def checked_png(result: ImageResult, provider: str, expect_size: tuple[int, int] | None = None) -> tuple[bytes, bytes]:
    """Decode what a provider returned before it is stored (a broken PNG never becomes an
    artifact); the PNG and, from the same decode, the preview JPEG (a 1080p PNG takes ~50 ms)."""
    try:
        with Image.open(io.BytesIO(result.png)) as image:
            image.load()
            remember_decoded(result.png, image)  # the png_valid check reads the same bytes next
            size = image.size
            fmt = image.format
            thumbnail = thumbnail_of(image)
    except Exception as exc:  # PIL raises many types for bad data
        raise ValueError(
            f"{provider} returned an image that does not decode ({error_text(exc)}); {describe_received(result.png)}"
        ) from None
    if fmt != "PNG":
        raise ValueError(f"{provider} returned {fmt}, not PNG")
    if size != (result.width, result.height):
        raise ValueError(f"{provider} reported {result.width}x{result.height} but the PNG is {size[0]}x{size[1]}")
    if expect_size is not None and size != expect_size:
        raise ValueError(f"{provider} returned {size[0]}x{size[1]}, asked for {expect_size[0]}x{expect_size[1]}")
    return result.png, thumbnail


def _checked_and_stored(artifacts, result: ImageResult, provider: str, expect_size=None):
    """Decode and check the PNG; store it and its preview JPEG (the roll-up tiles it)."""
    png, jpeg = checked_png(result, provider, expect_size)
    artifact = artifacts.put(png, extension=".png", media_type="image/png")
    return artifact, artifacts.put(jpeg, extension=".jpg", media_type="image/jpeg"), jpeg


def _image_metadata(manifest: ImageArtifact, preview) -> dict:
    return {
        "preview": preview,
        "size": f"{manifest.width}x{manifest.height}",
        "aspect_ratio": manifest.aspect_ratio,
        **artifact_metadata(manifest.artifact),
        **provenance_metadata(manifest.provenance),
    }


async def draft_image(call: StageCall):
    spec, idea = call.spec, call.inputs["concept"]
    assert isinstance(idea, ConceptDoc)
    width, height = frame_size(spec.aspect_ratio, call.settings.short_side)
    request = ImageRequest(prompt=idea.image_prompt, width=width, height=height, palette=spec.palette, seed=spec.seed)
    routed = await call.call_model(request)
    artifact, thumbnail_ref, thumbnail = await call.off_loop(
        _checked_and_stored, call.artifacts, routed.value, routed.provenance.adapter_id, (width, height)
    )
    manifest = ImageArtifact(
        partition_key=call.partition_key,
        artifact=artifact,
        width=width,
        height=height,
        aspect_ratio=spec.aspect_ratio,
        provenance=routed.provenance,
        thumbnail=thumbnail_ref,
    )
    preview = jpeg_markdown(thumbnail, idea.image_prompt)
    return manifest, {**_image_metadata(manifest, preview), "prompt": idea.image_prompt}


def _refined_size_ok(result: ImageResult, provider: str, aspect_ratio: str, min_short_side: int) -> None:
    if min(result.width, result.height) < min_short_side:
        raise ValueError(f"{provider} returned {result.width}x{result.height}; the short side must be at least {min_short_side}")
    if frame_size(aspect_ratio, min(result.width, result.height)) != (result.width, result.height):
        raise ValueError(f"{provider} returned {result.width}x{result.height}, not {aspect_ratio}")


async def refined_image(call: StageCall):
    spec, idea, draft = call.spec, call.inputs["concept"], call.inputs["image"]
    min_short_side = call.settings.min_short_side
    request = RefineRequest(
        source_sha256=draft.artifact.sha256,
        min_short_side=min_short_side,
        aspect_ratio=spec.aspect_ratio,
        palette=spec.palette,
        headline=idea.headline,
        seed=spec.seed,
    )
    source_png = await call.input_bytes("image", draft.artifact)
    routed = await call.call_model(request, source_png)
    result = routed.value
    _refined_size_ok(result, routed.provenance.adapter_id, spec.aspect_ratio, min_short_side)
    artifact, thumbnail_ref, thumbnail = await call.off_loop(_checked_and_stored, call.artifacts, result, routed.provenance.adapter_id)
    manifest = ImageArtifact(
        partition_key=call.partition_key,
        artifact=artifact,
        width=result.width,
        height=result.height,
        aspect_ratio=spec.aspect_ratio,
        provenance=routed.provenance,
        thumbnail=thumbnail_ref,
    )
    preview = jpeg_markdown(thumbnail, idea.headline)
    return manifest, {**_image_metadata(manifest, preview), "headline": idea.headline}


def _png_valid(item: StageCheckInput) -> CheckOutcome:
    image: ImageArtifact = item.manifest
    return check_png(
        item.artifacts.get(image.artifact),
        item.brief.aspect_ratio,
        declared_size=(image.width, image.height),
        min_short_side=getattr(item.settings, "min_short_side", None),
    )


def _describe_png(settings) -> str:
    text = "The PNG decodes, at its declared size and exactly the variant's aspect ratio"
    minimum = getattr(settings, "min_short_side", None)
    return text + (f"; short side >= {minimum} px." if minimum is not None else ".")


PNG_VALID = CheckKind("png_valid", True, _describe_png, _png_valid)


def _image_files(stage: str, manifest: ImageArtifact) -> dict:
    return {stage: manifest.artifact}


def _tile(manifest: ImageArtifact):
    """The stored preview (sized for a contact-sheet cell), else the full PNG."""
    return manifest.thumbnail or manifest.artifact


IMAGE = StageKind(
    name="image",
    description="The generated visual at the variant's exact aspect ratio, without text.",
    inputs={"concept": ConceptDoc},
    output=ImageArtifact,
    task=TASK_SPECS["image"],
    work=draft_image,
    settings=DraftImageSettings,
    checks=(PNG_VALID,),
    accelerator=True,
    kinds=frozenset({"torch", "png"}),
    rollup_files=_image_files,
    contact_sheet_tile=_tile,
)

REFINE = StageKind(
    name="refine",
    description="Upscaled (short side >= 1080 px), graded toward the brand palette, sharpened, headline set in safe margins.",
    inputs={"concept": ConceptDoc, "image": ImageArtifact},
    output=ImageArtifact,
    task=TASK_SPECS["refine"],
    work=refined_image,
    settings=RefinedImageSettings,
    checks=(PNG_VALID,),
    accelerator=True,
    kinds=frozenset({"torch", "png"}),
    rollup_files=_image_files,
    contact_sheet_tile=_tile,
)

KINDS = (IMAGE, REFINE)
