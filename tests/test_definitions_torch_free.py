"""Loading the Dagster definitions imports no torch: the code server, the daemon's sensor ticks
and `dagster dev`'s start do not pay for it (about 1.7 s on 2 cores); run workers import it
when a local model first runs."""

import subprocess
import sys

from tests.conftest import PROJECT_ROOT


def test_loading_the_definitions_does_not_import_torch():
    probe = (
        "import sys\n"
        "from orchestration.definitions import build_definitions\n"
        "definitions = build_definitions()\n"
        "assert definitions.resolve_job_def('produce_campaign') is not None\n"
        "print(sorted(m for m in ('torch', 'transformers', 'piper', 'faster_whisper') if m in sys.modules))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", done.stdout
