"""`python -m orchestration.review_app [--host H] [--port P]`: what `make ui` starts beside `dagster dev`."""

import sys

from orchestration.review_app.serve import main

sys.exit(main())
