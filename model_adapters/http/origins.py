"""Origins (scheme, host, port) and the media URL allow-list built from base_url and `allowed_hosts`.

An adapter sends its API key only to base_url's origin and fetches provider
media only from an allowed origin: scheme, host and port compared exactly,
default ports filled in, URLs with credentials never allowed.
"""

from __future__ import annotations

from collections.abc import Collection

import httpx

DEFAULT_PORTS = {"http": 80, "https": 443}

Origin = tuple[str, str, int]  # (scheme, host, port)


def origin_of(url: httpx.URL) -> Origin:
    scheme = url.scheme.lower()
    port = url.port if url.port is not None else DEFAULT_PORTS.get(scheme, -1)
    return scheme, url.host.lower(), port


def parse_allowed_host(entry: str) -> Origin:
    """An `allowed_hosts` entry as an origin.

    ``"https://cdn.example.com"`` or ``"http://127.0.0.1:8199"`` allow exactly
    that origin; a bare ``"cdn.example.com"`` or ``"cdn.example.com:8443"``
    allows it over https only.
    """
    text = entry.strip()
    if not text:
        raise ValueError("empty entry in allowed_hosts")
    url = httpx.URL(text if "://" in text else f"https://{text}")
    if url.scheme not in DEFAULT_PORTS or not url.host or url.userinfo or url.path not in ("", "/"):
        raise ValueError(f"allowed_hosts entry {entry!r} must be a host, host:port or scheme://host[:port]")
    return origin_of(url)


def format_origin(origin: Origin) -> str:
    scheme, host, port = origin
    host_text = f"[{host}]" if ":" in host else host
    return f"{scheme}://{host_text}:{port}"


def is_allowed(url: httpx.URL, allowed: Collection[Origin]) -> bool:
    """An http(s) URL without credentials on one of the `allowed` origins."""
    return url.scheme in DEFAULT_PORTS and not url.userinfo and origin_of(url) in allowed
