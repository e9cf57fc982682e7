"""CPU seconds the benchmarks account for, read from /proc (Linux): this process, the whole
machine, and the Postgres server's processes (they work for the benchmark but are not its
children). Shared by scale_bench.py, storage_backends.py and video_encode.py."""

from __future__ import annotations

import os
from pathlib import Path


def _tick_s() -> float:
    return 1.0 / os.sysconf("SC_CLK_TCK")


def process_cpu_s() -> float:
    """User and system CPU of this process."""
    times = os.times()
    return times.user + times.system


def machine_busy_s() -> float:
    """CPU every core spent busy since boot (all fields of /proc/stat's cpu line but idle and iowait)."""
    with open("/proc/stat") as stat:
        fields = [float(v) for v in stat.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) * _tick_s()


def postgres_cpu_s() -> float:
    """User and system CPU of the Postgres server: its running processes, and the backends that
    have exited (a connection closed), which the postmaster counts as its children's."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        if "(postgres)" in text:
            fields = text.rsplit(")", 1)[1].split()
            total += sum(float(v) for v in fields[11:15])  # utime, stime, cutime, cstime
    return total * _tick_s()
