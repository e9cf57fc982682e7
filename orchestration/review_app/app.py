"""The review app: campaigns, the review page (approve / reject), the gallery, and the files they show.

Routes:

| method | path | what |
| --- | --- | --- |
| GET | `/` | campaigns, with how many variants wait for a verdict |
| GET | `/campaigns/{campaign}/review` | the variants waiting at an approval gate, with buttons |
| POST | `/campaigns/{campaign}/review` | a verdict (form: `partition_key`, `gate`, `decision`, `comment`, `regenerate`, `csrf`) |
| GET | `/campaigns/{campaign}/gallery` | every variant: video with captions, stills, voice, models, cost, checks, approvals, arms |
| GET | `/campaigns/{campaign}/report` | the route experiments' report: per arm figures, the pairs contact sheet |
| GET | `/files/{campaign}.{variant}/{sha256}.{ext}` | a file a manifest of that variant names (range requests) |
| GET | `/files/{campaign}/{sha256}.{ext}` | a file the campaign's experiment report names (its JSON, contact sheets) |
| GET, POST | `/sign-in`, POST `/sign-out` | the token sign-in form (token mode) |
| GET | `/healthz` | liveness |

Every request first passes `_guard`: the Host must be one the app answers
(auth.py), the reviewer must be known (else 401, or the sign-in page for a
page), and a POST must come from the app's own origin with the CSRF token
of its form (else 403). Only then does a handler run, so a refused request
records nothing. The reviewer recorded is `_guard`'s identity, never a form
field.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import parse_qs, quote, urlencode

import dagster as dg
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Route

from assets.stages import Pipeline
from orchestration.review_app.auth import CSRF_COOKIE, SESSION_COOKIE, SESSION_LIFETIME_S, ReviewAuth, new_csrf_cookie
from orchestration.review_app.catalog import ARMS, Catalog, ReviewGate
from orchestration.review_app.media import FILE_NAME, artifact_response
from orchestration.review_app.pages import environment
from resources.artifact_store import BaseArtifactStore
from resources.brief_schema import SLUG_PATTERN, split_partition_key

log = logging.getLogger("studio.review")

MAX_FORM_BYTES = 64 * 1024
MAX_COMMENT_CHARS = 2000
DECISIONS = ("approved", "rejected")
SECURITY_HEADERS = {
    # No script anywhere; media and images from this origin only; never framed.
    "Content-Security-Policy": (
        "default-src 'none'; img-src 'self'; media-src 'self'; style-src 'unsafe-inline'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}

Handler = Callable[[Request, str], Awaitable[Response]]


class Refused(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def _campaign_id(value: str) -> str:
    if not re.fullmatch(SLUG_PATTERN, value):
        raise Refused(404, "no such campaign")
    return value


async def _form(request: Request) -> dict[str, str]:
    """An urlencoded form (the only kind these pages send), at most MAX_FORM_BYTES; one value per field."""
    content_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/x-www-form-urlencoded":
        raise Refused(415, "forms are posted as application/x-www-form-urlencoded")
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            raise Refused(413, "form too large")
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=20)
    except (UnicodeDecodeError, ValueError):
        raise Refused(400, "unreadable form") from None
    return {name: values[-1] for name, values in fields.items()}


def build_app(
    *,
    instance: dg.DagsterInstance,
    pipelines: Mapping[str, Pipeline],
    artifacts: BaseArtifactStore,
    auth: ReviewAuth,
    manifests: Any = None,
    gate: ReviewGate | None | bool = True,
) -> Starlette:
    """The ASGI app over one instance, its pipelines and its storage.

    `manifests`: the manifest IO manager (default: the filesystem one under
    `$STUDIO_HOME`, the local storage). `gate`: the approval gate's functions
    (default: assets/approvals.py's; tests pass stand-ins; False: none)."""
    if manifests is None:
        from resources.io_manager import JsonManifestIOManager

        manifests = JsonManifestIOManager()
    chosen_gate = ReviewGate.installed(manifests) if gate is True else (gate or None)
    catalog = Catalog(instance=instance, pipelines=pipelines, artifacts=artifacts, manifests=manifests, gate=chosen_gate)
    templates = environment()

    def render(request: Request, name: str, reviewer: str | None, status: int = 200, **context: Any) -> HTMLResponse:
        csrf_cookie = request.state.csrf_cookie
        values = {
            "reviewer": reviewer,
            "auth_mode": auth.mode,
            "csrf": auth.csrf_token(csrf_cookie, reviewer or ""),
            "notice": None,
            "title": name,
            **context,
        }
        # The nav links the report page while the campaign has one (the report page knows already).
        campaign_id = context.get("campaign_id")
        values["has_report"] = bool(context["reports"]) if "reports" in context else bool(campaign_id) and catalog.has_report(campaign_id)
        return HTMLResponse(templates.get_template(name).render(**values), status_code=status)

    def refusal(request: Request, status: int, message: str) -> Response:
        wants_html = "text/html" in (request.headers.get("accept") or "")
        if status == 401 and wants_html and request.method == "GET" and not request.url.path.startswith("/files/"):
            if auth.tokens:
                return RedirectResponse("/sign-in?" + urlencode({"next": request.url.path}), status_code=303)
        if wants_html:
            return render(request, "message", None, status=status, title="Refused", message=message, back="/")
        return PlainTextResponse(message + "\n", status_code=status)

    def guarded(handler: Handler, *, public: bool = False) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            csrf_cookie = request.cookies.get(CSRF_COOKIE)
            request.state.csrf_cookie = csrf_cookie or new_csrf_cookie()
            try:
                if not auth.host_allowed(request.headers.get("host")):
                    raise Refused(400, "this app does not answer for that host name")
                reviewer = auth.identify(request.headers, request.cookies)
                if reviewer is None and not public:
                    raise Refused(401, "sign in first: a review token (bearer header or the sign-in form) or the proxy's identity header")
                if request.method == "POST":
                    own = auth.own_origin(request.url.scheme, request.headers.get("host", ""))
                    same, why = auth.same_origin(request.headers, own)
                    if not same:
                        raise Refused(403, f"cross-site request refused: {why}")
                    request.state.form = await _form(request)
                    if not auth.csrf_valid(csrf_cookie, reviewer or "", request.state.form.get("csrf")):
                        raise Refused(403, "missing or wrong CSRF token: reload the page and try again")
                response = await handler(request, reviewer or "")
            except Refused as refused:
                if request.method == "POST":
                    log.warning("refused %s %s: %s", request.method, request.url.path, refused.message)
                response = refusal(request, refused.status, refused.message)
            for name, value in SECURITY_HEADERS.items():
                response.headers.setdefault(name, value)
            if csrf_cookie is None:
                _set_cookie(request, response, CSRF_COOKIE, request.state.csrf_cookie, max_age=None)
            return response

        return endpoint

    async def index(request: Request, reviewer: str) -> Response:
        return render(request, "index", reviewer, title="Campaigns", campaigns=catalog.campaigns())

    async def review_page(request: Request, reviewer: str) -> Response:
        campaign_id = _campaign_id(request.path_params["campaign_id"])
        notice = None
        recorded = request.query_params.get("recorded")
        if recorded:
            key, _, decision = recorded.rpartition(":")
            if decision in DECISIONS:
                notice = f"{decision.capitalize()}: {key}."
        return render(
            request,
            "review",
            reviewer,
            title=f"Review {campaign_id}",
            campaign_id=campaign_id,
            pending=catalog.pending(campaign_id),
            gate_installed=catalog.gate is not None,
            notice=notice,
        )

    async def record(request: Request, reviewer: str) -> Response:
        campaign_id = _campaign_id(request.path_params["campaign_id"])
        form = request.state.form
        if catalog.gate is None:
            raise Refused(409, "this checkout has no approval gate")
        decision = form.get("decision", "")
        if decision not in DECISIONS:
            raise Refused(400, f"decision must be one of {', '.join(DECISIONS)}")
        partition_key = form.get("partition_key", "")
        try:
            if split_partition_key(partition_key)[0] != campaign_id:
                raise ValueError
        except ValueError:
            raise Refused(400, f"partition_key must be a variant of {campaign_id}") from None
        comment = form.get("comment", "").strip()
        if len(comment) > MAX_COMMENT_CHARS:
            raise Refused(400, f"the comment is longer than {MAX_COMMENT_CHARS} characters")
        regenerate = decision == "rejected" and form.get("regenerate", "") in ("1", "on", "true")
        try:
            catalog.gate.record_verdict(
                instance, pipelines, partition_key, decision, reviewer, comment, gate=form.get("gate") or None, regenerate=regenerate
            )
        except catalog.gate.review_error as exc:
            raise Refused(409, str(exc)) from None
        log.info("%s %s by %s", decision, partition_key, reviewer)
        target = f"/campaigns/{campaign_id}/review?" + urlencode({"recorded": f"{partition_key}:{decision}"})
        return RedirectResponse(target, status_code=303)

    async def gallery(request: Request, reviewer: str) -> Response:
        campaign_id = _campaign_id(request.path_params["campaign_id"])
        variants = catalog.variants(campaign_id)
        by_arm = {arm: [v for v in variants if v.arm == arm] for arm in ARMS}
        arms = [arm for arm in ARMS if by_arm[arm]]
        return render(
            request,
            "gallery",
            reviewer,
            title=f"Gallery {campaign_id}",
            campaign_id=campaign_id,
            variants=variants,
            arms=arms,
            by_arm=by_arm,
            unassigned=[v for v in variants if v.arm not in ARMS],
            experiments=sorted({v.experiment for v in variants if v.experiment}),
        )

    async def report(request: Request, reviewer: str) -> Response:
        campaign_id = _campaign_id(request.path_params["campaign_id"])
        return render(
            request, "report", reviewer, title=f"Report {campaign_id}", campaign_id=campaign_id, reports=catalog.reports(campaign_id)
        )

    async def serve_file(request: Request, reviewer: str) -> Response:
        partition_key, name = request.path_params["partition_key"], request.path_params["name"]
        match = FILE_NAME.fullmatch(name)
        if match is None:
            raise Refused(404, "no such file")
        ref = catalog.served_refs(partition_key).get(match["sha256"])
        if ref is None:
            raise Refused(404, "no such file")
        try:
            return artifact_response(artifacts, ref, request.headers.get("range"), request.headers.get("if-none-match"))
        except FileNotFoundError:
            raise Refused(404, "the file is missing from the artifact store") from None
        except ValueError as exc:  # the store refuses a URI outside it, or bytes that are not the sha256's
            log.warning("refused file %s of %s: %s", name, partition_key, exc)
            raise Refused(404, "no such file in the artifact store") from None

    async def sign_in_page(request: Request, reviewer: str) -> Response:
        next_path = _local_path(request.query_params.get("next"))
        return render(
            request,
            "sign_in",
            reviewer,
            title="Sign in",
            next=next_path,
            token_sign_in=bool(auth.tokens),
            identity_header=auth.identity_header or "",
        )

    async def sign_in(request: Request, reviewer: str) -> Response:
        form = request.state.form
        next_path = _local_path(form.get("next"))
        found = auth.reviewer_for_token(form.get("token", "")) if auth.tokens else None
        if found is None:
            log.warning("sign-in refused: wrong token")
            return render(
                request,
                "sign_in",
                None,
                status=401,
                title="Sign in",
                next=next_path,
                token_sign_in=bool(auth.tokens),
                identity_header=auth.identity_header or "",
                notice="That token is not valid.",
            )
        response = RedirectResponse(next_path, status_code=303)
        _set_cookie(request, response, SESSION_COOKIE, auth.session_cookie(found), max_age=SESSION_LIFETIME_S)
        # A new CSRF cookie for the new identity: one fixed before sign-in is not carried over.
        _set_cookie(request, response, CSRF_COOKIE, new_csrf_cookie(), max_age=None)
        return response

    async def sign_out(request: Request, reviewer: str) -> Response:
        response = RedirectResponse("/sign-in", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict")
        return response

    async def healthz(request: Request, reviewer: str) -> Response:
        return PlainTextResponse("ok\n")

    routes = [
        Route("/", guarded(index), methods=["GET"]),
        Route("/campaigns/{campaign_id}/review", guarded(review_page), methods=["GET"]),
        Route("/campaigns/{campaign_id}/review", guarded(record), methods=["POST"]),
        Route("/campaigns/{campaign_id}/gallery", guarded(gallery), methods=["GET"]),
        Route("/campaigns/{campaign_id}/report", guarded(report), methods=["GET"]),
        Route("/files/{partition_key}/{name}", guarded(serve_file), methods=["GET"]),
        Route("/sign-in", guarded(sign_in_page, public=True), methods=["GET"]),
        Route("/sign-in", guarded(sign_in, public=True), methods=["POST"]),
        Route("/sign-out", guarded(sign_out), methods=["POST"]),
        Route("/healthz", guarded(healthz, public=True), methods=["GET"]),
    ]
    app = Starlette(routes=routes)
    app.state.catalog = catalog
    app.state.auth = auth
    return app


def _local_path(value: str | None) -> str:
    """A redirect target inside this app ("/..."), never another site ("//evil", "https://...")."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return quote(value, safe="/._-~")


def _set_cookie(request: Request, response: Response, name: str, value: str, *, max_age: int | None) -> None:
    response.set_cookie(name, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=request.url.scheme == "https")
