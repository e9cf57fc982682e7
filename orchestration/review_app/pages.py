"""The review app's HTML: Jinja2 templates kept as Python strings (no build step), autoescaped.

No script runs on these pages (the Content-Security-Policy says `script-src
'none'`): forms post, `<video>` and `<audio>` play natively, captions are a
`<track>`.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from jinja2 import DictLoader, Environment, StrictUndefined, select_autoescape

from assets.report import report_rows
from orchestration.review_app.media import file_name

STYLE = """
:root { color-scheme: light; --ink:#1d2430; --muted:#5b6473; --line:#d9dee7; --ok:#1f7a3d; --bad:#b3261e; --wait:#8a5a00; --accent:#2f5bd3; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color:var(--ink); background:#f5f6f8; }
header { display:flex; gap:1.5rem; align-items:center; padding:.7rem 1.5rem; background:#1d2430; color:#fff; }
header a { color:#fff; text-decoration:none; font-weight:600; }
header .who { margin-left:auto; color:#c9d1e0; font-size:.9rem; }
header form { margin:0; }
main { padding:1.2rem 1.5rem 3rem; max-width:1500px; }
h1 { font-size:1.4rem; margin:.2rem 0 1rem; }
h2 { font-size:1.1rem; margin:0 0 .4rem; }
table { border-collapse:collapse; background:#fff; }
th, td { border-bottom:1px solid var(--line); padding:.35rem .6rem; text-align:left; vertical-align:top; font-size:.9rem; }
th { color:var(--muted); font-weight:600; }
.cards { display:grid; grid-template-columns:repeat(auto-fill, minmax(560px, 1fr)); gap:1rem; }
table.stages { width:100%; margin-top:.6rem; }
table.stages tr.has-checks td { border-bottom:none; padding-bottom:0; }
.badge { white-space:nowrap; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:1rem; }
.muted { color:var(--muted); }
.badge { display:inline-block; border-radius:999px; padding:0 .55rem; font-size:.8rem; border:1px solid currentColor; margin:0 .2rem .2rem 0; }
.passed, .approved, .auto { color:var(--ok); } .failed, .rejected { color:var(--bad); } .pending, .planned, .not-run, .regenerating, .not-made { color:var(--wait); }
.arm-control { color:#3a4a6b; } .arm-candidate { color:#7a2fb3; }
.script { white-space:pre-wrap; background:#f7f8fa; padding:.5rem; border-radius:6px; }
video { width:100%; max-height:420px; background:#000; border-radius:6px; }
.stills { display:flex; gap:.5rem; flex-wrap:wrap; margin:.5rem 0; }
.stills img { height:120px; border-radius:4px; border:1px solid var(--line); }
audio { width:100%; }
textarea { width:100%; min-height:3.2rem; font:inherit; }
.actions { display:flex; gap:.6rem; align-items:center; flex-wrap:wrap; margin-top:.5rem; }
button { font:inherit; padding:.35rem .9rem; border-radius:6px; border:1px solid var(--line); background:#fff; cursor:pointer; }
button.approve { background:var(--ok); color:#fff; border-color:var(--ok); }
button.reject { background:var(--bad); color:#fff; border-color:var(--bad); }
.notice { padding:.6rem .9rem; background:#e8f1ff; border:1px solid #b9cff7; border-radius:6px; margin-bottom:1rem; }
.error { background:#fdecea; border-color:#f3b9b3; }
.arms { display:grid; grid-template-columns:1fr 1fr; gap:1.2rem; }
.pair { display:grid; grid-template-columns:1fr 1fr; gap:.5rem; }
.pair img { width:100%; border-radius:4px; }
.report-body { display:grid; grid-template-columns:minmax(420px, 1fr) minmax(300px, 560px); gap:1.2rem; align-items:start; margin-top:.6rem; }
table.figures td, table.figures th { font-variant-numeric:tabular-nums; }
table.figures td { min-width:9rem; }
.report figure { margin:0; }
.report figure img { width:100%; border-radius:4px; border:1px solid var(--line); }
"""

BASE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{% block title %}{{ title }}{% endblock %} · campaign-studio review</title>
<style>{{ style }}</style></head>
<body>
<header><a href="/">campaign-studio review</a>
{% if campaign_id is defined and campaign_id %}<a href="/campaigns/{{ campaign_id }}/review">Review</a><a href="/campaigns/{{ campaign_id }}/gallery">Gallery</a>{% if has_report %}<a href="/campaigns/{{ campaign_id }}/report">Report</a>{% endif %}{% endif %}
{% if reviewer %}<span class="who">signed in as <strong>{{ reviewer }}</strong>{% if auth_mode == "local" %} (this machine's user){% endif %}</span>
{% if auth_mode == "token" %}<form method="post" action="/sign-out"><input type="hidden" name="csrf" value="{{ csrf }}"><button>Sign out</button></form>{% endif %}{% endif %}
</header>
<main>{% block main %}{% endblock %}</main>
</body></html>
"""

INDEX = """{% extends "base" %}
{% block main %}
<h1>Campaigns</h1>
{% if not campaigns %}<p class="muted">No campaigns are registered yet: drop a brief into the briefs folder (the brief sensor registers its variants) or run <code>make demo</code>.</p>
{% else %}
<table><tr><th>campaign</th><th>pipeline</th><th>variants</th><th>waiting for review</th><th></th></tr>
{% for c in campaigns %}<tr>
<td><strong>{{ c.campaign_id }}</strong></td><td>{{ c.pipelines | join(", ") }}</td><td>{{ c.partition_keys | length }}</td>
<td>{% if c.pending is none %}<span class="muted">no approval gate</span>{% elif c.pending %}<span class="badge pending">{{ c.pending }} pending</span>{% else %}none{% endif %}</td>
<td><a href="/campaigns/{{ c.campaign_id }}/review">review</a> · <a href="/campaigns/{{ c.campaign_id }}/gallery">gallery</a>{% if c.has_report %} · <a href="/campaigns/{{ c.campaign_id }}/report">report</a>{% endif %}</td>
</tr>{% endfor %}</table>
{% endif %}
{% endblock %}
"""

REVIEW = """{% extends "base" %}
{% block main %}
<h1>Review: {{ campaign_id }}</h1>
{% if notice %}<div class="notice">{{ notice }}</div>{% endif %}
{% if not gate_installed %}<div class="notice error">This checkout has no approval gate (assets/approvals.py): nothing can be reviewed.</div>
{% elif not pending %}<p class="muted">No variant of {{ campaign_id }} is waiting for a verdict.</p>
{% else %}
<p class="muted">{{ pending | length }} variant(s) waiting. An approval lets the variant go on at once; a rejection stops it, and with "make it again" the stage is made again with a new seed and waits here again.</p>
<div class="cards">
{% for p in pending %}
<section class="card" id="review-{{ p.partition_key }}" data-partition="{{ p.partition_key }}" data-gate="{{ p.gate }}">
<h2>{{ p.partition_key }}</h2>
<div class="muted">{{ p.pipeline }} · gate <strong>{{ p.gate }}</strong> judges <strong>{{ p.subject_stage }}</strong> · waiting since {{ p.waiting_since | when }}</div>
{% set s = p.subject %}
{% if s.headline is defined %}
<p><strong class="headline">{{ s.headline }}</strong></p>
<div class="script">{{ s.script }}</div>
<p><span class="muted">image prompt:</span> <span class="prompt">{{ s.image_prompt }}</span></p>
{% endif %}
{% if s.artifact is defined %}
{% if s.artifact.media_type.startswith("image/") %}<div class="stills"><img alt="{{ p.subject_stage }} of {{ p.partition_key }}" src="{{ file_url(p.partition_key, s.thumbnail or s.artifact) }}"></div>
{% elif s.artifact.media_type.startswith("audio/") %}<audio controls preload="metadata" src="{{ file_url(p.partition_key, s.artifact) }}"></audio>
{% elif s.artifact.media_type.startswith("video/") %}<video controls preload="metadata" src="{{ file_url(p.partition_key, s.artifact) }}"></video>{% endif %}
{% endif %}
{% if s.provenance is defined and s.provenance %}<div class="muted">made by {{ s.provenance.adapter_id }} · {{ s.provenance.model }} · ${{ "%.4f" | format(s.provenance.cost_usd) }}</div>{% endif %}
<form method="post" action="/campaigns/{{ campaign_id }}/review">
<input type="hidden" name="csrf" value="{{ csrf }}">
<input type="hidden" name="partition_key" value="{{ p.partition_key }}">
<input type="hidden" name="gate" value="{{ p.gate }}">
<label class="muted" for="comment-{{ p.partition_key }}">comment</label>
<textarea id="comment-{{ p.partition_key }}" name="comment" maxlength="2000"></textarea>
<div class="actions">
<button class="approve" name="decision" value="approved">Approve</button>
<button class="reject" name="decision" value="rejected">Reject</button>
<label><input type="checkbox" name="regenerate" value="1"> on reject, make {{ p.subject_stage }} again (new seed)</label>
</div>
</form>
</section>
{% endfor %}
</div>
{% endif %}
{% endblock %}
"""

VARIANT = """{% macro variant_card(v) %}
<section class="card variant" id="variant-{{ v.partition_key }}" data-partition="{{ v.partition_key }}"{% if v.arm %} data-arm="{{ v.arm }}"{% endif %}>
<h2>{{ v.variant_id }} {% if v.arm %}<span class="badge arm-{{ v.arm }}">{{ v.experiment }}: {{ v.arm }}</span>{% endif %}</h2>
<div class="muted">{{ v.partition_key }}{% if v.brief %} · {{ v.brief.locale }} · {{ v.brief.aspect_ratio }} · {{ v.brief.duration_s }} s · {{ v.brief.tier }}{% endif %} · ${{ "%.4f" | format(v.cost_usd) }}</div>
{% for gate, state in v.approvals.items() %}<span class="badge {{ state | replace(' ', '-') }}">{{ gate }}: {{ state }}</span>{% endfor %}
{% if v.video %}
<video controls preload="metadata" data-duration="{{ v.brief.duration_s if v.brief else '' }}" src="{{ file_url(v.partition_key, v.video.artifact) }}">
{% if v.captions %}<track kind="captions" label="captions{% if v.brief %} ({{ v.brief.locale }}){% endif %}"{% if v.brief %} srclang="{{ v.brief.locale }}"{% endif %} src="{{ file_url(v.partition_key, v.captions) }}">{% endif %}
</video>
{% else %}<p class="muted">No video yet{% if v.missing %}: {{ v.missing | join(", ") }} not made{% endif %}.</p>{% endif %}
{% if v.stills %}<div class="stills">{% for still in v.stills %}<a href="{{ file_url(v.partition_key, still.image) }}"><img alt="{{ still.stage }}" title="{{ still.stage }}" src="{{ file_url(v.partition_key, still.preview) }}"></a>{% endfor %}</div>{% endif %}
{% for stage, ref in v.audio %}<div class="muted">{{ stage }}</div><audio controls preload="none" src="{{ file_url(v.partition_key, ref) }}"></audio>{% endfor %}
{% for stage, shadow in v.shadows %}
<div><strong>{{ stage }}</strong>: shadow experiment {{ shadow.experiment }}, control beside candidate
<div class="pair">{% for still in v.stills if still.stage == stage %}<figure><img alt="control" src="{{ file_url(v.partition_key, still.preview) }}"><figcaption class="arm-control">control</figcaption></figure>{% endfor %}
{% if shadow.tile %}<figure><img alt="candidate" src="{{ file_url(v.partition_key, shadow.tile) }}"><figcaption class="arm-candidate">candidate{% if shadow.provenance %}: {{ shadow.provenance.adapter_id }} · ${{ "%.4f" | format(shadow.provenance.cost_usd) }}{% endif %}</figcaption></figure>
{% elif shadow.provenance %}<div class="arm-candidate">candidate: {{ shadow.provenance.adapter_id }} · {{ shadow.provenance.model }} · ${{ "%.4f" | format(shadow.provenance.cost_usd) }}</div>{% else %}<div class="muted">the candidate route did not answer</div>{% endif %}
</div></div>
{% endfor %}
<table class="stages"><tr><th>stage</th><th>model</th><th>cost</th><th>latency</th></tr>
{% for s in v.stages %}<tr{% if s.checks %} class="has-checks"{% endif %}><td>{{ s.name }}</td>
<td>{% if s.provider %}{{ s.provider }} · {{ s.model }}{% if s.cache_hit %} <span class="muted">(cached)</span>{% endif %}{% elif s.made %}<span class="muted">no model</span>{% else %}<span class="muted">not made</span>{% endif %}</td>
<td>{% if s.provider %}${{ "%.4f" | format(s.cost_usd) }}{% endif %}</td><td>{% if s.provider %}{{ "%.2f" | format(s.latency_s) }} s{% endif %}</td></tr>
{% if s.checks %}<tr class="checks"><td></td><td colspan="3">{% for c in s.checks %}<span class="badge {{ c.status | replace(' ', '-') }}" title="{{ 'current' if c.current else 'an earlier version' }}">{{ c.name }}: {{ c.status }}</span>{% endfor %}</td></tr>{% endif %}{% endfor %}
</table>
</section>
{% endmacro %}
"""

GALLERY = """{% extends "base" %}
{% from "variant" import variant_card with context %}
{% block main %}
<h1>Gallery: {{ campaign_id }}</h1>
{% if has_report %}<p><a href="/campaigns/{{ campaign_id }}/report">Experiments report</a>: the arms' cost, latency, check pass rates and scores side by side, and their pictures in pairs.</p>{% endif %}
{% if not variants %}<p class="muted">No variant of {{ campaign_id }} is registered.</p>{% endif %}
{% if arms %}
<p class="muted">Route experiment{{ "s" if experiments | length > 1 }} {{ experiments | join(", ") }}: control and candidate variants side by side.</p>
<div class="arms">{% for arm in arms %}<div><h2 class="arm-{{ arm }}">{{ arm }} · {{ by_arm[arm] | length }} variant(s) · ${{ "%.4f" | format(by_arm[arm] | sum(attribute="cost_usd")) }}</h2>
{% for v in by_arm[arm] %}{{ variant_card(v) }}{% endfor %}</div>{% endfor %}</div>
{% if unassigned %}<h2>Not in an experiment</h2><div class="cards">{% for v in unassigned %}{{ variant_card(v) }}{% endfor %}</div>{% endif %}
{% else %}
<div class="cards">{% for v in variants %}{{ variant_card(v) }}{% endfor %}</div>
{% endif %}
{% endblock %}
"""

REPORT = """{% extends "base" %}
{% block main %}
<h1>Experiments report: {{ campaign_id }}</h1>
{% if not reports %}<p class="muted no-report">No experiment report for this campaign: the <code>campaign_report</code> asset reports a campaign once a route experiment (docs/routing.md, "Experiments") ran on its pipeline and every variant is made.</p>{% endif %}
{% for r in reports %}
<p class="muted">{{ r.pipeline }} pipeline{% if r.doc %} · {{ r.doc.product }}{% endif %} · reported {{ r.reported_at | when }}{% if r.doc %} · <a href="{{ file_url(campaign_id, r.file) }}">report JSON</a>{% endif %}</p>
{% if r.error %}<div class="notice error">The stored report could not be read: {{ r.error }}</div>
{% elif not r.doc.experiments %}<p class="muted">Its variants were made under no experiment.</p>{% endif %}
{% for e in (r.doc.experiments if r.doc else []) %}
<section class="card report" id="experiment-{{ e.experiment }}" data-experiment="{{ e.experiment }}" data-stage="{{ e.stage }}">
<h2>{{ e.experiment }} on <code>{{ e.stage }}</code></h2>
<div class="muted">task {{ e.task }} · {% if e.mode == "shadow" %}shadow: every variant, both routes{% else %}share: {{ e.share if e.share is not none else "?" }} to the candidate{% endif %}</div>
<div class="report-body">
<table class="figures"><tr><th></th><th class="arm-control">control</th><th class="arm-candidate">candidate</th></tr>
{% for name, control, candidate in report_rows(e) %}<tr><th>{{ name }}</th><td>{{ control }}</td><td>{{ candidate }}</td></tr>
{% endfor %}<tr><th>which variants</th>{% for arm in (e.control, e.candidate) %}<td class="arm-{{ arm.arm }}">{% for key in arm.partition_keys %}<a href="/campaigns/{{ campaign_id }}/gallery#variant-{{ key }}">{{ key.split(".", 1)[1] }}</a>{{ ", " if not loop.last }}{% else %}none{% endfor %}</td>{% endfor %}</tr>
</table>
{% if e.contact_sheet %}<figure><a href="{{ file_url(campaign_id, e.contact_sheet) }}"><img alt="{{ e.experiment }}: control left, candidate right" src="{{ file_url(campaign_id, e.contact_sheet) }}"></a>
<figcaption class="muted">{% if e.mode == "shadow" %}each variant's two makes{% else %}the arms' variants side by side{% endif %}: control left, candidate right</figcaption></figure>
{% else %}<p class="muted">No pictures on {{ e.stage }}: no contact sheet.</p>{% endif %}
</div>
{% if e.outside %}<p class="muted">In no arm (a route rule took them): {{ e.outside | join(", ") }}</p>{% endif %}
</section>
{% endfor %}
{% endfor %}
{% endblock %}
"""

SIGN_IN = """{% extends "base" %}
{% block main %}
<h1>Sign in</h1>
{% if notice %}<div class="notice error">{{ notice }}</div>{% endif %}
{% if token_sign_in %}
<form method="post" action="/sign-in" class="card" style="max-width:28rem">
<input type="hidden" name="csrf" value="{{ csrf }}"><input type="hidden" name="next" value="{{ next }}">
<label for="token">review token</label><br><input id="token" name="token" type="password" autocomplete="current-password" style="width:100%">
<div class="actions"><button class="approve">Sign in</button></div></form>
{% else %}<p>Sign in through the proxy in front of this app: it passes who you are in the {{ identity_header }} header.</p>{% endif %}
{% endblock %}
"""

MESSAGE = """{% extends "base" %}
{% block main %}<h1>{{ title }}</h1><div class="notice error">{{ message }}</div>{% if back %}<p><a href="{{ back }}">back</a></p>{% endif %}{% endblock %}
"""

TEMPLATES = {
    "base": BASE,
    "index": INDEX,
    "review": REVIEW,
    "variant": VARIANT,
    "gallery": GALLERY,
    "report": REPORT,
    "sign_in": SIGN_IN,
    "message": MESSAGE,
}


def file_url(partition_key: str, ref: Any) -> str:
    return f"/files/{partition_key}/{file_name(ref)}"


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "unknown"
    return dt.datetime.fromtimestamp(timestamp, tz=dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def environment() -> Environment:
    env = Environment(
        loader=DictLoader(TEMPLATES), autoescape=select_autoescape(default=True, default_for_string=True), undefined=StrictUndefined
    )
    env.globals.update(file_url=file_url, report_rows=report_rows, style=STYLE)
    env.filters["when"] = _when
    return env
