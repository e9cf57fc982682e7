"""A provider answer pointing at media on another host (another loopback address, the cloud
metadata address), directly or through a redirect, is refused before anything is fetched from it."""

import asyncio
import http.server
import threading

import pytest

from model_adapters.http.base import MediaURLRefused
from model_adapters.registry import adapter_kind
from model_adapters.types import ImageRequest
from tests.reliability.simcloud import CANARY_KEY, simulator

# Every HTTP adapter that downloads media a provider points at: (adapter kind, base suffix, extra settings).
DOWNLOADERS = {
    "openai-images": ("/v1", {"options": {"response_format": "url"}}),
    "replicate-images": ("", {}),
    "fal-images": ("/fal", {}),
    "gmi-images": ("", {}),
}


class _Trap(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_GET(self):  # noqa: N802
        _Trap.hits.append(self.path)
        self.send_response(200)
        self.end_headers()
        self.wfile.write(b"secret instance metadata")

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def trap():
    """A server on 127.0.0.2: another host, which must never be asked for anything."""
    server = http.server.ThreadingHTTPServer(("127.0.0.2", 0), _Trap)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.2:{server.server_address[1]}"
    server.shutdown()


def build(kind: str, sim, suffix: str, extra: dict):
    return adapter_kind(kind).build(
        adapter_id=f"test-{kind}",
        max_concurrency=1,
        model="m-1",
        base_url=sim.base_url + suffix,
        api_key_env="SIM_KEY",
        timeout_s=10,
        allowed_hosts=(),
        price=None,
        options={**({} if kind.startswith("openai") else {"poll_interval_s": 0.02}), **extra.get("options", {})},
    )


async def _generate(adapter):
    try:
        return await adapter.generate(ImageRequest(prompt="lamp", width=64, height=64, palette=("#102030",), seed=1))
    finally:
        await adapter.aclose()


@pytest.mark.parametrize("kind", sorted(DOWNLOADERS))
@pytest.mark.parametrize("how", ["direct-loopback", "direct-metadata", "redirect-loopback", "redirect-metadata"])
def test_media_on_another_host_is_refused(kind, how, trap, monkeypatch):
    monkeypatch.setenv("SIM_KEY", CANARY_KEY)
    elsewhere = trap if how.endswith("loopback") else "http://169.254.169.254"
    setting = {"media_base_url": elsewhere} if how.startswith("direct") else {"media_redirect_to": elsewhere}
    suffix, extra = DOWNLOADERS[kind]
    _Trap.hits.clear()
    with simulator(**setting) as sim:
        with pytest.raises(MediaURLRefused) as refused:
            asyncio.run(_generate(build(kind, sim, suffix, extra)))
        media_requests = sim.stats()["calls_by_group"].get("media", 0)
    message = str(refused.value)
    host = elsewhere.removeprefix("http://")
    assert f"refused to fetch http://{host}" in message and "origin not allowed" in message, message
    assert sim.base_url.removeprefix("http://") in message  # says what is allowed
    assert CANARY_KEY not in message
    assert _Trap.hits == []  # the other host was never contacted
    assert media_requests == (0 if how.startswith("direct") else 1)  # only the redirect itself was read


@pytest.mark.parametrize("kind", sorted(DOWNLOADERS))
def test_same_origin_media_is_still_fetched(kind, monkeypatch):
    """The control: without the hostile URL the same adapter returns a decodable PNG."""
    monkeypatch.setenv("SIM_KEY", CANARY_KEY)
    suffix, extra = DOWNLOADERS[kind]
    with simulator() as sim:
        result = asyncio.run(_generate(build(kind, sim, suffix, extra)))
    from tests.reliability.simcloud import decode_png

    assert decode_png(result.png) == (64, 64)
