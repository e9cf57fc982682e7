"""`concept`: headline, script sized to the target duration, image prompt, caption lines."""

import re

import dagster as dg

from assets.metadata import provenance_metadata
from assets.stages import Stage, StageCall
from model_adapters.types import ConceptRequest, ConceptResult
from resources.manifests import ConceptDoc


def banned_terms_in(texts: dict[str, str], banned: tuple[str, ...]) -> list[str]:
    """`field: term` for every banned term found, matched as a whole word, case-insensitively."""
    found = []
    for field, text in texts.items():
        for term in banned:
            if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", text, flags=re.IGNORECASE):
                found.append(f"{field}: {term!r}")
    return found


async def write_concept(call: StageCall):
    spec = call.spec
    request = ConceptRequest(
        campaign_id=spec.campaign_id,
        variant_id=spec.variant_id,
        product=spec.product,
        audience=spec.audience,
        tone=spec.tone,
        palette=spec.palette,
        banned_terms=spec.banned_terms,
        locale=spec.locale,
        aspect_ratio=spec.aspect_ratio,
        duration_s=spec.duration_s,
        seed=spec.seed,
    )
    routed = await call.session.call("concept", request, seed=spec.seed, variant=call.variant())
    result: ConceptResult = routed.value
    # Whatever model wrote it, banned terms never flow on.
    hits = banned_terms_in(
        {"headline": result.headline, "script": result.script, "image_prompt": result.image_prompt},
        spec.banned_terms,
    )
    if hits:
        raise ValueError(f"{routed.provenance.adapter_id} wrote banned terms: {', '.join(hits)}")
    doc = ConceptDoc(
        partition_key=call.partition_key,
        headline=result.headline,
        script=result.script,
        image_prompt=result.image_prompt,
        caption_lines=result.caption_lines,
        word_count=len(result.script.split()),
        provenance=routed.provenance,
    )
    metadata = {
        "headline": result.headline,
        "script": dg.MetadataValue.md(f"**{result.headline}**\n\n{result.script}"),
        "image_prompt": result.image_prompt,
        "word_count": doc.word_count,
        **provenance_metadata(routed.provenance),
    }
    return doc, metadata


CONCEPT = Stage(
    name="concept",
    upstream=(),
    task="concept",
    group="concept",
    kinds=frozenset({"python"}),
    description="Headline, voiceover script, image prompt and caption lines for the variant.",
    work=write_concept,
)
