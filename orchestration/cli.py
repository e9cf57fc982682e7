"""`studio`: the command line of campaign-studio.

    studio brief validate FILE...            validate briefs; errors name the file and the field
    studio campaign add FILE                 validate, copy into the briefs folder, register its partitions
    studio estimate FILE... [--routing CONFIG] [--spent]
                                             projected calls and cost per stage; no provider is called
    studio simulate [--settings FILE] [--port N]
                                             serve the provider simulator until Ctrl-C
    studio review approve|reject CAMPAIGN.VARIANT [--comment C] [--regenerate]
                                             a verdict on what waits at an approval stage
    studio review list [--campaign C]        what waits for a verdict
    studio review serve [--host H] [--port N]
                                             the review page and the gallery (docs/review.md)
    studio simulate --campaign FILE [--routing CONFIG]
                                             a dry run of a campaign on the cloud routing config,
                                             every hosted provider pointed at the simulator
    studio history CAMPAIGN.VARIANT [--stage S]  every version of a variant's stage outputs
    studio pin CAMPAIGN.VARIANT --stage S --version V
                                             make an earlier version the current one
    studio unpin CAMPAIGN.VARIANT --stage S  back to the latest made version

Exit codes: 0 success, 1 the work failed (a run, a refused copy), 2 invalid
input (a brief, a routing config, arguments).

Every command reads the same settings as the rest of the project
(`STUDIO_HOME`, `DAGSTER_HOME`, `STUDIO_BRIEFS_DIR`, `STUDIO_ROUTING`); heavy
modules (Dagster, torch) are imported only by the commands that need them,
so `studio brief validate` stays quick.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from pathlib import Path

from orchestration.progress import Progress

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2


def _error(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)


# --- brief validate ------------------------------------------------------------------


def cmd_brief_validate(args: argparse.Namespace) -> int:
    from orchestration.environment import environment_pipelines
    from orchestration.pipelines import PipelineError, pipeline_for
    from resources.brief_schema import BriefError, load_brief

    try:  # a brief is valid for the pipelines and routes this environment loads (its locales served)
        pipelines = environment_pipelines()
    except ValueError as exc:
        _error(str(exc))
        return EXIT_INVALID
    invalid = 0
    with Progress(len(args.files), "validating", stream=sys.stderr) as progress:
        for path in args.files:
            try:
                brief = load_brief(path)
                pipeline_for(brief, pipelines)
            except BriefError as exc:
                invalid += 1
                for problem in exc.problems:
                    print(f"{exc.path}: {problem}", file=sys.stderr)
            except PipelineError as exc:
                invalid += 1
                print(f"{path}: {exc}", file=sys.stderr)
            else:
                print(f"{path}: ok: campaign {brief.campaign_id}, {len(brief.variants)} variant(s): " + ", ".join(brief.partition_keys()))
            progress.advance(str(path))
    if invalid:
        print(f"{invalid} of {len(args.files)} brief(s) invalid", file=sys.stderr)
        return EXIT_INVALID
    return EXIT_OK


# --- campaign add --------------------------------------------------------------------


def cmd_campaign_add(args: argparse.Namespace) -> int:
    from model_adapters.media.files import atomic_write
    from resources.brief_schema import BRIEF_SUFFIXES, BriefError, parse_brief, read_brief_bytes
    from resources.brief_source import BriefSource

    source_path = Path(args.file)
    try:
        raw = read_brief_bytes(source_path)
        brief = parse_brief(raw, str(source_path))
    except BriefError as exc:
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    if source_path.suffix not in BRIEF_SUFFIXES:
        _error(f"{source_path}: the sensor only reads {' and '.join(BRIEF_SUFFIXES)} files; rename it")
        return EXIT_INVALID

    briefs = BriefSource(folder=str(args.briefs_dir) if args.briefs_dir else "")
    folder = briefs.folder_path()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / source_path.name
    scanned = briefs.scan()
    for existing in scanned:
        if existing.brief is None or existing.brief.campaign_id != brief.campaign_id:
            continue
        if Path(existing.path).name != target.name:
            _error(
                f"{source_path}: campaign_id: {brief.campaign_id!r} is already declared by {existing.path}; "
                "edit that file, or remove it first"
            )
            return EXIT_FAILED
    if target.exists() and target.resolve() != source_path.resolve():
        same = next((f for f in scanned if Path(f.path).name == target.name), None)
        if same is None or same.brief is None or same.brief.campaign_id != brief.campaign_id:
            declared = f"declares campaign {same.brief.campaign_id!r}" if same and same.brief else "is not a valid brief"
            _error(
                f"{target}: already exists and {declared}; refusing to overwrite it with campaign "
                f"{brief.campaign_id!r} (rename {source_path.name})"
            )
            return EXIT_FAILED

    unchanged = target.exists() and hashlib.sha256(target.read_bytes()).digest() == hashlib.sha256(raw).digest()
    if target.resolve() != source_path.resolve() and not unchanged:
        atomic_write(target, raw)  # temp file, then rename: the sensor never sees half a brief
        print(f"copied {source_path} -> {target}")
    else:
        print(f"{target}: already up to date")

    if args.no_register:
        return EXIT_OK
    from orchestration.pipelines import load_pipelines, pipeline_for
    from resources.routing_config import load_routing_config
    from resources.settings import pipelines_dir, routing_config_path

    try:
        routing_path = routing_config_path()
        pipeline = pipeline_for(brief, load_pipelines(pipelines_dir(), load_routing_config(routing_path), str(routing_path)))
    except ValueError as exc:  # the routing or a pipeline file, or the brief's pipeline field
        _error(f"{source_path}: {exc}")
        return EXIT_INVALID
    added = register_partitions(brief.partition_keys(), pipeline.partitions_name)
    print(
        f"registered {len(added)} new partition(s) of {len(brief.variants)} on the Dagster instance "
        f"({os.environ['DAGSTER_HOME']}): {', '.join(added) if added else 'none new'}"
    )
    print("the brief_sensor requests a run for each new or changed variant on its next tick (or materialize them in the UI: `make ui`)")
    return EXIT_OK


def register_partitions(keys: list[str], partitions_name: str) -> list[str]:
    """Add the variant partitions the pipeline's partitions do not have yet (what the brief sensor does); the new ones."""
    from orchestration.instance import local_instance

    instance = local_instance()
    existing = set(instance.get_dynamic_partitions(partitions_name))
    new = [key for key in keys if key not in existing]
    if new:
        instance.add_dynamic_partitions(partitions_name, new)
    return new


# --- estimate ------------------------------------------------------------------------


def cmd_estimate(args: argparse.Namespace) -> int:
    from orchestration.estimate import estimate_campaign, projection_lines, spent_line
    from orchestration.pipelines import PipelineError, load_pipelines, pipeline_for
    from resources.brief_schema import BriefError, load_brief
    from resources.routing_config import RoutingConfigError, load_routing_config
    from resources.settings import pipelines_dir, routing_config_path

    routing_path = args.routing or routing_config_path()
    try:
        routing = load_routing_config(routing_path)
        pipelines = load_pipelines(pipelines_dir(), routing, str(routing_path))
    except (RoutingConfigError, PipelineError) as exc:
        _error(str(exc))
        return EXIT_INVALID
    print(f"routing: {routing_path}")
    status = EXIT_OK
    for path in args.files:
        try:
            brief = load_brief(path)
        except BriefError as exc:
            for problem in exc.problems:
                print(f"{exc.path}: {problem}", file=sys.stderr)
            status = EXIT_INVALID
            continue
        try:
            pipeline = pipeline_for(brief, pipelines)
        except PipelineError as exc:
            _error(f"{path}: {exc}")
            status = EXIT_INVALID
            continue
        print("\n".join(projection_lines(brief, estimate_campaign(brief, routing, pipeline))))
        if args.spent:
            print("  " + spent_line(routing, brief.campaign_id, str(routing_path)))
    return status


# --- simulate ------------------------------------------------------------------------


def cmd_simulate(args: argparse.Namespace) -> int:
    if args.campaign is None:
        from model_adapters.simulator.__main__ import main as serve

        argv: list[str] = []
        for flag, value in (
            ("--settings", args.settings),
            ("--host", args.host),
            ("--port", args.port),
            ("--seed", args.seed),
            ("--latency-ms", args.latency_ms),
        ):
            if value is not None:
                argv += [flag, str(value)]
        for item in args.set:
            argv += ["--set", item]
        return serve(argv)

    from orchestration.dry_run import DRY_RUN_KEY, dry_run_campaign
    from resources.brief_schema import BriefError, load_brief
    from resources.routing_config import RoutingConfigError

    try:
        brief = load_brief(args.campaign)
    except BriefError as exc:
        for problem in exc.problems:
            print(f"{exc.path}: {problem}", file=sys.stderr)
        return EXIT_INVALID
    settings: dict = {}
    if args.settings:
        import yaml

        from model_adapters.simulator import SimulatorSettings

        try:
            settings = SimulatorSettings.from_file(args.settings).model_dump(mode="json", exclude_unset=True)
        except (OSError, ValueError) as exc:
            _error(f"{args.settings}: {exc}")
            return EXIT_INVALID
        except yaml.YAMLError as exc:
            _error(f"{args.settings}: invalid YAML: {exc}")
            return EXIT_INVALID
        settings.pop("api_key", None)  # the dry run sets its own throwaway key
    if args.latency_ms is not None:
        settings.setdefault("default", {}).setdefault("latency", {})["ms"] = args.latency_ms
    if args.seed is not None:
        settings["seed"] = args.seed
    print(
        f"dry run: {args.campaign} on {args.routing or 'config/routing.cloud.yaml'}, hosted providers on the "
        f"simulator (key {DRY_RUN_KEY!r}, no real provider is called)",
        file=sys.stderr,
    )
    progress = Progress(0, "dry run steps", stream=sys.stderr)

    def on_start(steps: int) -> None:
        progress.total = steps

    with progress:
        try:
            report = dry_run_campaign(
                Path(args.campaign),
                brief,
                routing_path=args.routing,
                simulator_settings=settings,
                video_short_side=args.video_short_side,
                keep=args.keep,
                on_start=on_start,
                on_step=progress.advance,
            )
        except RoutingConfigError as exc:
            _error(str(exc))
            return EXIT_INVALID
    print("\n".join(report.lines()))
    return EXIT_OK if report.success else EXIT_FAILED


# --- review ------------------------------------------------------------------------


def cmd_review_verdict(args: argparse.Namespace) -> int:
    """approve / reject: the reviewer is the OS user running the command (its identity here)."""
    import getpass

    from assets.approvals import ReviewError, record_verdict
    from orchestration.environment import studio_environment

    decision = "approved" if args.review_command == "approve" else "rejected"
    try:
        with studio_environment() as env:
            verdict = record_verdict(
                env.instance,
                env.pipelines,
                args.variant,
                decision,
                getpass.getuser(),
                args.comment or "",
                manifests=env.manifests,
                gate=args.gate,
                regenerate=getattr(args, "regenerate", False),
            )
    except (ReviewError, ValueError) as exc:  # nothing waits, or the environment's config is invalid
        _error(str(exc))
        return EXIT_INVALID
    then = (
        "the approval sensor resumes it"
        if decision == "approved"
        else ("the approval sensor makes it again with a new seed" if verdict.regenerate else "it stays stopped")
    )
    print(f"{args.variant}: {decision} by {verdict.reviewer} (version {verdict.subject_version[:12]}); {then}")
    return EXIT_OK


def cmd_review_list(args: argparse.Namespace) -> int:
    from assets.approvals import review_states
    from orchestration.environment import studio_environment

    try:
        with studio_environment() as env:
            states = review_states(env.instance, env.pipelines, manifests=env.manifests, campaign_id=args.campaign)
    except ValueError as exc:  # the routing config or a pipeline file
        _error(str(exc))
        return EXIT_INVALID
    shown = [s for s in states if args.all or s.state == "pending"]
    for state in shown:
        headline = getattr(state.subject, "headline", "")
        who = f" by {state.verdict.reviewer}" if state.verdict else ""
        print(f"{state.partition_key}\t{state.gate}\t{state.state}{who}\t{headline}")
    if not shown:
        print("nothing waits for a verdict" if not args.all else "no variant of a pipeline with an approval stage")
    return EXIT_OK


def cmd_review_serve(args: argparse.Namespace) -> int:
    from orchestration.review_app import serve

    try:
        serve(host=args.host, port=args.port)
    except ValueError as exc:  # e.g. a public address with no sign-in configured
        _error(str(exc))
        return EXIT_INVALID
    return EXIT_OK


# --- history, pin, unpin (orchestration/history.py) ----------------------------------


def cmd_history(args: argparse.Namespace) -> int:
    from orchestration.history import history_command

    return history_command(args)


def cmd_pin(args: argparse.Namespace) -> int:
    from orchestration.history import pin_command

    return pin_command(args)


def cmd_unpin(args: argparse.Namespace) -> int:
    from orchestration.history import unpin_command

    return unpin_command(args)


# --- the parser ----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="studio",
        description="campaign-studio: validate and add briefs, estimate costs, run the provider simulator.",
        epilog="Settings come from STUDIO_HOME, DAGSTER_HOME, STUDIO_BRIEFS_DIR and STUDIO_ROUTING (see README.md).",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    brief = commands.add_parser("brief", help="work with brief files", description="Work with brief files.")
    brief_commands = brief.add_subparsers(dest="brief_command", metavar="SUBCOMMAND", required=True)
    validate = brief_commands.add_parser(
        "validate",
        help="validate brief YAML files",
        description="Validate brief YAML files. Every problem is printed as FILE: FIELD: message; "
        "the exit code is 2 if any file is invalid, 0 if all are valid.",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE", help="brief YAML file")
    validate.set_defaults(handler=cmd_brief_validate)

    campaign = commands.add_parser("campaign", help="add campaigns", description="Add campaigns.")
    campaign_commands = campaign.add_subparsers(dest="campaign_command", metavar="SUBCOMMAND", required=True)
    add = campaign_commands.add_parser(
        "add",
        help="validate a brief, copy it into the briefs folder, register its partitions",
        description="Validate a brief, copy it into the briefs folder ($STUDIO_BRIEFS_DIR, default briefs/) and "
        "register one partition per variant on the Dagster instance ($DAGSTER_HOME). Refuses a brief whose "
        "campaign id another file already declares, and refuses to overwrite a file of another campaign.",
    )
    add.add_argument("file", type=Path, metavar="FILE", help="brief YAML file")
    add.add_argument("--briefs-dir", type=Path, help="the briefs folder (default: $STUDIO_BRIEFS_DIR or briefs/)")
    add.add_argument("--no-register", action="store_true", help="copy only; leave the partitions to the sensor")
    add.set_defaults(handler=cmd_campaign_add)

    estimate = commands.add_parser(
        "estimate",
        help="projected calls and cost per stage (no provider is called)",
        description="Project the calls and cost of each stage of a campaign from the routing config's price table. "
        "Assumes the first provider of each variant's route answers and no cache hits.",
    )
    estimate.add_argument("files", nargs="+", type=Path, metavar="FILE", help="brief YAML file")
    estimate.add_argument(
        "--routing", type=Path, metavar="CONFIG", help="routing config (default: $STUDIO_ROUTING or config/routing.local.yaml)"
    )
    estimate.add_argument(
        "--spent", action="store_true", help="also print what the ledger ($STUDIO_HOME/ledger) recorded for each campaign"
    )
    estimate.set_defaults(handler=cmd_estimate)

    simulate = commands.add_parser(
        "simulate",
        help="run the provider simulator (serve, or a dry run of a campaign)",
        description="Without --campaign: serve the provider simulator on 127.0.0.1 until Ctrl-C (it prints its "
        "base URL). With --campaign FILE: a dry run of that campaign, every hosted provider of the routing config "
        "pointed at the simulator, in a throwaway STUDIO_HOME; reports calls, cost and time.",
    )
    simulate.add_argument("--settings", metavar="FILE", help="simulator settings, YAML or JSON (latency, faults)")
    simulate.add_argument("--host", help="serve: address to bind (default 127.0.0.1)")
    simulate.add_argument("--port", type=int, help="serve: port (default: any free port)")
    simulate.add_argument("--seed", type=int, help="seed of the latency and fault RNG")
    simulate.add_argument("--latency-ms", type=float, help="fixed latency of every endpoint")
    simulate.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="serve: override a simulator setting by dotted path (repeatable)"
    )
    simulate.add_argument("--campaign", type=Path, metavar="FILE", help="dry-run this brief against the simulator")
    simulate.add_argument("--routing", type=Path, metavar="CONFIG", help="dry run: routing config (default: config/routing.cloud.yaml)")
    simulate.add_argument(
        "--video-short-side", type=int, default=720, metavar="PX", help="dry run: short side of the synced video (default 720)"
    )
    simulate.add_argument("--keep", type=Path, metavar="DIR", help="dry run: keep the run's STUDIO_HOME and Dagster instance in DIR")
    simulate.set_defaults(handler=cmd_simulate)

    history = commands.add_parser(
        "history",
        help="every version of a variant's stage outputs, newest first",
        description="List the versions of each stage's output for one variant, newest first: when it was made, "
        "provider and model, cost, approval, check verdicts; the current version is marked *, a pinned one P.",
    )
    history.add_argument("variant", metavar="CAMPAIGN.VARIANT", help="the variant's partition key, e.g. aurora-lamp.story-en")
    history.add_argument("--stage", metavar="STAGE", help="only this stage (default: every stage of the pipeline)")
    history.set_defaults(handler=cmd_history)
    pin = commands.add_parser(
        "pin",
        help="make an earlier version of a stage's output the current one",
        description="Write a kept version of a stage's output back as the variant's current one, recorded as a "
        "materialization that says so (by $USER). The stages after it and the roll-up follow; the pin holds in later "
        "runs until `studio unpin` (or a forced remake).",
    )
    pin.add_argument("variant", metavar="CAMPAIGN.VARIANT", help="the variant's partition key")
    pin.add_argument("--stage", required=True, metavar="STAGE", help="the stage whose output to pin")
    pin.add_argument("--version", required=True, metavar="VERSION", help="a version id from `studio history` (a unique prefix will do)")
    pin.set_defaults(handler=cmd_pin)
    unpin = commands.add_parser(
        "unpin",
        help="return a pinned stage to its latest made version",
        description="End a pin: the latest version a run made becomes the current one again, recorded as a materialization.",
    )
    unpin.add_argument("variant", metavar="CAMPAIGN.VARIANT", help="the variant's partition key")
    unpin.add_argument("--stage", required=True, metavar="STAGE", help="the pinned stage")
    unpin.set_defaults(handler=cmd_unpin)

    review = commands.add_parser(
        "review",
        help="approve or reject what waits at an approval stage; serve the review page",
        description="Verdicts on what waits at a pipeline's approval stages (briefs with approval: required; "
        "docs/review.md). A verdict is recorded on the Dagster instance ($DAGSTER_HOME); the approval sensor "
        "then resumes the variant, or makes the stage again when a rejection asks for it.",
    )
    review_commands = review.add_subparsers(dest="review_command", metavar="SUBCOMMAND", required=True)
    for name, help_text in (("approve", "approve what a variant waits with"), ("reject", "reject what a variant waits with")):
        verdict = review_commands.add_parser(
            name,
            help=help_text,
            description=f"{help_text.capitalize()}. The reviewer recorded is the user running the command.",
        )
        verdict.add_argument("variant", metavar="CAMPAIGN.VARIANT", help="the variant's partition key")
        verdict.add_argument("--comment", default="", help="why (shown with the verdict in the UI and the history)")
        verdict.add_argument("--gate", help="the approval stage, when the pipeline has several waiting")
        if name == "reject":
            verdict.add_argument(
                "--regenerate", action="store_true", help="make the stage again with a new seed; the new version waits for approval"
            )
        verdict.set_defaults(handler=cmd_review_verdict)
    listing = review_commands.add_parser(
        "list", help="variants waiting for a verdict", description="List the variants waiting for a verdict."
    )
    listing.add_argument("--campaign", help="only this campaign")
    listing.add_argument("--all", action="store_true", help="every gate's state, not only what waits")
    listing.set_defaults(handler=cmd_review_list)
    serve = review_commands.add_parser(
        "serve",
        help="serve the review page and the gallery",
        description="Serve the review page and the campaign gallery (docs/review.md). Binds 127.0.0.1 by default; "
        "any other address needs sign-in (docs/deploy.md).",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=3001, help="port (default 3001)")
    serve.set_defaults(handler=cmd_review_serve)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    # Dagster's preview/beta warnings about the APIs the project uses knowingly are filtered in
    # one place (assets/dagster_api.py: `_quietly` and `KNOWN_PREVIEW_WARNINGS`).
    try:
        return args.handler(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
