"""Run the provider simulator in the foreground until Ctrl-C (or SIGTERM).

    python -m model_adapters.simulator --port 8199 --settings sim.yaml \\
        --set endpoints.openai_images.faults.server_error=0.1 --api-key-env SIM_API_KEY

Prints ``provider simulator listening on <base URL>`` once it accepts
requests, and ``provider simulator stopped`` when it is done.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from typing import Any

import yaml
from pydantic import ValidationError

from model_adapters.simulator import SimulatorSettings


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m model_adapters.simulator", description=__doc__.splitlines()[0])
    parser.add_argument("--settings", help="YAML or JSON settings file")
    parser.add_argument("--host", help="address to bind (default 127.0.0.1)")
    parser.add_argument("--port", type=int, help="port (default from settings, else 0 = any free port)")
    parser.add_argument("--seed", type=int, help="seed of the latency and fault RNG")
    parser.add_argument("--api-key-env", metavar="NAME", help="environment variable holding the key clients must send")
    parser.add_argument("--max-concurrency", type=int, help="requests in flight per endpoint group before 429")
    parser.add_argument("--down", choices=["no", "refuse", "503"], help="simulate a provider that is down")
    parser.add_argument("--latency-ms", type=float, help="fixed latency for every endpoint (default section)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a setting by dotted path, value parsed as YAML (repeatable)",
    )
    return parser


def _set_path(data: dict[str, Any], dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = data
    for key in keys[:-1]:
        child = node.get(key)
        if not isinstance(child, dict):
            child = node[key] = {}
        node = child
    node[keys[-1]] = value


def build_settings(args: argparse.Namespace) -> SimulatorSettings:
    data: dict[str, Any] = {}
    if args.settings:
        with open(args.settings, encoding="utf-8") as handle:
            data = yaml.safe_load(handle) or {}
        if not isinstance(data, dict):
            raise ValueError(f"{args.settings}: simulator settings must be a mapping")
    for name, path in (
        ("host", "host"),
        ("port", "port"),
        ("seed", "seed"),
        ("max_concurrency", "max_concurrency"),
        ("down", "down"),
        ("latency_ms", "default.latency.ms"),
    ):
        value = getattr(args, name)
        if value is not None:
            _set_path(data, path, value)
    if args.api_key_env:
        key = os.environ.get(args.api_key_env)
        if not key:
            raise ValueError(f"--api-key-env: environment variable {args.api_key_env} is not set")
        data["api_key"] = key
    for item in args.set:
        dotted, sep, raw = item.partition("=")
        if not sep or not dotted:
            raise ValueError(f"--set {item!r}: expected KEY=VALUE")
        _set_path(data, dotted.strip(), yaml.safe_load(raw))
    return SimulatorSettings.model_validate(data)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = build_settings(args)
    except (OSError, ValueError, ValidationError, yaml.YAMLError) as exc:
        print(f"simulator settings: {exc}", file=sys.stderr)
        return 2

    from model_adapters.simulator.server import ProviderSimulator

    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    sim = ProviderSimulator(settings)
    try:
        sim.start()
    except OSError as exc:
        print(f"simulator: cannot listen on {settings.host}:{settings.port}: {exc.strerror}", file=sys.stderr)
        return 1
    print(f"provider simulator listening on {sim.base_url}", flush=True)
    try:
        while not stop.wait(0.2):
            pass
    finally:
        sim.stop()
    print("provider simulator stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
