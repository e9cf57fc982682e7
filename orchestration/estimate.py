"""Projected calls and cost of a campaign from the routing config's price table; no provider is called.

    python -m orchestration.estimate briefs/aurora-lamp.yaml [--routing config/routing.cloud.yaml]
    python -m orchestration.estimate --spent aurora-lamp      # what the ledger recorded so far

The projection assumes the first provider of each variant's route answers
(fallbacks cost what their own prices say) and no cache hits.
"""

import argparse
import sys
from collections import defaultdict
from pathlib import Path

from model_adapters.local_concept import concept_word_budget
from model_adapters.types import TASKS, ConceptRequest, ImageRequest, RefineRequest, VideoRequest, VoiceRequest
from resources.brief_schema import Brief, BriefError, load_brief
from resources.model_router import ModelRouter, estimate_cost
from resources.routing_config import RoutingConfig, RoutingConfigError, load_routing_config
from resources.settings import routing_config_path

CHARACTERS_PER_WORD = 6  # spoken scripts average ~5 letters and a space


def projected_requests(brief: Brief, variant_index: int) -> dict[str, object]:
    """Representative requests for one variant, sized like the real ones."""
    variant = brief.variants[variant_index]
    words = concept_word_budget(variant.duration_s)
    return {
        "concept": ConceptRequest(
            campaign_id=brief.campaign_id, variant_id=variant.id, product=brief.product, audience=brief.audience,
            tone=brief.tone, palette=brief.palette, banned_terms=brief.banned_terms, locale=variant.locale,
            aspect_ratio=variant.aspect_ratio, duration_s=variant.duration_s, seed=0,
        ),
        "image": ImageRequest(prompt="x", width=8, height=8, palette=brief.palette, seed=0),
        "refine": RefineRequest(
            source_sha256="0" * 64, min_short_side=1080, aspect_ratio=variant.aspect_ratio,
            palette=brief.palette, headline="x", seed=0,
        ),
        "voice": VoiceRequest(text="x" * (words * CHARACTERS_PER_WORD), locale=variant.locale, voice=variant.voice),
        "video": VideoRequest(
            image_sha256="0" * 64, audio_sha256="0" * 64, audio_duration_s=variant.duration_s, cues=(), width=8, height=8
        ),
    }


def estimate_campaign(brief: Brief, routing: RoutingConfig) -> dict[str, dict[str, float]]:
    """{task: {"calls": n, "cost_usd": x, "providers": "a, b"}} for the whole campaign."""
    totals: dict[str, dict] = defaultdict(lambda: {"calls": 0, "cost_usd": 0.0, "providers": set()})
    for index, variant in enumerate(brief.variants):
        requests = projected_requests(brief, index)
        for task in TASKS:
            provider_id = routing.tasks[task].choose(variant.tier, variant.locale)[0]
            price = routing.providers[provider_id].price
            totals[task]["calls"] += 1
            totals[task]["cost_usd"] += estimate_cost(price, task, requests[task])
            totals[task]["providers"].add(provider_id)
    return {task: {**t, "providers": ", ".join(sorted(t["providers"]))} for task, t in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("briefs", nargs="*", type=Path, help="brief YAML files")
    parser.add_argument("--routing", type=Path, default=None, help="routing config (default: $STUDIO_ROUTING or the local one)")
    parser.add_argument("--spent", action="append", default=[], metavar="CAMPAIGN", help="print the ledger's recorded spend")
    args = parser.parse_args(argv)
    if not args.briefs and not args.spent:
        parser.error("give brief files, --spent CAMPAIGN, or both")

    try:
        routing = load_routing_config(args.routing or routing_config_path())
    except RoutingConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    status = 0
    for path in args.briefs:
        try:
            brief = load_brief(path)
        except BriefError as exc:
            print(f"error: {exc}", file=sys.stderr)
            status = 2
            continue
        print("\n".join(projection_lines(brief, estimate_campaign(brief, routing))))
    if args.spent:
        for campaign_id in args.spent:
            print(spent_line(routing, campaign_id, str(args.routing)))
    return status


def projection_lines(brief: Brief, projection: dict[str, dict]) -> list[str]:
    """The projection as a table: one line per task, then the total and the budget verdict."""
    total = sum(t["cost_usd"] for t in projection.values())
    lines = [
        f"{brief.campaign_id}: {len(brief.variants)} variants, budget ${brief.budget_usd:.2f}",
        f"  {'task':8s} {'calls':>5s} {'cost_usd':>10s}  providers",
    ]
    for task, t in projection.items():
        lines.append(f"  {task:8s} {t['calls']:5d} {t['cost_usd']:10.4f}  {t['providers']}")
    verdict = "within budget" if total <= brief.budget_usd else "OVER BUDGET"
    lines.append(f"  {'total':8s} {sum(t['calls'] for t in projection.values()):5d} {total:10.4f}  {verdict}")
    return lines


def spent_line(routing: RoutingConfig, campaign_id: str, source: str = "routing") -> str:
    """What the ledger (under $STUDIO_HOME/ledger) recorded for a campaign."""
    totals = ModelRouter.from_config(routing, source).ledger().totals(campaign_id)
    return f"{campaign_id}: spent ${totals['spent_usd']:.4f} in {totals['calls']} paid calls"


if __name__ == "__main__":
    sys.exit(main())
