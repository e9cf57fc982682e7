"""Shared by the reliability tests: the cloud routing config pointed at provider
simulators, generated briefs, small run settings, and checks on stored media."""

from __future__ import annotations

import hashlib
import io
import wave
from pathlib import Path
from typing import Any

import av
import yaml
from PIL import Image

from model_adapters.simulator import ProviderSimulator, SimulatorSettings
from tests.conftest import PROJECT_ROOT

CANARY_KEY = "sk-canary-5e1d9c0b7a3f42"
KEY_VARIABLES = ("OPENAI_API_KEY", "FAL_KEY", "REPLICATE_API_TOKEN", "GMI_API_KEY", "ELEVENLABS_API_KEY")

# Small drafts and video (short sides that keep every ratio exact: 144 = 9 * 16); the
# refined still stays at the 1080 px its blocking check requires.
SMALL_RUN = {
    "ops": {
        "variant_media": {
            "config": {
                "draft_image": {"short_side": 144},
                "synced_video": {"short_side": 144, "fps": 12},
            }
        }
    }
}


def simulator(**settings: Any) -> ProviderSimulator:
    merged = {"api_key": CANARY_KEY, "default": {"latency": {"ms": 2}, "job_latency": {"ms": 20}}, **settings}
    return ProviderSimulator(SimulatorSettings.from_mapping(merged))


def sim_routing(
    sim: ProviderSimulator,
    tmp_path: Path,
    *,
    retry: dict | None = None,
    cooldown: dict | None = None,
    timeout_s: float | None = None,
    providers: dict[str, dict] | None = None,
    extra_providers: dict[str, dict] | None = None,
    tasks: dict[str, dict] | None = None,
    name: str = "routing.sim.yaml",
) -> Path:
    """config/routing.cloud.yaml with every hosted provider at `sim` (or at the
    simulator or settings given per provider in `providers`: {"sim": ..., **fields})."""
    config = yaml.safe_load((PROJECT_ROOT / "config" / "routing.cloud.yaml").read_text())
    config["providers"].update(extra_providers or {})
    config["tasks"].update(tasks or {})
    if retry:
        config["defaults"]["retry"].update(retry)
    if cooldown:
        config["defaults"]["cooldown"].update(cooldown)
    for provider_id, provider in config["providers"].items():
        adapter = provider["adapter"]
        if adapter.startswith("local-"):
            continue
        override = dict((providers or {}).get(provider_id, {}))
        target = override.pop("sim", sim)
        suffix = "/v1" if adapter.startswith("openai-") else "/fal" if adapter.startswith("fal-") else ""
        provider["base_url"] = target.base_url + suffix
        provider["allowed_hosts"] = []
        if timeout_s is not None:
            provider["timeout_s"] = timeout_s
        if adapter in ("fal-images", "replicate-images", "gmi-images", "comfyui-images", "comfyui-refine"):
            provider.setdefault("options", {}).update({"poll_interval_s": 0.02, "poll_max_interval_s": 0.1})
        provider.update(override)
    path = tmp_path / name
    path.write_text(yaml.safe_dump(config))
    return path


LOCALES = ("en-US", "en-GB", "de-DE", "fr-FR", "es-ES")
RATIOS = ("9:16", "1:1", "16:9")


def write_brief(
    folder: Path,
    campaign_id: str,
    count: int,
    *,
    tiers=("standard", "premium", "draft"),
    budget_usd: float = 100.0,
    duration_s: float = 3,
    product: str = "Harbor Kettle",
    audience: str = "tea drinkers who start early",
) -> list[str]:
    """A campaign of `count` variants cycling through locales, ratios and tiers; returns its partition keys."""
    variants = [
        {
            "id": f"v{i:02d}",
            "locale": LOCALES[i % len(LOCALES)],
            "aspect_ratio": RATIOS[i % len(RATIOS)],
            "duration_s": duration_s,
            "tier": tiers[i % len(tiers)],
        }
        for i in range(count)
    ]
    brief = {
        "campaign_id": campaign_id,
        "product": product,
        "audience": audience,
        "tone": "Calm",
        "palette": ["#12355b", "#f2c14e"],
        "banned_terms": ["cheap"],
        "budget_usd": budget_usd,
        "variants": variants,
    }
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{campaign_id}.yaml").write_text(yaml.safe_dump(brief, sort_keys=False))
    return [f"{campaign_id}.{v['id']}" for v in variants]


def local_bytes(ref) -> bytes:
    """An artifact's bytes from the filesystem store, checked against its sha256."""
    assert ref.uri.startswith("file://"), ref.uri
    data = Path(ref.uri.removeprefix("file://")).read_bytes()
    assert hashlib.sha256(data).hexdigest() == ref.sha256, ref.uri
    assert len(data) == ref.size_bytes, ref.uri
    return data


def decode_png(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


def decode_wav(data: bytes) -> float:
    with wave.open(io.BytesIO(data)) as wav:
        assert wav.getnframes() > 0
        return wav.getnframes() / wav.getframerate()


def decode_mp4(data: bytes) -> tuple[int, int]:
    """Decodes every video frame and audio packet; returns (video frames, audio frames)."""
    with av.open(io.BytesIO(data)) as container:
        frames = sum(1 for _ in container.decode(video=0))
    with av.open(io.BytesIO(data)) as container:
        audio = sum(1 for _ in container.decode(audio=0))
    assert frames > 0 and audio > 0
    return frames, audio
