"""What the Makefile exports for demo, ui, test and bench (its comments say why), for a
benchmark started directly instead of through make: one list, not one per script."""

import os

MAKEFILE_EXPORTS = {"MALLOC_ARENA_MAX": "2", "OMP_WAIT_POLICY": "PASSIVE", "DAGSTER_EVENT_BATCH_SIZE": "1000"}


def export_makefile_defaults() -> None:
    """Each of the Makefile's exports, unless the environment sets it already."""
    for name, value in MAKEFILE_EXPORTS.items():
        os.environ.setdefault(name, value)
