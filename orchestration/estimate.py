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

import dagster as dg

from assets.stages import Pipeline
from model_adapters.tasks import TASK_SPECS, VariantOutline
from orchestration.pipelines import PipelineError, load_pipelines, pipeline_for
from resources.brief_schema import Brief, BriefError, load_brief
from resources.model_router import ModelRouter
from resources.routing_config import RoutingConfig, RoutingConfigError, load_routing_config
from resources.settings import pipelines_dir, routing_config_path


def variant_outline(brief: Brief, variant_index: int) -> VariantOutline:
    variant = brief.variants[variant_index]
    return VariantOutline(
        campaign_id=brief.campaign_id,
        variant_id=variant.id,
        product=brief.product,
        audience=brief.audience,
        tone=brief.tone,
        palette=brief.palette,
        banned_terms=brief.banned_terms,
        locale=variant.locale,
        voice=variant.voice,
        aspect_ratio=variant.aspect_ratio,
        duration_s=variant.duration_s,
    )


def estimate_campaign(brief: Brief, routing: RoutingConfig, pipeline: Pipeline | None = None) -> dict[str, dict]:
    """{stage: {"calls": n, "cost_usd": x, "providers": "a, b"}} for the whole campaign: each
    routed stage of its pipeline, priced by its task's spec from a projected request."""
    pipeline = pipeline or pipeline_for(brief, load_pipelines(pipelines_dir(), routing, "<routing>"))
    totals: dict[str, dict] = defaultdict(lambda: {"calls": 0, "cost_usd": 0.0, "providers": set()})
    for index, variant in enumerate(brief.variants):
        outline = variant_outline(brief, index)
        for stage in pipeline.routed_stages:
            spec = TASK_SPECS[stage.task]
            provider_id = routing.tasks[stage.task].choose(variant.tier, variant.locale)[0]
            price = routing.providers[provider_id].price
            totals[stage.name]["calls"] += 1
            totals[stage.name]["cost_usd"] += spec.estimate_cost(price, spec.projected_request(outline))
            totals[stage.name]["providers"].add(provider_id)
    return {stage: {**t, "providers": ", ".join(sorted(t["providers"]))} for stage, t in totals.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("briefs", nargs="*", type=Path, help="brief YAML files")
    parser.add_argument("--routing", type=Path, default=None, help="routing config (default: $STUDIO_ROUTING or the local one)")
    parser.add_argument("--spent", action="append", default=[], metavar="CAMPAIGN", help="print the ledger's recorded spend")
    args = parser.parse_args(argv)
    if not args.briefs and not args.spent:
        parser.error("give brief files, --spent CAMPAIGN, or both")

    routing_source = str(args.routing or routing_config_path())
    try:
        routing = load_routing_config(routing_source)
        pipelines = load_pipelines(pipelines_dir(), routing, routing_source) if args.briefs else {}
    except (RoutingConfigError, PipelineError) as exc:
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
        try:
            pipeline = pipeline_for(brief, pipelines)
        except PipelineError as exc:
            print(f"error: {path}: {exc}", file=sys.stderr)
            status = 2
            continue
        print("\n".join(projection_lines(brief, estimate_campaign(brief, routing, pipeline))))
    if args.spent:
        for campaign_id in args.spent:
            print(spent_line(routing, campaign_id, str(args.routing)))
    return status


def projection_lines(brief: Brief, projection: dict[str, dict]) -> list[str]:
    """The projection as a table: one line per routed stage, then the total and the budget verdict."""
    total = sum(t["cost_usd"] for t in projection.values())
    lines = [
        f"{brief.campaign_id}: {len(brief.variants)} variants, budget ${brief.budget_usd:.2f}, pipeline {brief.pipeline}",
        f"  {'stage':14s} {'calls':>5s} {'cost_usd':>10s}  providers",
    ]
    for stage, t in projection.items():
        lines.append(f"  {stage:14s} {t['calls']:5d} {t['cost_usd']:10.4f}  {t['providers']}")
    verdict = "within budget" if total <= brief.budget_usd else "OVER BUDGET"
    lines.append(f"  {'total':14s} {sum(t['calls'] for t in projection.values()):5d} {total:10.4f}  {verdict}")
    return lines


def _dagster_instance() -> object | None:
    """The instance of $DAGSTER_HOME, whose database holds a deployment's shared ledger (None: no home)."""
    try:
        return dg.DagsterInstance.get()
    except Exception:  # DAGSTER_HOME unset or unreadable: the local ledger
        return None


def spent_line(routing: RoutingConfig, campaign_id: str, source: str = "routing") -> str:
    """What the shared ledger (resources/policies/shared_limits.py) recorded for a campaign."""
    totals = ModelRouter.from_config(routing, source).ledger(_dagster_instance()).totals(campaign_id)
    return f"{campaign_id}: spent ${totals['spent_usd']:.4f} in {totals['calls']} paid calls"


if __name__ == "__main__":
    sys.exit(main())
