"""A canary API key never shows up anywhere, even when providers echo it back in their errors."""

import http.server
import json
import threading

import dagster as dg
import pytest

from orchestration.definitions import build_definitions
from resources.io_manager import JsonManifestIOManager
from resources.policies.cooldown import PROCESS_COOLDOWNS
from tests.helpers import register, run_campaign
from tests.reliability.simcloud import CANARY_KEY, KEY_VARIABLES, SMALL_RUN, sim_routing, simulator, write_brief

pytestmark = pytest.mark.e2e


class _Echo(http.server.BaseHTTPRequestHandler):
    """A provider whose errors echo the request: every header (Authorization included) and the key."""

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        self.rfile.read(length)
        headers = {k: v for k, v in self.headers.items()}
        status = 500 if self.path.endswith("/chat/completions") else 400
        body = json.dumps(
            {
                "error": {
                    "message": f"bad request {self.path}; you sent {headers}; key={headers.get('Authorization', '')[7:]}",
                    "type": "invalid_request_error",
                    "code": "echo",
                }
            }
        ).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("x-echo-auth", headers.get("Authorization", ""))
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def test_canary_key_appears_nowhere(tmp_path, monkeypatch, capfd):
    home = tmp_path / "studio"
    (home / "dagster").mkdir(parents=True)
    monkeypatch.setenv("STUDIO_HOME", str(home))
    monkeypatch.setenv("DAGSTER_HOME", str(home / "dagster"))
    monkeypatch.setenv("STUDIO_BRIEFS_DIR", str(tmp_path / "briefs"))
    for name in KEY_VARIABLES:
        monkeypatch.setenv(name, CANARY_KEY)
    monkeypatch.setenv("WRONG_KEY", CANARY_KEY + "-revoked")
    PROCESS_COOLDOWNS.reset()
    keys = write_brief(tmp_path / "briefs", "canary-run", 2, tiers=("standard", "premium"))
    echo = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    threading.Thread(target=echo.serve_forever, daemon=True).start()

    class EchoSim:
        base_url = f"http://127.0.0.1:{echo.server_address[1]}"

    try:
        with simulator() as sim, dg.instance_for_test(temp_dir=str(home / "dagster")) as instance:
            routing = sim_routing(
                sim,
                tmp_path,
                retry={"max_attempts": 2, "base_delay_s": 0.01, "max_delay_s": 0.05},
                providers={
                    "openai-concept": {"sim": EchoSim},  # 500 echoing the Authorization header, retried, then local
                    "fal-image": {"sim": EchoSim},  # 400 echoing it: not retried, replicate takes over
                    "gmi-image": {"sim": EchoSim},
                    "elevenlabs-voice": {"api_key_env": "WRONG_KEY"},  # the simulator's 401 echoes the presented key
                },
            )
            definitions = build_definitions(routing)
            register(instance)
            result = run_campaign(instance, keys, run_config=SMALL_RUN, definitions=definitions)
            assert result.success
            manifests = JsonManifestIOManager()
            concept = manifests.load_manifest(dg.AssetKey("concept"), keys[0]).provenance
            voices = [manifests.load_manifest(dg.AssetKey("voiceover"), key).provenance for key in keys]
            # The echoing failures really happened, and their messages were kept (scrubbed).
            assert concept.adapter_id == "local-concept" and any("you sent" in e for e in concept.errors), concept
            assert any("[redacted]" in e for e in concept.errors)
            # Whichever variant asked ElevenLabs first met the 401; the others found it cooling down.
            assert all(voice.fallbacks == ("elevenlabs-voice",) for voice in voices)
            assert any("AuthError 401" in voice.errors[0] for voice in voices)
            event_text = "\n".join(dg.serialize_value(e) for run in instance.get_runs() for e in instance.all_logs(run.run_id))
            failures = [str(e) for e in result.all_events if e.is_failure]
    finally:
        echo.shutdown()
    assert "you sent" in event_text  # the metadata carries the errors
    assert CANARY_KEY not in event_text
    assert not [f for f in failures if CANARY_KEY in f]
    scanned = 0
    for path in home.rglob("*"):  # manifests, artifacts, cache, ledger, the SQLite event log, compute logs
        if path.is_file():
            scanned += 1
            assert CANARY_KEY.encode() not in path.read_bytes(), path
    assert scanned > 20 and any(p.suffix == ".db" for p in home.rglob("*"))
    captured = capfd.readouterr()
    assert CANARY_KEY not in captured.out + captured.err
