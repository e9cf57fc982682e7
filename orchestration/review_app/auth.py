"""Who may use the review app, and proof that a POST comes from its own pages.

Three ways to be someone, chosen from the environment when the app starts
(`ReviewAuth.from_environment(host)`):

- **local**: the app is bound to a loopback address and neither of the two
  below is configured: whoever can reach it is on this machine, and the
  reviewer recorded is the OS user (`$USER`). Requests must name a loopback
  host (`Host: 127.0.0.1`/`localhost`/`[::1]`), so a web page whose domain
  is rebound to 127.0.0.1 cannot drive the app.
- **token**: `STUDIO_REVIEW_TOKEN` holds `name:token` pairs separated by
  commas (a bare token stands for the reviewer `reviewer`). A request carries
  `Authorization: Bearer <token>` or the session cookie set by the sign-in
  form. Tokens are compared with `hmac.compare_digest`, every one of them.
- **proxy**: `STUDIO_REVIEW_IDENTITY_HEADER` names the header in which an
  authenticating reverse proxy (oauth2-proxy, an ALB with OIDC, ...) passes
  the signed-in user, e.g. `X-Forwarded-User`. Trusted only when configured;
  the app must then be reachable through the proxy alone (docs/deploy.md).

On a non-loopback host the app refuses to start unless token or proxy is
configured (`ReviewConfigError`).

A POST must also prove it comes from one of the app's own pages: its
`Origin` (or, without one, `Sec-Fetch-Site: same-origin`) names the app's
own origin, and its `csrf` field is an HMAC of the request's CSRF cookie
(random, HttpOnly, SameSite=Strict) and the reviewer's identity, under a
key only the server knows (`STUDIO_REVIEW_SECRET`, else random per process).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlsplit

TOKEN_VARIABLE = "STUDIO_REVIEW_TOKEN"
IDENTITY_HEADER_VARIABLE = "STUDIO_REVIEW_IDENTITY_HEADER"
SECRET_VARIABLE = "STUDIO_REVIEW_SECRET"
ORIGIN_VARIABLE = "STUDIO_REVIEW_ORIGIN"

SESSION_COOKIE = "studio_review_session"
CSRF_COOKIE = "studio_review_csrf"
SESSION_LIFETIME_S = 12 * 3600
MIN_TOKEN_CHARS = 16
BARE_TOKEN_REVIEWER = "reviewer"
LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})

_REVIEWER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")
# What a proxy may put in the identity header: an e-mail address or user name, printable, short.
_PROXY_IDENTITY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+=:/ -]{0,199}")
_HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]{0,99}")

Mode = Literal["local", "token", "proxy"]


class ReviewConfigError(ValueError):
    """The review app cannot start with these settings; the message names the variable."""


def is_loopback_host(host: str) -> bool:
    """Whether binding `host` keeps the app on this machine (`localhost` or a loopback address)."""
    name = host.strip().strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def parse_tokens(value: str) -> dict[str, str]:
    """`name:token[,name:token...]` (or one bare token) -> {reviewer: token}; errors name the variable."""
    tokens: dict[str, str] = {}
    for index, entry in enumerate(part.strip() for part in value.split(",")):
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        if not sep:
            name, token = BARE_TOKEN_REVIEWER, entry
        where = f"{TOKEN_VARIABLE} entry {index + 1}"
        if not _REVIEWER_NAME.fullmatch(name):
            raise ReviewConfigError(f"{where}: reviewer name {name!r} must be letters, digits and . _ @ + -")
        if len(token) < MIN_TOKEN_CHARS:
            raise ReviewConfigError(
                f"{where} ({name}): a token must be at least {MIN_TOKEN_CHARS} characters (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
            )
        if name in tokens:
            raise ReviewConfigError(f"{where}: reviewer {name!r} is named twice")
        tokens[name] = token
    if not tokens:
        raise ReviewConfigError(f"{TOKEN_VARIABLE} is set but holds no token")
    return tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True)
class ReviewAuth:
    """How the app knows who a request comes from (see the module docstring)."""

    tokens: Mapping[str, str] = field(default_factory=dict)  # reviewer -> token
    identity_header: str | None = None
    local_user: str | None = None  # set only in local mode
    secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    origin: str | None = None  # the app's public origin, when a proxy changes Host or scheme

    def __post_init__(self) -> None:
        if not (self.tokens or self.identity_header or self.local_user):
            raise ReviewConfigError("ReviewAuth needs tokens, an identity header or a local user")
        if self.local_user and (self.tokens or self.identity_header):
            raise ReviewConfigError("local mode (no sign-in) cannot be combined with tokens or an identity header")
        if self.identity_header is not None and not _HEADER_NAME.fullmatch(self.identity_header):
            raise ReviewConfigError(f"{IDENTITY_HEADER_VARIABLE}: {self.identity_header!r} is not a header name")
        if self.origin is not None:
            parts = urlsplit(self.origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path not in ("", "/"):
                raise ReviewConfigError(f"{ORIGIN_VARIABLE}: {self.origin!r} must look like https://review.example.com")

    @property
    def mode(self) -> Mode:
        return "local" if self.local_user else "proxy" if self.identity_header and not self.tokens else "token"

    @classmethod
    def local(cls, user: str | None = None) -> ReviewAuth:
        return cls(local_user=user or os.environ.get("USER") or getpass.getuser() or "local")

    @classmethod
    def from_environment(cls, host: str, environ: Mapping[str, str] | None = None) -> ReviewAuth:
        """The settings for an app bound to `host`: sign-in required off loopback."""
        env = os.environ if environ is None else environ
        token_value = (env.get(TOKEN_VARIABLE) or "").strip()
        header = (env.get(IDENTITY_HEADER_VARIABLE) or "").strip() or None
        secret_value = env.get(SECRET_VARIABLE) or ""
        if secret_value and len(secret_value) < 32:
            raise ReviewConfigError(f"{SECRET_VARIABLE} must be at least 32 characters")
        secret = hashlib.sha256(secret_value.encode()).digest() if secret_value else secrets.token_bytes(32)
        origin = (env.get(ORIGIN_VARIABLE) or "").strip().rstrip("/") or None
        tokens = parse_tokens(token_value) if token_value else {}
        if not tokens and not header:
            if not is_loopback_host(host):
                raise ReviewConfigError(
                    f"the review app binds {host!r}, beyond this machine, so it needs sign-in: set {TOKEN_VARIABLE} "
                    f"(reviewer:token pairs) or {IDENTITY_HEADER_VARIABLE} (the header an authenticating proxy sets); "
                    "see docs/deploy.md"
                )
            user = env.get("USER") or getpass.getuser() or "local"
            return cls(local_user=user, secret=secret, origin=origin)
        return cls(tokens=tokens, identity_header=header, secret=secret, origin=origin)

    # --- identities ------------------------------------------------------------------------

    def reviewer_for_token(self, presented: str) -> str | None:
        """The reviewer whose token this is; every token is compared (constant time each)."""
        found = None
        for name, token in self.tokens.items():
            if hmac.compare_digest(presented.encode(), token.encode()):
                found = name
        return found

    def _token_fingerprint(self, reviewer: str) -> str:
        # Sessions die with their token: a rotated token invalidates the cookies it signed in.
        return hashlib.sha256(b"session|" + self.tokens.get(reviewer, "").encode()).hexdigest()[:16]

    def _sign(self, purpose: str, payload: str) -> str:
        return hmac.new(self.secret, f"{purpose}|{payload}".encode(), hashlib.sha256).hexdigest()

    def session_cookie(self, reviewer: str, now: float | None = None) -> str:
        payload = _b64(json.dumps({"sub": reviewer, "iat": int(now or time.time()), "tok": self._token_fingerprint(reviewer)}).encode())
        return f"{payload}.{self._sign('session', payload)}"

    def reviewer_for_session(self, cookie: str, now: float | None = None) -> str | None:
        payload, _, signature = cookie.partition(".")
        if not payload or not hmac.compare_digest(signature.encode(), self._sign("session", payload).encode()):
            return None
        try:
            claims = json.loads(_unb64(payload))
            reviewer, issued, fingerprint = str(claims["sub"]), int(claims["iat"]), str(claims["tok"])
        except (ValueError, KeyError, TypeError):
            return None
        if reviewer not in self.tokens or not hmac.compare_digest(fingerprint, self._token_fingerprint(reviewer)):
            return None
        if not 0 <= (now or time.time()) - issued <= SESSION_LIFETIME_S:
            return None
        return reviewer

    def identify(self, headers: Mapping[str, str], cookies: Mapping[str, str]) -> str | None:
        """The authenticated reviewer of a request, or None. Never read from a form field."""
        if self.local_user:
            return self.local_user
        if self.identity_header:
            value = (headers.get(self.identity_header) or "").strip()
            if value and _PROXY_IDENTITY.fullmatch(value):
                return value
        if self.tokens:
            scheme, _, presented = (headers.get("authorization") or "").partition(" ")
            if scheme.lower() == "bearer" and presented.strip():
                return self.reviewer_for_token(presented.strip())  # a wrong bearer token is not a fallback to the cookie
            cookie = cookies.get(SESSION_COOKIE)
            if cookie:
                return self.reviewer_for_session(cookie)
        return None

    # --- requests from the app's own pages ------------------------------------------------

    def csrf_token(self, csrf_cookie: str, reviewer: str) -> str:
        """The form field value that goes with this CSRF cookie and this reviewer."""
        return self._sign("csrf", f"{csrf_cookie}|{reviewer}")

    def csrf_valid(self, csrf_cookie: str | None, reviewer: str, presented: str | None) -> bool:
        if not csrf_cookie or not presented:
            return False
        return hmac.compare_digest(presented.encode(), self.csrf_token(csrf_cookie, reviewer).encode())

    def host_allowed(self, host_header: str | None) -> bool:
        """Local mode answers loopback host names only (no DNS rebinding); with a configured
        origin, only its host; otherwise any (sign-in guards everything)."""
        if not host_header:
            return False
        hostname = urlsplit(f"//{host_header}").hostname or ""
        if self.origin:
            return hostname == (urlsplit(self.origin).hostname or "")
        if self.local_user:
            return hostname in LOOPBACK_NAMES
        return True

    def own_origin(self, scheme: str, host_header: str) -> str:
        return self.origin or f"{scheme}://{host_header}".lower()

    def same_origin(self, headers: Mapping[str, str], own_origin: str) -> tuple[bool, str]:
        """Whether a POST comes from the app's own origin, and why not."""
        origin = headers.get("origin")
        fetch_site = headers.get("sec-fetch-site")
        if origin is not None:
            if origin.lower().rstrip("/") != own_origin.lower().rstrip("/"):
                return False, f"Origin {origin!r} is not this app's origin {own_origin!r}"
        elif fetch_site is None:
            return False, "the request names no Origin and no Sec-Fetch-Site: browsers send one on every POST"
        if fetch_site is not None and fetch_site != "same-origin":
            return False, f"Sec-Fetch-Site is {fetch_site!r}, not 'same-origin'"
        return True, ""


def new_csrf_cookie() -> str:
    return secrets.token_urlsafe(24)
