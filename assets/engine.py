"""The model step's engine: a pipeline's stages over many variants, pipelined per variant.

Plain asyncio; no Dagster. It knows stages only as nodes (a name and the
stages feeding its input slots) and does the rest through hooks:

- `make(stage, key, inputs)`: make one variant's output -> (manifest, metadata);
- `reuse(stage, key, inputs)`: the stored output when nothing it depends on
  changed, else None (optional);
- `check(stage, key, manifest, inputs)`: judge the output -> `Judged` (the
  manifest as recorded, each check's outcome, what failed a blocking check,
  and `retry` when the output is rejected and the stage is to be made again:
  the quality-aware fallback, decided by the hooks);
- `load_stored(stage, key)`: the stored output of a stage this run does not make.

Each variant goes through its stages as soon as their inputs are ready, all
variants at once: a variant's later stage never waits for another variant.
What happens is told through `emit`, one event at a time, from the engine's
loop:

- `Made`: a stage's output for a variant (with its check outcomes; `blocked`
  when a blocking check failed: the output is kept and recorded, but nothing
  that reads it is made);
- `Reused`: the stored output stands (nothing changed);
- `Failed`: the stage failed for a variant (`cause`: "error" its own,
  "upstream" a stage it reads failed or was blocked, "waiting" it waits for a
  person: `Waiting`);
- `Settled`: the stage is done for every variant of the run (made, reused or
  failed): its results can be recorded.

One variant's failure never stops another; cancelling `run()` cancels every
stage in flight.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Node:
    name: str
    inputs: Mapping[str, str]  # input slot -> the stage that feeds it


@dataclass(frozen=True)
class Judged:
    manifest: Any
    outcomes: Mapping[str, Any] = field(default_factory=dict)
    blocking_failures: tuple[str, ...] = ()
    retry: bool = False  # the output was rejected and another answer may pass: make the stage again


@dataclass(frozen=True)
class Made:
    stage: str
    key: str
    manifest: Any
    metadata: Mapping[str, Any]
    outcomes: Mapping[str, Any]
    blocked: tuple[str, ...] = ()  # what failed its blocking checks
    seconds: float = 0.0


@dataclass(frozen=True)
class Reused:
    stage: str
    key: str
    manifest: Any


@dataclass(frozen=True)
class Failed:
    stage: str
    key: str
    error: BaseException
    cause: str  # "error" | "upstream" | "waiting"


@dataclass(frozen=True)
class Settled:
    stage: str


Event = Made | Reused | Failed | Settled


class Waiting(Exception):
    """A stage that cannot be made yet for a variant (it waits for a person's verdict): emitted as
    `Failed` with cause "waiting"; what reads it is not made; not a failure of the run."""


class UpstreamFailed(RuntimeError):
    """A stage not run for a variant because a stage it reads failed or was blocked."""


class BlockingCheckFailed(RuntimeError):
    """A stage's output failed one of its blocking checks: what reads it is not made."""


Make = Callable[[str, str, Mapping[str, Any]], Awaitable[tuple[Any, Mapping[str, Any]]]]
Reuse = Callable[[str, str, Mapping[str, Any]], Awaitable[Any | None]]
Check = Callable[[str, str, Any, Mapping[str, Any]], Awaitable[Judged]]
LoadStored = Callable[[str, str], Awaitable[Any]]


async def _no_reuse(stage: str, key: str, inputs: Mapping[str, Any]) -> None:
    return None


async def _no_checks(stage: str, key: str, manifest: Any, inputs: Mapping[str, Any]) -> Judged:
    return Judged(manifest)


class Engine:
    def __init__(
        self,
        nodes: Sequence[Node],
        selected: Sequence[str],
        *,
        make: Make,
        load_stored: LoadStored,
        emit: Callable[[Event], None],
        reuse: Reuse = _no_reuse,
        check: Check = _no_checks,
    ):
        self.nodes = {node.name: node for node in nodes}
        unknown = set(selected) - set(self.nodes)
        if unknown:
            raise ValueError(f"selected stages that are not in the pipeline: {sorted(unknown)}")
        self.order = [node.name for node in nodes if node.name in set(selected)]
        self._make, self._reuse, self._check, self._load_stored, self._emit = make, reuse, check, load_stored, emit
        self._settled: dict[str, set[str]] = {name: set() for name in self.order}
        self._keys: tuple[str, ...] = ()

    async def run(self, keys: Sequence[str]) -> None:
        """Every selected stage for every variant in `keys`; returns when all are settled."""
        self._keys = tuple(dict.fromkeys(keys))
        if not self._keys:
            for name in self.order:
                self._emit(Settled(name))
            return
        await asyncio.gather(*(self._variant(key) for key in self._keys))

    async def _variant(self, key: str) -> None:
        results: dict[str, asyncio.Future] = {}

        def result_of(name: str) -> Awaitable[Any]:
            if name not in self._settled:  # not made in this run: what is stored
                return self._load_stored(name, key)
            if name not in results:
                results[name] = asyncio.ensure_future(self._stage(name, key, result_of))
            return results[name]

        # Every selected stage starts at once; each waits on its own inputs.
        outcomes = await asyncio.gather(*(result_of(name) for name in self.order), return_exceptions=True)
        for outcome in outcomes:  # a variant's failures were emitted; interrupts are nobody's and propagate
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome

    async def _stage(self, name: str, key: str, result_of: Callable[[str], Awaitable[Any]]) -> Any:
        node = self.nodes[name]
        try:
            inputs = {}
            for slot, upstream in node.inputs.items():
                try:
                    inputs[slot] = await result_of(upstream)
                except Exception as exc:
                    raise UpstreamFailed(f"not run: {upstream} failed") from exc
            stored = await self._reuse(name, key, inputs)
            if stored is not None:
                self._emit(Reused(name, key, stored))
                return stored
            loop = asyncio.get_running_loop()
            started = loop.time()
            while True:  # until an output is not sent back (the hooks bound the retries)
                manifest, metadata = await self._make(name, key, inputs)
                judged = await self._check(name, key, manifest, inputs)
                if not judged.retry:
                    break
            made = Made(name, key, judged.manifest, metadata, judged.outcomes, tuple(judged.blocking_failures), loop.time() - started)
            self._emit(made)
            if made.blocked:
                raise BlockingCheckFailed("; ".join(made.blocked))
            return judged.manifest
        except BlockingCheckFailed:
            raise
        except UpstreamFailed as exc:
            self._emit(Failed(name, key, exc, "upstream"))
            raise
        except Waiting as exc:
            self._emit(Failed(name, key, exc, "waiting"))
            raise
        except Exception as exc:
            self._emit(Failed(name, key, exc, "error"))
            raise
        finally:
            self._settle(name, key)

    def _settle(self, name: str, key: str) -> None:
        settled = self._settled[name]
        settled.add(key)
        if len(settled) == len(self._keys):
            self._emit(Settled(name))
