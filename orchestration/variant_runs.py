"""How requested variants become runs: contiguous spans of a pipeline's partitions, at most
`max_variants_per_run` each.

N requested variants are ceil(N / chunk) runs (more when they are not neighbours in the
partition order): each run pipelines its variants concurrently inside one model step, and
the runs spread over whatever run workers the deployment has. A big campaign is several
runs; small campaigns requested together share one. The brief sensor, the nightly repair
and `make demo` all cut runs here; a backfill launched from the UI is cut the same way by
the assets' `BackfillPolicy.multi_run(chunk)`.
"""

from __future__ import annotations

import dagster as dg

from assets.dagster_api import partition_range_tags


def variant_spans(keys: list[str], ordered_partitions: list[str], max_per_run: int) -> list[list[str]]:
    """`keys` split into runs of neighbours in `ordered_partitions` (a dynamic partition range is
    defined by the order the partitions were added), each at most `max_per_run` long."""
    if max_per_run < 1:
        raise ValueError(f"max_per_run must be at least 1, not {max_per_run}")
    wanted = set(keys)
    spans: list[list[str]] = []
    current: list[str] = []
    for key in ordered_partitions:
        if key in wanted and len(current) < max_per_run:
            current.append(key)
            continue
        if current:
            spans.append(current)
        current = [key] if key in wanted else []
    if current:
        spans.append(current)
    return spans


def span_name(span: list[str]) -> str:
    """How run keys and logs name a span: its one key, or `first..last`."""
    return span[0] if len(span) == 1 else f"{span[0]}..{span[-1]}"


def campaigns_tag(span: list[str]) -> str:
    """The `campaign` run tag of a span: its campaign ids in order, comma-separated."""
    return ",".join(dict.fromkeys(key.split(".", 1)[0] for key in span))


def span_run_request(
    span: list[str], *, job_name: str, run_key: str, tags: dict[str, str], asset_selection: list[dg.AssetKey] | None = None
) -> dg.RunRequest:
    """A run of `job_name` (or of `asset_selection`, some of its assets) over the span (one
    partition key, or a range of them)."""
    if len(span) == 1:
        return dg.RunRequest(run_key=run_key, job_name=job_name, partition_key=span[0], tags=tags, asset_selection=asset_selection)
    return dg.RunRequest(
        run_key=run_key, job_name=job_name, tags={**tags, **partition_range_tags(span[0], span[-1])}, asset_selection=asset_selection
    )


def requested_partition_keys(request: dg.RunRequest, ordered_partitions: list[str]) -> list[str]:
    """The partitions a run request covers (its key, or its range in the partition order)."""
    if request.partition_key is not None:
        return [request.partition_key]
    key_range = request.partition_key_range
    if key_range is None:
        return []
    first, last = ordered_partitions.index(key_range.start), ordered_partitions.index(key_range.end)
    return ordered_partitions[first : last + 1]
