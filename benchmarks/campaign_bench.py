"""How close a campaign runs to the limit its providers set, side by side in one invocation.

    .venv/bin/python benchmarks/campaign_bench.py [--quick] [--out benchmarks/results]
    make bench            # the full run (under 10 minutes on 2 cores)

Scenarios (docs/benchmarks.md has the reasoning; the table is printed and
written to <out>/latest.md, every figure to <out>/latest.json):

fanout  A campaign of N variants (16, 64, 256) through every stage against the
        provider simulator, run in its own process, with fixed latencies per
        stage (SIM_LATENCY_MS) and a concurrency cap of 8 per provider.
        (a) ours: one produce_campaign run over the campaign's partition range
            (a single-run backfill, asset checks and the roll-up included),
            on a fresh Dagster instance and studio home;
        (b) bound: the same provider calls through the same adapters and caps,
            from a minimal asyncio driver (no Dagster, no router, no storing,
            no validation), pipelined per variant;
        (c) naive: one Dagster run per partition, as a newcomer would script
            it. Runs are sequential and independent, so a sample of them is
            timed and scaled to N (the sample size is in the JSON).
        Media are kept small where the checks allow (draft 288 px, video 144p) so
        that the simulator's own PNG and H.264 encoding, on the same 2 cores,
        does not stand in for provider latency.
cache   The last 64-variant campaign run again, unchanged: provider calls made
        (from the simulator's request counts) and second / first wall time; then
        once more with `force` (every stage made and recorded anew from the cache).
local   The embedded default (no simulator) for one 64-variant campaign of
        square 3 s spots in a child process: seconds per variant per stage (mean provider service
        time from the manifests' provenance), the video's real-time factor at
        720p30, the video stage over a bare PyAV encode of the same number of
        frames at the same settings, and the child's peak RSS (`memory`).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def campaign_stages() -> tuple[str, ...]:
    """The stages of the shipped campaign pipeline (config/pipelines/campaign.yaml), in order."""
    from orchestration.components import StudioPipelines

    return StudioPipelines().resolve_pipelines()[0]["campaign"].stage_names


# Per-stage provider latency in the simulator (ms): half of the example
# figures, so that the full run (3 sizes, repeats, naive, local) fits in 10 minutes.
SIM_LATENCY_MS = {"concept": 250, "image": 1000, "refine": 500, "voice": 250, "video": 1500}
PROVIDER_CAP = 8
BENCH_KEY_ENV = "CAMPAIGN_BENCH_KEY"
LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES")
RATIOS = ("9:16", "1:1", "16:9")
FANOUT_DURATIONS = (4, 5, 6)  # seconds of voice: short spots, so media work stays small beside latency
# The 64 local variants: square 3 s spots (feed posts), so the full run fits in 10 minutes.
LOCAL_DURATIONS = (3,)
LOCAL_RATIOS = ("1:1",)
FANOUT_MEDIA = {
    "draft_image": {"short_side": 288},
    "refined_image": {"min_short_side": 1080},
    "synced_video": {"short_side": 144, "fps": 30},
}


# --- inputs ---------------------------------------------------------------------------------


def campaign_brief(
    campaign_id: str, variants: int, durations: tuple[int, ...] = (8, 10, 12), ratios: tuple[str, ...] = RATIOS
) -> dict[str, Any]:
    return {
        "campaign_id": campaign_id,
        "product": "Aurora Lamp",
        "audience": "night owls who read in bed",
        "tone": "Warm",
        "palette": ["#1b1f3b", "#f4a259", "#e8e3d9"],
        "banned_terms": ["cheap"],
        "budget_usd": 1000,
        "variants": [
            {
                "id": f"v{i:03d}",
                "locale": LOCALES[i % len(LOCALES)],
                "aspect_ratio": ratios[i % len(ratios)],
                "duration_s": durations[i % len(durations)],
                "tier": "standard",
            }
            for i in range(variants)
        ],
    }


def simulator_settings() -> dict[str, Any]:
    fixed = lambda ms: {"distribution": "fixed", "ms": ms}  # noqa: E731
    return {
        "seed": 7,
        "endpoints": {
            "openai_chat": {"latency": fixed(SIM_LATENCY_MS["concept"])},
            "openai_images": {"latency": fixed(SIM_LATENCY_MS["image"])},
            "comfyui": {"job_latency": fixed(SIM_LATENCY_MS["refine"])},
            "openai_speech": {"latency": fixed(SIM_LATENCY_MS["voice"])},
            "fal": {"job_latency": fixed(SIM_LATENCY_MS["video"])},
        },
    }


def routing_config(base_url: str) -> dict[str, Any]:
    def provider(adapter: str, base: str, model: str, price: dict[str, float], **extra: Any) -> dict[str, Any]:
        return {
            "adapter": adapter,
            "base_url": base,
            "model": model,
            "api_key_env": BENCH_KEY_ENV,
            "timeout_s": 60,
            "max_concurrency": PROVIDER_CAP,
            "price": price,
            **extra,
        }

    return {
        "version": 1,
        "defaults": {"retry": {"max_attempts": 3, "base_delay_s": 0.2, "max_delay_s": 2}, "cache": True},
        "providers": {
            "sim-concept": provider("openai-chat", f"{base_url}/v1", "gpt-4o-mini", {"per_input_token": 1.5e-7, "per_output_token": 6e-7}),
            "sim-image": provider("openai-images", f"{base_url}/v1", "gpt-image-1", {"per_image": 0.01}),
            "sim-refine": provider("comfyui-refine", base_url, "sdxl_refiner_1.0.safetensors", {"per_image": 0.002}),
            "sim-voice": provider("openai-speech", f"{base_url}/v1", "gpt-4o-mini-tts", {"per_1k_characters": 0.015}),
            "sim-video": provider("fal-video-compose", f"{base_url}/fal", "fal-ai/ffmpeg-api/compose", {"per_output_second": 0.0002}),
        },
        "tasks": {
            "concept": {"route": ["sim-concept"]},
            "image": {"route": ["sim-image"]},
            "refine": {"route": ["sim-refine"]},
            "voice": {"route": ["sim-voice"]},
            "video": {"route": ["sim-video"]},
        },
    }


# --- the simulator in its own process ----------------------------------------------------------


class SimulatorProcess:
    def __init__(self, workdir: Path):
        settings = workdir / "simulator.json"
        settings.write_text(json.dumps(simulator_settings()))
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "model_adapters.simulator", "--settings", str(settings), "--port", "0"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        line = self.proc.stdout.readline()
        if "listening on" not in line:
            self.proc.kill()
            raise RuntimeError(f"the simulator did not start: {line}{self.proc.stdout.read()}")
        self.base_url = line.strip().rsplit(" ", 1)[-1]

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/_sim/stats", timeout=10).json()

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()


@contextmanager
def simulator(workdir: Path):
    sim = SimulatorProcess(workdir)
    try:
        yield sim
    finally:
        sim.stop()


def requests_made(stats: dict[str, Any]) -> int:
    return sum(int(n) for n in (stats.get("requests") or {}).values())


# --- (b) the bound: the same calls from a minimal asyncio driver -------------------------------


async def bound_campaign(brief: dict[str, Any], routing: dict[str, Any]) -> None:
    from assets.brief import variant_seed
    from model_adapters.captions import build_cues
    from model_adapters.concurrency import provider_held_by
    from model_adapters.types import ConceptRequest, ImageRequest, RefineRequest, RetryableError, VideoRequest, VoiceRequest, frame_size
    from resources.model_router import ProviderResource
    from resources.routing_config import parse_routing_config

    config = parse_routing_config(json.dumps(routing))
    adapters, limits = {}, {}
    for task, route in config.tasks.items():
        provider_id = route.route[0]
        adapters[task] = ProviderResource.from_config(provider_id, config).build_adapter()
        limits[task] = asyncio.Semaphore(config.providers[provider_id].max_concurrency)
        assert adapters[task].marks_provider_turn, f"{provider_id}: the bound's providers are hosted (HTTP) adapters"

    async def ask(task: str, method: str, *args: Any) -> Any:
        # A transport error (a connection the loaded simulator dropped) is asked again, as the
        # router would; a bound that died on one would measure nothing.
        for attempt in range(3):
            # The cap is held as the router holds it: while the adapter talks to the provider.
            with provider_held_by(lambda: limits[task]):
                try:
                    return await getattr(adapters[task], method)(*args)
                except RetryableError:
                    if attempt == 2:
                        raise

    # A request asked before (two variants whose concepts wrote the same script) is answered
    # by the first asking, as the router's response cache answers it for ours: the bound makes
    # the calls ours makes, not more (the simulator counts both sides' requests).
    asked: dict[tuple[str, str, str], asyncio.Task[Any]] = {}

    async def call(task: str, method: str, *args: Any) -> Any:
        key = (task, method, args[0].model_dump_json())
        if key not in asked:
            asked[key] = asyncio.ensure_future(ask(task, method, *args))
        return await asked[key]

    async def variant(v: dict[str, Any]) -> None:
        key = f"{brief['campaign_id']}.{v['id']}"
        seed = variant_seed(key)
        idea = await call(
            "concept",
            "write",
            ConceptRequest(
                campaign_id=brief["campaign_id"],
                variant_id=v["id"],
                product=brief["product"],
                audience=brief["audience"],
                tone=brief["tone"],
                palette=tuple(brief["palette"]),
                banned_terms=tuple(brief["banned_terms"]),
                locale=v["locale"],
                aspect_ratio=v["aspect_ratio"],
                duration_s=v["duration_s"],
                seed=seed,
            ),
        )

        async def image_branch():
            width, height = frame_size(v["aspect_ratio"], FANOUT_MEDIA["draft_image"]["short_side"])
            draft = await call(
                "image",
                "generate",
                ImageRequest(prompt=idea.image_prompt, width=width, height=height, palette=tuple(brief["palette"]), seed=seed),
            )
            request = RefineRequest(
                source_sha256=hashlib.sha256(draft.png).hexdigest(),
                min_short_side=FANOUT_MEDIA["refined_image"]["min_short_side"],
                aspect_ratio=v["aspect_ratio"],
                palette=tuple(brief["palette"]),
                headline=idea.headline,
                seed=seed,
            )
            return await call("refine", "refine", request, draft.png)

        async def audio_branch():
            voice = await call("voice", "synthesize", VoiceRequest(text=idea.script, locale=v["locale"], voice="default"))
            return voice, tuple(build_cues(voice.words))

        refined, (voice, cues) = await asyncio.gather(image_branch(), audio_branch())
        video = FANOUT_MEDIA["synced_video"]
        width, height = frame_size(v["aspect_ratio"], video["short_side"])
        request = VideoRequest(
            image_sha256=hashlib.sha256(refined.png).hexdigest(),
            audio_sha256=hashlib.sha256(voice.wav).hexdigest(),
            audio_duration_s=voice.duration_s,
            cues=cues,
            width=width,
            height=height,
            fps=video["fps"],
            tail_s=max(0.0, v["duration_s"] - voice.duration_s),
            seed=seed,
        )
        await call("video", "compose", request, refined.png, voice.wav)

    try:
        await asyncio.gather(*(variant(v) for v in brief["variants"]))
    finally:
        for adapter in adapters.values():
            await adapter.aclose()


# --- (a) ours and (c) naive: Dagster runs on a fresh studio home ------------------------------


class Studio:
    """A fresh STUDIO_HOME with one brief, its routing config and a Dagster instance."""

    def __init__(self, workdir: Path, brief: dict[str, Any], routing: dict[str, Any] | None):
        self.home = workdir / f"studio-{brief['campaign_id']}-{time.monotonic_ns()}"
        (self.home / "briefs").mkdir(parents=True)
        (self.home / "briefs" / f"{brief['campaign_id']}.yaml").write_text(yaml.safe_dump(brief, sort_keys=False))
        os.environ["STUDIO_HOME"] = str(self.home)
        os.environ["STUDIO_BRIEFS_DIR"] = str(self.home / "briefs")
        os.environ["DAGSTER_HOME"] = str(self.home / "dagster")
        if routing is not None:
            (self.home / "routing.json").write_text(json.dumps(routing))
            os.environ["STUDIO_ROUTING"] = str(self.home / "routing.json")
        else:
            os.environ.pop("STUDIO_ROUTING", None)

        from orchestration.definitions import build_definitions
        from orchestration.instance import local_instance

        self.instance = local_instance()
        self.definitions = build_definitions()
        self.job = self.definitions.resolve_job_def("produce_campaign")
        self.keys = [f"{brief['campaign_id']}.{v['id']}" for v in brief["variants"]]
        self.instance.add_dynamic_partitions("variants", self.keys)

    def run(self, keys: list[str], media: dict[str, Any] | None) -> tuple[float, Any]:
        from assets.dagster_api import partition_range_tags

        run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        if media:
            run_config["ops"] = {"variant_media": {"config": media}}
        started = time.perf_counter()
        result = self.job.execute_in_process(
            instance=self.instance,
            run_config=run_config,
            tags=partition_range_tags(keys[0], keys[-1]),
            raise_on_error=False,
        )
        seconds = time.perf_counter() - started
        if not result.success:
            failures = [e.event_specific_data.error.message[:2000] for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
            raise RuntimeError(f"run {result.run_id} failed: {failures}")
        return seconds, result

    def step_seconds(self, result: Any) -> dict[str, float]:
        return {e.step_key: e.event_specific_data.duration_ms / 1000.0 for e in result.get_step_success_events()}

    def close(self) -> None:
        self.instance.dispose()


# --- scenarios -------------------------------------------------------------------------------------


def warm_up() -> None:
    """Imports and first-use costs (PyAV, httpx, the adapters, Dagster, MiniLM) paid once,
    before anything is timed."""
    import av  # noqa: F401

    import model_adapters.http.comfyui  # noqa: F401
    import model_adapters.http.openai_compat  # noqa: F401
    import model_adapters.http.video  # noqa: F401
    import orchestration.definitions  # noqa: F401
    from model_adapters.text_embedding import get_embedder

    get_embedder().load()


def fanout(workdir: Path, variants: int, repeats: int, naive_sample: int, cache: bool, with_bound: bool = True) -> dict[str, Any]:
    brief = campaign_brief(f"fanout-{variants}", variants, durations=FANOUT_DURATIONS)
    ours, bound, ours_media_step, in_flight = [], [], [], {}
    cache_figures = None
    for repeat in range(repeats):
        if with_bound:
            with simulator(workdir) as sim:
                started = time.perf_counter()
                asyncio.run(bound_campaign(brief, routing_config(sim.base_url)))
                bound.append(time.perf_counter() - started)
        with simulator(workdir) as sim:
            studio = Studio(workdir, brief, routing_config(sim.base_url))
            seconds, result = studio.run(studio.keys, FANOUT_MEDIA)
            ours.append(seconds)
            ours_media_step.append(studio.step_seconds(result).get("variant_media", float("nan")))
            stats = sim.stats()
            in_flight = stats.get("max_in_flight", {})
            if cache and repeat == repeats - 1:
                before = requests_made(stats)
                again, _ = studio.run(studio.keys, FANOUT_MEDIA)
                calls = requests_made(sim.stats()) - before
                # The same again with `force`: every stage made, checked and recorded anew,
                # every answer from the response cache.
                forced, _ = studio.run(studio.keys, {**FANOUT_MEDIA, "force": True})
                forced_calls = requests_made(sim.stats()) - before - calls
                cache_figures = {
                    "variants": variants,
                    "first_s": round(seconds, 2),
                    "second_s": round(again, 2),
                    "calls": calls,
                    "ratio": round(again / seconds, 3),
                    "forced_s": round(forced, 2),
                    "forced_calls": forced_calls,
                    "forced_ratio": round(forced / seconds, 3),
                }
            studio.close()
            shutil.rmtree(studio.home, ignore_errors=True)
        bound_text = f"bound {bound[-1]:.1f}s, " if bound else ""
        print(f"  fanout {variants}: repeat {repeat + 1}/{repeats}: {bound_text}ours {ours[-1]:.1f}s", flush=True)

    figures: dict[str, Any] = {
        "variants": variants,
        "repeats": repeats,
        "bound_s": round(statistics.median(bound), 2) if bound else None,
        "ours_s": round(statistics.median(ours), 2),
        "ours_media_step_s": round(statistics.median(ours_media_step), 2),
        "ours_runs_s": [round(s, 2) for s in ours],
        "bound_runs_s": [round(s, 2) for s in bound],
        "max_in_flight": in_flight,
    }
    figures["ours_per_variant_s"] = round(figures["ours_s"] / variants, 3)
    figures["ratio_to_bound"] = round(figures["ours_s"] / figures["bound_s"], 3) if bound else None
    if naive_sample:
        with simulator(workdir) as sim:
            studio = Studio(workdir, brief, routing_config(sim.base_url))
            per_run = [studio.run([key], FANOUT_MEDIA)[0] for key in studio.keys[:naive_sample]]
            studio.close()
            shutil.rmtree(studio.home, ignore_errors=True)
        figures["naive_per_run_s"] = round(statistics.mean(per_run), 2)
        figures["naive_measured_runs"] = naive_sample
        figures["naive_s"] = round(statistics.mean(per_run) * variants, 1)
        figures["speedup_vs_naive"] = round(figures["naive_s"] / figures["ours_s"], 1)
        print(f"  naive: {naive_sample} runs of one partition, {figures['naive_per_run_s']:.2f}s each", flush=True)
    return {"fanout": figures, "cache": cache_figures}


def local_child(variants: int, out: Path) -> None:
    """In a child process (its own peak RSS): one local campaign on the embedded default."""
    warnings.filterwarnings("ignore")
    workdir = Path(tempfile.mkdtemp(prefix="bench-local-"))
    try:
        brief = campaign_brief("local-bench", variants, durations=LOCAL_DURATIONS, ratios=LOCAL_RATIOS)
        studio = Studio(workdir, brief, None)
        seconds, result = studio.run(studio.keys, None)
        from dagster import AssetKey

        from assets.common import MANIFEST_IO_MANAGER_KEY
        from orchestration.storage import resolved_resource

        stages = campaign_stages()
        service: dict[str, list[float]] = {s: [] for s in stages}
        video_seconds, frames_by_size, videos = 0.0, {}, []
        with resolved_resource(studio.definitions, MANIFEST_IO_MANAGER_KEY) as manifests:
            for key in studio.keys:
                for stage in stages:
                    manifest = manifests.load_manifest(AssetKey(stage), key)
                    provenance = getattr(manifest, "provenance", None)
                    if provenance is not None:
                        service[stage].append(provenance.latency_s)
                video = manifests.load_manifest(AssetKey("synced_video"), key)
                video_seconds += video.duration_s
                videos.append(video)
                size = f"{video.width}x{video.height}@{video.fps}"
                frames_by_size[size] = frames_by_size.get(size, 0) + round(video.video_duration_s * video.fps)
        from model_adapters.concurrency import COMPUTE_SLOTS

        # Compute time of the stages that hold the device's compute slot (without the
        # wait for it); provider service time from the provenance for the others.
        held = {"draft_image": "local-image", "refined_image": "local-refine", "synced_video": "local-video"}
        per_stage = {s: round(statistics.mean(v), 3) for s, v in service.items() if v}
        per_stage.update({stage: round(COMPUTE_SLOTS.held_s.get(holder, 0.0) / variants, 3) for stage, holder in held.items()})
        video_compute = COMPUTE_SLOTS.held_s.get("local-video", 0.0)
        figures = {
            "variants": variants,
            "wall_s": round(seconds, 1),
            "seconds_per_variant_wall": round(seconds / variants, 2),
            "seconds_per_variant_per_stage": per_stage,
            "steps_s": {k: round(v, 2) for k, v in studio.step_seconds(result).items()},
            "video_footage_s": round(video_seconds, 1),
            "video_frames_by_size": frames_by_size,
            "video_service_s": round(video_compute, 2),
            "video_realtime_factor": round(video_seconds / video_compute, 2),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        }
        studio.close()
        figures.update(own_frames_encode(videos))
        out.write_text(json.dumps(figures))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _video_encode_module():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    import video_encode

    return video_encode


def own_frames_encode(videos: list[Any]) -> dict[str, Any]:
    """The encoder alone on the campaign's own frames: each video decoded to yuv420p and
    encoded again at the compositor's settings, the encode timed (after the machine is
    idle). Moving frames cost x264 more than a still: this is the floor for this content."""
    from model_adapters.local_video import PyAVCompositor
    from resources.artifact_store import FilesystemArtifactStore

    video_encode = _video_encode_module()
    adapter, store = PyAVCompositor(), FilesystemArtifactStore()
    encode_s = 0.0
    with video_encode.Timed() as timed:
        for video in videos:
            frames = video_encode.decoded_frames(store.get(video.artifact))
            started = time.perf_counter()
            video_encode.bare_encode(frames, len(frames), video.width, video.height, video.fps, adapter, "yuv420p")
            encode_s += time.perf_counter() - started
    return {"own_frames_encode_s": round(encode_s, 2), "own_frames_others_cores": round(timed.others_cores, 2)}


def bare_encode_seconds(frames_by_size: dict[str, int]) -> tuple[float, float]:
    """The issue's denominator: PyAV/x264 at the compositor's settings on the same number
    of frames per size, a textured still already in yuv420p (no drawing, no conversion),
    timed once the machine is idle; (seconds, other processes' CPU meanwhile in cores)."""
    import io

    import av
    from PIL import Image

    from model_adapters.local_video import PyAVCompositor

    video_encode = _video_encode_module()
    adapter = PyAVCompositor()
    encodes = []  # (still in yuv420p, frames, width, height, fps), made before the timing
    for size, frames in frames_by_size.items():
        dims, fps = size.split("@")
        width, height = map(int, dims.split("x"))
        rgb = Image.open(io.BytesIO(video_encode.textured_still(width, height))).convert("RGB")
        encodes.append((av.VideoFrame.from_image(rgb).reformat(format="yuv420p").to_ndarray(), frames, width, height, int(fps)))
    with video_encode.Timed() as timed:
        for still, frames, width, height, fps in encodes:
            video_encode.bare_encode([still], frames, width, height, fps, adapter, "yuv420p")
    return timed.wall, timed.others_cores


def local(variants: int, workdir: Path) -> dict[str, Any]:
    out = workdir / "local.json"
    env = dict(os.environ)
    env.pop("STUDIO_ROUTING", None)
    subprocess.run([sys.executable, __file__, "--local-child", str(variants), "--child-out", str(out)], check=True, env=env, cwd=ROOT)
    figures = json.loads(out.read_text())
    encode_s, others = bare_encode_seconds(figures["video_frames_by_size"])
    figures["bare_encode_s"] = round(encode_s, 2)
    figures["bare_encode_others_cores"] = round(others, 2)
    figures["video_ratio_to_encode"] = round(figures["video_service_s"] / encode_s, 3)
    figures["video_ratio_to_own_frames_encode"] = round(figures["video_service_s"] / figures["own_frames_encode_s"], 3)
    figures["own_frames_over_still_encode"] = round(figures["own_frames_encode_s"] / encode_s, 3)
    return figures


# --- report -------------------------------------------------------------------------------------


def table(results: dict[str, Any]) -> str:
    rows = ["| scenario | figure | value | target |", "| --- | --- | --- | --- |"]
    for f in results["fanout"]:
        n = f["variants"]
        bound = f"{f['bound_s']} s" if f["bound_s"] else "–"
        naive = f"{f['naive_s']} s" if f.get("naive_s") else "–"
        rows.append(
            f"| fanout {n} | ours (one backfill run) / bound / naive | {f['ours_s']} s ({f['ours_per_variant_s']} s a variant) / {bound} / {naive} | |"
        )
        if f["ratio_to_bound"]:
            rows.append(f"| fanout {n} | ratio_to_bound (median of {f['repeats']}) | {f['ratio_to_bound']} | ≤ 1.15 at 64 |")
        if "speedup_vs_naive" in f:
            rows.append(f"| fanout {n} | speedup_vs_naive | {f['speedup_vs_naive']}× | ≥ 10 |")
        rows.append(
            f"| fanout {n} | max in flight per provider group | {', '.join(f'{k} {v}' for k, v in sorted(f['max_in_flight'].items()))} | ≤ {PROVIDER_CAP} |"
        )
    c = results.get("cache")
    if c:
        rows.append(f"| cache {c['variants']} | provider calls on the re-run | {c['calls']} | 0 |")
        rows.append(f"| cache {c['variants']} | ratio (second / first) | {c['ratio']} ({c['second_s']} s / {c['first_s']} s) | ≤ 0.10 |")
        if "forced_s" in c:
            rows.append(
                f"| cache {c['variants']} | forced re-record (`force: true`): calls, ratio | {c['forced_calls']}, {c['forced_ratio']} ({c['forced_s']} s) | |"
            )
    loc = results.get("local")
    if loc:
        per_stage = ", ".join(f"{k} {v}" for k, v in loc["seconds_per_variant_per_stage"].items())
        rows.append(f"| local {loc['variants']} | seconds per variant per stage (compute time) | {per_stage} | |")
        rows.append(f"| local {loc['variants']} | wall, seconds per variant | {loc['wall_s']} s, {loc['seconds_per_variant_wall']} s | |")
        rows.append(f"| local {loc['variants']} | video real-time factor (720p30) | {loc['video_realtime_factor']}× | ≥ 4× |")
        rows.append(
            f"| local {loc['variants']} | video_ratio_to_encode (over a bare encode of a still, {loc['bare_encode_s']} s) | {loc['video_ratio_to_encode']} | ≤ 1.3 |"
        )
        rows.append(
            f"| local {loc['variants']} | video over the encoder alone on its own frames ({loc['own_frames_encode_s']} s; "
            f"{loc['own_frames_over_still_encode']}× the still's) | {loc['video_ratio_to_own_frames_encode']} | |"
        )
        rows.append(f"| memory {loc['variants']} | peak RSS of the local backfill | {loc['peak_rss_mib']} MiB | ≤ 2048 MiB |")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="CI-sized: 8 and 16 variants, one repeat, 8 local variants")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--only", choices=["fanout", "local"], help="run one scenario")
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="runs of ours and the bound at 16 and 64 variants (medians); 3 keeps the full run under 10 minutes",
    )
    parser.add_argument("--local-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.local_child:
        local_child(args.local_child, args.child_out)
        return 0

    warnings.filterwarnings("ignore")
    os.environ.setdefault(BENCH_KEY_ENV, "sk-bench-not-a-secret")
    # (variants, repeats, naive runs sampled, with the bound). At 256 only ours: it
    # shows how the cost grows; the bound and the targets are at 64 (10 minutes in all).
    repeats = args.repeats
    sizes = [(8, 1, 0, True), (16, 1, 2, True)] if args.quick else [(16, repeats, 0, True), (64, repeats, 2, True), (256, 1, 0, False)]
    cache_at = 16 if args.quick else 64
    local_variants = 8 if args.quick else 64
    started = time.perf_counter()
    workdir = Path(tempfile.mkdtemp(prefix="campaign-bench-"))
    results: dict[str, Any] = {
        "mode": "quick" if args.quick else "full",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "simulator": {"latency_ms": SIM_LATENCY_MS, "provider_cap": PROVIDER_CAP, "media": FANOUT_MEDIA},
        "fanout": [],
    }
    try:
        if args.only in (None, "fanout"):
            warm_up()
            for variants, repeats, naive, with_bound in sizes:
                print(f"fanout: {variants} variants", flush=True)
                figures = fanout(workdir, variants, repeats, naive, cache=variants == cache_at, with_bound=with_bound)
                results["fanout"].append(figures["fanout"])
                if figures["cache"]:
                    results["cache"] = figures["cache"]
        if args.only in (None, "local"):
            print(f"local: {local_variants} variants on the embedded default", flush=True)
            results["local"] = local(local_variants, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    results["total_s"] = round(time.perf_counter() - started, 1)

    markdown = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    name = "quick" if args.quick else "latest"
    (args.out / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / f"{name}.md").write_text(f"# Campaign benchmark ({results['mode']}, {results['total_s']} s)\n\n{markdown}\n")
    print(markdown)
    print(f"\n{results['total_s']} s in all; {args.out / (name + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
