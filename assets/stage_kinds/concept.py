"""`concept`: headline, script sized to the target duration, image prompt, caption lines."""

import dagster as dg

from assets.checks import (
    SEMANTIC_ALIGNMENT_THRESHOLD,
    banned_terms_in,
    check_banned_terms,
    check_semantic_alignment,
    prepare_semantic_alignment,
)
from assets.metadata import provenance_metadata
from assets.stage_kinds.voiceover import MIN_TAIL_S
from assets.stages import CheckKind, CheckOutcome, StageCall, StageCheckInput, StageKind, StageSettings
from model_adapters.tasks import TASK_SPECS
from model_adapters.types import ConceptRequest, ConceptResult
from resources.manifests import ConceptDoc

# The share of the time before the held tail (the voiceover's min_tail_s) a script is written to
# fill at the voice's rate: room for rate differences between scripts.
SCRIPT_FILL = 0.9


class ConceptSettings(StageSettings):
    # How close to the brief a script must be (assets/checks.py says how 0.30 was chosen).
    on_brief_min_cosine: float = SEMANTIC_ALIGNMENT_THRESHOLD


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
        # The script is sized for the voice that will read it (its measured rate), to fill
        # SCRIPT_FILL of the time before the held tail: the voiceover rarely needs re-pacing.
        words_per_second=round(call.session.speaking_rate(call.variant()) * SCRIPT_FILL * max(0.5, 1 - MIN_TAIL_S / spec.duration_s), 3),
    )
    routed = await call.call_model(request)
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


def _banned_terms(item: StageCheckInput) -> CheckOutcome:
    doc: ConceptDoc = item.manifest
    return check_banned_terms({"headline": doc.headline, "script": doc.script, "image_prompt": doc.image_prompt}, item.brief.banned_terms)


def _on_brief(item: StageCheckInput) -> CheckOutcome:
    brief = item.brief
    return check_semantic_alignment(
        item.manifest.script, brief.product, brief.audience, brief.tone, threshold=item.settings.on_brief_min_cosine
    )


CONCEPT = StageKind(
    name="concept",
    description="Headline, voiceover script, image prompt and caption lines for the variant.",
    inputs={},
    output=ConceptDoc,
    task=TASK_SPECS["concept"],
    work=write_concept,
    settings=ConceptSettings,
    checks=(
        CheckKind(
            "no_banned_terms",
            True,
            lambda s: "No banned term of the brief (whole word, any case) in the headline, script or image prompt.",
            _banned_terms,
        ),
        CheckKind(
            "on_brief",
            True,
            lambda s: f"MiniLM cosine between the script and the brief's product, audience and tone >= {s.on_brief_min_cosine:.2f}.",
            _on_brief,
            prepare=prepare_semantic_alignment,
        ),
    ),
    kinds=frozenset({"python"}),
)

KINDS = (CONCEPT,)
