"""The review app: approve or reject variants at approval gates, and watch each campaign as a gallery.

A small Starlette app the project serves beside the Dagster UI (`make ui`,
`studio review serve`, or `python -m orchestration.review_app`); docs/review.md
is the workflow, docs/deploy.md how to put it beyond one machine.

- `build_app(instance=, pipelines=, artifacts=, auth=)`: the ASGI app (app.py);
- `serve(host, port)`: the app over this environment's instance, pipelines and
  storage, run by uvicorn (serve.py);
- `ReviewAuth`: who may use it (auth.py).
"""

from orchestration.review_app.app import build_app
from orchestration.review_app.auth import ReviewAuth, ReviewConfigError
from orchestration.review_app.serve import DEFAULT_HOST, DEFAULT_PORT, serve

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ReviewAuth", "ReviewConfigError", "build_app", "serve"]
