"""`brief`: one variant's slice of its campaign brief, validated, with a stable seed."""

import hashlib

import dagster as dg

from assets.common import variant_asset_kwargs
from assets.partition_runner import run_partitions
from assets.stages import Pipeline
from resources.brief_schema import split_partition_key
from resources.brief_source import BriefFile, BriefSource
from resources.manifests import VariantBriefDoc

BRIEF_CODE_VERSION = "1"


def variant_seed(partition_key: str) -> int:
    """Stable per variant, so a re-run of an unchanged brief reproduces its media."""
    return int.from_bytes(hashlib.sha256(partition_key.encode()).digest()[:4], "big")


def build_brief_asset(pipeline: Pipeline) -> dg.AssetsDefinition:
    @dg.asset(
        key=pipeline.brief_key,
        **variant_asset_kwargs(
            pipeline,
            group=pipeline.group_name,
            kinds={"yaml"},
            description="The variant's slice of its campaign brief (validated YAML from the briefs folder).",
            code_version=BRIEF_CODE_VERSION,
            automation=None,  # the brief sensor requests it
        ),
    )
    def brief(context: dg.AssetExecutionContext, briefs: BriefSource) -> dict[str, VariantBriefDoc]:
        found_by_campaign: dict[str, BriefFile] = {}  # scan the folder once per campaign, not per variant

        async def work(partition_key: str):
            campaign_id, variant_id = split_partition_key(partition_key)
            if campaign_id not in found_by_campaign:
                found_by_campaign[campaign_id] = briefs.find(campaign_id)
            found = found_by_campaign[campaign_id]
            campaign = found.brief
            if campaign.pipeline != pipeline.name:
                raise ValueError(
                    f"{found.path}: pipeline: the brief asks for {campaign.pipeline!r}, this is the {pipeline.name!r} pipeline"
                )
            variant = campaign.variant(variant_id)
            doc = VariantBriefDoc(
                partition_key=partition_key,
                campaign_id=campaign_id,
                variant_id=variant_id,
                brief_path=str(found.path),
                brief_sha256=found.sha256,
                fingerprint=campaign.variant_fingerprint(variant_id),
                product=campaign.product,
                audience=campaign.audience,
                tone=campaign.tone,
                palette=campaign.palette,
                banned_terms=campaign.banned_terms,
                budget_usd=campaign.budget_usd,
                locale=variant.locale,
                voice=variant.voice,
                aspect_ratio=variant.aspect_ratio,
                duration_s=variant.duration_s,
                tier=variant.tier,
                seed=variant_seed(partition_key),
                approval=campaign.approval,
            )
            metadata = {
                "brief_file": dg.MetadataValue.path(str(found.path)),
                "campaign": campaign_id,
                "locale": variant.locale,
                "aspect_ratio": variant.aspect_ratio,
                "duration_target_s": variant.duration_s,
                "tier": variant.tier,
                "fingerprint": doc.fingerprint[:16],
            }
            return doc, metadata

        return run_partitions(context, work)

    return brief
