"""`campaign_report`: per campaign, the route experiments' arms side by side.

A sibling of the roll-up (assets/rollup.py), with its shape and automation:
one non-partitioned asset over every variant of the pipeline, reading the
stored manifests through the manifest IO manager, reporting each campaign
whose variants all have every stage stored. It exists in a pipeline while the
routing config runs an experiment on one of its tasks (why not always: with
nothing to compare it would be an empty box on every graph; the reports of a
finished experiment stay in the instance's history and the artifact store).
Why not part of the roll-up: the roll-up is the campaign's deliverable and
keeps its shape whatever the routing does; the report is about the routing.

Everything it says comes from the manifests, so its figures are the sums
over them (tests/test_experiments.py recomputes them):

- which variants took which arm: the answer's provenance (`experiment`,
  `experiment_arm`), stamped by the router; in shadow mode every variant is
  in both arms, the candidate's make being the manifest's `shadow`;
- per arm, for the experiment's stage: variants, total and mean cost, mean
  and median latency, the providers that answered, each check's pass rate;
- the mean on-brief score (`on_brief.cosine`) and transcript word error rate
  (`speech_intelligible.word_error_rate`) the checks measured: the arm's own
  output's when its stage measures it, else (share mode, where the arm
  decides everything after it) the variant's, wherever its checks measured it;
- a contact sheet of the experiment stage's pictures in pairs, control left,
  candidate right: the same variant's two makes in shadow mode, the arms'
  variants side by side in share mode.

Written per campaign to the artifact store: the sheet (PNG) and the report
(`CampaignReportDoc`, JSON); the materialization shows a markdown table per
experiment, the sheet's preview and the files.
"""

import hashlib
import io
import json
import statistics
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Literal

import dagster as dg
from PIL import Image, ImageDraw

from assets.common import MANIFEST_IO_MANAGER_KEY
from assets.metadata import jpeg_markdown, thumbnail_of
from assets.rollup import (
    BACKGROUND,
    CELL,
    PAD,
    ROLLUP_AUTOMATION,
    SUBTEXT,
    TEXT,
    _Doc,
    _font,
    _load_variant,
    _uri_metadata,
    campaign_variants,
    sheet_png,
    variant_stages,
)
from assets.stages import REPORT_ASSET, Pipeline, PipelineStage
from resources.manifests import ArtifactRef, Provenance
from resources.routing_config import RoutingConfig

REPORT_CODE_VERSION = "1"
# Drawn sheets are found again by what they show, beside the roll-up's (distinct keys: what they hash differs).
REPORT_SHEET_NAMESPACE = "contact-sheets"
ON_BRIEF = "on_brief.cosine"
WORD_ERROR_RATE = "speech_intelligible.word_error_rate"
ARMS: tuple[str, str] = ("control", "candidate")


class ArmFigures(_Doc):
    arm: Literal["control", "candidate"]
    variants: int
    partition_keys: tuple[str, ...]
    failed: int  # shadow candidates that made nothing (their error is on the manifest's `shadow`)
    providers: dict[str, int]  # provider id -> answers it gave (fallbacks show here)
    total_cost_usd: float
    mean_cost_usd: float | None
    mean_latency_s: float | None
    p50_latency_s: float | None
    check_pass_rates: dict[str, float]  # check -> share of the arm's outputs that passed it
    on_brief_score: float | None  # mean MiniLM cosine; None: nothing measured it
    on_brief_measured: int
    word_error_rate: float | None  # mean transcript WER; None: no voice, or none judged
    word_error_rate_measured: int


class ExperimentReport(_Doc):
    experiment: str
    task: str
    stage: str
    mode: Literal["share", "shadow"]
    share: float | None  # from the routing config, while it still runs the experiment
    control: ArmFigures
    candidate: ArmFigures
    outside: tuple[str, ...]  # variants in no arm (a route rule took them)
    contact_sheet: ArtifactRef | None


class CampaignReportDoc(_Doc):
    manifest_type: Literal["campaign_report"] = "campaign_report"
    campaign_id: str
    product: str
    experiments: tuple[ExperimentReport, ...]


# --- pure parts ---------------------------------------------------------------------------


class ArmOutput:
    """One arm's output of the experiment's stage for one variant: how it was made, which checks
    passed, what they measured, and the variant's other manifests (share-mode measurements)."""

    def __init__(
        self,
        partition_key: str,
        provenance: Provenance | None,
        checks_passed: Iterable[str],
        measurements: Mapping[str, float],
        variant_measurements: Mapping[str, float] = {},
        tile: ArtifactRef | None = None,
        failed: bool = False,
    ):
        self.partition_key, self.provenance, self.failed, self.tile = partition_key, provenance, failed, tile
        self.checks_passed, self.measurements, self.variant_measurements = (
            frozenset(checks_passed),
            dict(measurements),
            dict(variant_measurements),
        )

    def measurement(self, name: str) -> float | None:
        return self.measurements.get(name, self.variant_measurements.get(name))


def _mean(values: list[float], digits: int) -> float | None:
    return round(sum(values) / len(values), digits) if values else None


def arm_figures(arm: str, outputs: list[ArmOutput], checks: Iterable[str]) -> ArmFigures:
    made = [o for o in outputs if not o.failed]
    answered = [o.provenance for o in outputs if o.provenance is not None]
    costs = [p.cost_usd for p in answered]
    latencies = [p.latency_s for p in answered]
    on_brief = [v for v in (o.measurement(ON_BRIEF) for o in made) if v is not None]
    wer = [v for v in (o.measurement(WORD_ERROR_RATE) for o in made) if v is not None]
    providers: dict[str, int] = defaultdict(int)
    for provenance in answered:
        providers[provenance.adapter_id] += 1
    return ArmFigures(
        arm=arm,
        variants=len(outputs),
        partition_keys=tuple(o.partition_key for o in outputs),
        failed=len(outputs) - len(made),
        providers=dict(sorted(providers.items())),
        total_cost_usd=round(sum(costs), 6),
        mean_cost_usd=_mean(costs, 6),
        mean_latency_s=_mean(latencies, 4),
        p50_latency_s=round(statistics.median(latencies), 4) if latencies else None,
        # Over every output of the arm: one that made nothing passed nothing.
        check_pass_rates={name: round(sum(name in o.checks_passed for o in outputs) / len(outputs), 4) for name in checks}
        if outputs
        else {},
        on_brief_score=_mean(on_brief, 4),
        on_brief_measured=len(on_brief),
        word_error_rate=_mean(wer, 4),
        word_error_rate_measured=len(wer),
    )


def arm_outputs(
    stage: str, manifests_by_key: Mapping[str, Mapping[str, object]], experiment: str
) -> tuple[dict[str, list[ArmOutput]], list[str], str]:
    """({arm: outputs}, the keys in no arm, the mode) of `experiment` on `stage` over a campaign's
    variants ({key: {stage: manifest}})."""
    arms: dict[str, list[ArmOutput]] = {arm: [] for arm in ARMS}
    outside, mode = [], "share"
    for key, manifests in sorted(manifests_by_key.items()):
        manifest = manifests[stage]
        measured_elsewhere: dict[str, float] = {}
        for other, doc in manifests.items():
            if other != stage:
                measured_elsewhere.update(getattr(doc, "check_measurements", {}) or {})
        shadow = manifest.shadow
        if shadow is not None and shadow.experiment == experiment:
            mode = "shadow"  # the arms' outputs are two makes of one stage: compared on their own measurements
            arms["control"].append(
                ArmOutput(key, manifest.provenance, manifest.checks_passed, manifest.check_measurements, tile=_tile_of(manifest))
            )
            arms["candidate"].append(
                ArmOutput(
                    key,
                    shadow.provenance,
                    shadow.checks_passed,
                    shadow.check_measurements,
                    tile=shadow.tile,
                    failed=shadow.error is not None,
                )
            )
        elif manifest.provenance.experiment == experiment and manifest.provenance.experiment_arm in ARMS:
            arms[manifest.provenance.experiment_arm].append(
                ArmOutput(
                    key, manifest.provenance, manifest.checks_passed, manifest.check_measurements, measured_elsewhere, _tile_of(manifest)
                )
            )
        else:
            outside.append(key)
    return arms, outside, mode


def _tile_of(manifest: object) -> ArtifactRef | None:
    return getattr(manifest, "thumbnail", None) or getattr(manifest, "artifact", None) if hasattr(manifest, "width") else None


def experiments_in(stage: str, manifests_by_key: Mapping[str, Mapping[str, object]]) -> list[str]:
    """The experiments the stored outputs of `stage` were made under, in order of appearance."""
    found: dict[str, None] = {}
    for manifests in manifests_by_key.values():
        manifest = manifests[stage]
        if manifest.shadow is not None:
            found[manifest.shadow.experiment] = None
        if manifest.provenance.experiment is not None:
            found[manifest.provenance.experiment] = None
    return list(found)


def pairs_sheet(
    title: str, headings: tuple[str, str], pairs: list[tuple[tuple[str, bytes] | None, tuple[str, bytes] | None]]
) -> Image.Image:
    """Two columns, control left and candidate right: each row a pair of (label, picture bytes),
    either side may be empty (share mode: the arms need not be the same size)."""
    if not pairs:
        raise ValueError("a contact sheet needs at least one pair")
    label_h, header_h = 30, 90
    width = PAD + 2 * (CELL + PAD)
    height = header_h + len(pairs) * (CELL + label_h + PAD) + PAD
    sheet = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    draw.text((PAD, 12), title, fill=TEXT, font=_font(24))
    for column, heading in enumerate(headings):
        draw.text((PAD + column * (CELL + PAD), 52), heading, fill=SUBTEXT, font=_font(18))
    for row, pair in enumerate(pairs):
        y0 = header_h + row * (CELL + label_h + PAD)
        for column, side in enumerate(pair):
            if side is None:
                continue
            label, picture = side
            x0 = PAD + column * (CELL + PAD)
            with Image.open(io.BytesIO(picture)) as image:
                thumb = image.convert("RGB")
                thumb.thumbnail((CELL, CELL), Image.Resampling.LANCZOS)
            sheet.paste(thumb, (x0 + (CELL - thumb.width) // 2, y0 + (CELL - thumb.height) // 2))
            draw.text((x0, y0 + CELL + 4), label, fill=TEXT, font=_font(16))
    return sheet


def _pairs(arms: Mapping[str, list[ArmOutput]], mode: str) -> list[tuple[ArmOutput | None, ArmOutput | None]]:
    control, candidate = arms["control"], arms["candidate"]
    if mode == "shadow":  # the same variant's two makes
        return list(zip(control, candidate, strict=False))
    return [
        (control[i] if i < len(control) else None, candidate[i] if i < len(candidate) else None)
        for i in range(max(len(control), len(candidate)))
    ]


def report_rows(report: ExperimentReport) -> list[tuple[str, str, str]]:
    """(figure, control, candidate) for one experiment: the table the asset's markdown and the
    review app's report page both show."""

    def money(value: float | None) -> str:
        return "n/a" if value is None else f"${value:.4f}"

    def number(value: float | None, unit: str = "") -> str:
        return "n/a" if value is None else f"{value:.3f}{unit}"

    arms = (report.control, report.candidate)
    checks = list(dict.fromkeys([*report.control.check_pass_rates, *report.candidate.check_pass_rates]))  # an empty arm has none
    rows = [
        ("variants", [str(a.variants) for a in arms]),
        ("made nothing", [str(a.failed) for a in arms]),
        ("answered by", [", ".join(f"{p} ({n})" for p, n in a.providers.items()) or "none" for a in arms]),
        ("total cost", [money(a.total_cost_usd) for a in arms]),
        ("mean cost", [money(a.mean_cost_usd) for a in arms]),
        ("mean latency", [number(a.mean_latency_s, " s") for a in arms]),
        ("p50 latency", [number(a.p50_latency_s, " s") for a in arms]),
        *[(f"{check} passed", [f"{a.check_pass_rates.get(check, 0.0):.0%}" if a.variants else "n/a" for a in arms]) for check in checks],
        ("on-brief score (mean)", [number(a.on_brief_score) + f" ({a.on_brief_measured})" for a in arms]),
        ("transcript WER (mean)", [number(a.word_error_rate) + f" ({a.word_error_rate_measured})" for a in arms]),
    ]
    return [(name, control, candidate) for name, (control, candidate) in rows]


def report_markdown(report: ExperimentReport) -> str:
    """The arms side by side, figure per row."""
    how = (
        "shadow: every variant, both routes"
        if report.mode == "shadow"
        else f"share: {report.share if report.share is not None else '?'} to the candidate"
    )
    lines = [
        f"**{report.experiment}** on `{report.stage}` (task {report.task}; {how})",
        "",
        "| | control | candidate |",
        "| --- | --- | --- |",
        *[f"| {name} | {control} | {candidate} |" for name, control, candidate in report_rows(report)],
    ]
    if report.outside:
        lines += ["", f"In no arm (a route rule took them): {', '.join(report.outside)}"]
    return "\n".join(lines)


# --- the asset ----------------------------------------------------------------------------


def experiment_stages(pipeline: Pipeline, routing: RoutingConfig) -> list[PipelineStage]:
    """The pipeline's stages whose task the routing runs an experiment on."""
    return [stage for stage in pipeline.routed_stages if stage.task in routing.experiments]


def _drawn_pairs_sheet(
    store, title: str, headings: tuple[str, str], pairs: list[tuple[ArmOutput | None, ArmOutput | None]]
) -> tuple[ArtifactRef, bytes]:
    """The sheet and its preview JPEG, drawn once per content (as the roll-up's sheet is)."""

    def side(output: ArmOutput | None):
        return None if output is None or output.tile is None else (output.partition_key.split(".", 1)[-1], output.tile)

    sides = [(side(a), side(b)) for a, b in pairs]
    key = hashlib.sha256(json.dumps([title, headings, [[s and (s[0], s[1].sha256) for s in pair] for pair in sides]]).encode()).hexdigest()
    raw = store.read_entry(REPORT_SHEET_NAMESPACE, key)
    if raw is not None:
        try:
            entry = json.loads(raw)
            sheet_ref, preview_ref = ArtifactRef.model_validate(entry["sheet"]), ArtifactRef.model_validate(entry["preview"])
            if store.holds(sheet_ref):
                return sheet_ref, store.get(preview_ref)
        except (ValueError, KeyError, TypeError, FileNotFoundError):
            pass  # a damaged entry or a lost file: drawn again
    sheet = pairs_sheet(title, headings, [tuple(s and (s[0], store.get(s[1])) for s in pair) for pair in sides])
    sheet_ref = store.put(sheet_png(sheet), extension=".png", media_type="image/png")
    preview = thumbnail_of(sheet)
    preview_ref = store.put(preview, extension=".jpg", media_type="image/jpeg")
    store.write_entry(
        REPORT_SHEET_NAMESPACE, key, json.dumps({"sheet": sheet_ref.model_dump(), "preview": preview_ref.model_dump()}).encode()
    )
    return sheet_ref, preview


def campaign_report(
    campaign_id: str, pipeline: Pipeline, routing: RoutingConfig, manifests_by_key: Mapping[str, Mapping[str, object]], store
) -> CampaignReportDoc:
    """The report of one campaign whose variants are all stored ({key: {stage: manifest}})."""
    reports = []
    for stage in experiment_stages(pipeline, routing):
        checks = [name for name, _, _ in stage.checks]
        for experiment in experiments_in(stage.name, manifests_by_key):
            arms, outside, mode = arm_outputs(stage.name, manifests_by_key, experiment)
            configured = routing.experiments.get(stage.task)
            configured = configured if configured is not None and configured.name == experiment else None
            sheet = None
            pairs = [pair for pair in _pairs(arms, mode) if any(o is not None and o.tile is not None for o in pair)]
            if pairs:
                routes = (
                    ("control", "candidate")
                    if configured is None
                    else (f"control: {', '.join(configured.control)}", f"candidate: {', '.join(configured.candidate)}")
                )
                sheet, _ = _drawn_pairs_sheet(store, f"{campaign_id}: {experiment} ({stage.name})", routes, pairs)
            reports.append(
                ExperimentReport(
                    experiment=experiment,
                    task=stage.task,
                    stage=stage.name,
                    mode=mode,
                    share=configured.share if configured is not None else None,
                    control=arm_figures("control", arms["control"], checks),
                    candidate=arm_figures("candidate", arms["candidate"], checks),
                    outside=tuple(outside),
                    contact_sheet=sheet,
                )
            )
    first = manifests_by_key[min(manifests_by_key)]["brief"]
    return CampaignReportDoc(campaign_id=campaign_id, product=first.product, experiments=tuple(reports))


def build_campaign_report_asset(pipeline: Pipeline, routing: RoutingConfig) -> dg.AssetsDefinition:
    names = ", ".join(f"{routing.experiments[s.task].name} on {s.name}" for s in experiment_stages(pipeline, routing))

    @dg.asset(
        key=pipeline.key(REPORT_ASSET),
        deps=[dg.AssetDep(pipeline.key(stage), partition_mapping=dg.AllPartitionMapping()) for stage in variant_stages(pipeline)],
        required_resource_keys={MANIFEST_IO_MANAGER_KEY, "artifacts"},
        automation_condition=ROLLUP_AUTOMATION,
        group_name=pipeline.group_name,
        kinds={"png", "json"},
        code_version=REPORT_CODE_VERSION,
        owners=["team:creative-ops"],
        description=f"Per campaign of the {pipeline.name!r} pipeline whose variants are all done: the route experiments' arms side by side ({names}).",
    )
    def campaign_report_asset(context: dg.AssetExecutionContext) -> dg.MaterializeResult:
        io_manager = getattr(context.resources, MANIFEST_IO_MANAGER_KEY)
        store = context.resources.artifacts
        metadata: dict[str, object] = {}
        done, pending = [], []
        for campaign_id, keys in campaign_variants(context.instance, pipeline):
            loaded = {key: _load_variant(io_manager, pipeline, key) for key in keys}
            if any(gaps for _, gaps in loaded.values()):
                pending.append(campaign_id)
                continue
            doc = campaign_report(campaign_id, pipeline, routing, {key: manifests for key, (manifests, _) in loaded.items()}, store)
            ref = store.put(
                json.dumps(doc.model_dump(mode="json"), indent=2, sort_keys=True).encode(), extension=".json", media_type="application/json"
            )
            done.append(campaign_id)
            metadata[f"{campaign_id}/report_file"] = _uri_metadata(ref)
            metadata[f"{campaign_id}/report"] = dg.MetadataValue.md(
                "\n\n".join(report_markdown(r) for r in doc.experiments) or "no experiment in these variants"
            )
            for report in doc.experiments:
                if report.contact_sheet is not None:
                    preview = thumbnail_of(Image.open(io.BytesIO(store.get(report.contact_sheet))))
                    metadata[f"{campaign_id}/{report.experiment}/contact_sheet"] = jpeg_markdown(
                        preview, f"{report.experiment}: control and candidate"
                    )
                    metadata[f"{campaign_id}/{report.experiment}/contact_sheet_file"] = _uri_metadata(report.contact_sheet)
            context.log.info(f"reported {campaign_id}: {len(doc.experiments)} experiment(s), {ref.uri}")
        return dg.MaterializeResult(
            metadata={"campaigns": dg.MetadataValue.json(done), "pending_campaigns": dg.MetadataValue.json(pending), **metadata}
        )

    return campaign_report_asset


def load_report(store, ref: ArtifactRef) -> CampaignReportDoc:
    """A stored report back as its model (tests, the gallery)."""
    return CampaignReportDoc.model_validate_json(store.get(ref))
