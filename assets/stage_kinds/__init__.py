"""The stage kinds a pipeline file may name, found by looking in this package.

Each module here defines one or more `StageKind`s in a module-level `KINDS`
tuple; this package imports them all the first time a kind is asked for. A new
stage kind is one new module in this folder: nothing else lists kinds.
"""

from __future__ import annotations

import importlib
import pkgutil

from pydantic import BaseModel

from assets.stages import StageKind, StageSettings
from model_adapters.tasks import TASK_SPECS

_KINDS: dict[str, StageKind] = {}


def validate_stage_kind(kind: StageKind, module: str) -> None:
    """A kind is complete or the load fails, naming it: no silent defaults downstream."""
    where = f"stage kind {kind.name!r} ({module})"
    if not callable(kind.work):
        raise TypeError(f"{where}: work must be a coroutine function")
    if not (isinstance(kind.output, type) and issubclass(kind.output, BaseModel) and "partition_key" in kind.output.model_fields):
        raise TypeError(f"{where}: output must be a manifest model (resources/manifests.py)")
    for slot, manifest in kind.inputs.items():
        if not (isinstance(manifest, type) and issubclass(manifest, BaseModel)):
            raise TypeError(f"{where}: input {slot!r} must name a manifest type")
    if not (isinstance(kind.settings, type) and issubclass(kind.settings, StageSettings)):
        raise TypeError(f"{where}: settings must subclass StageSettings")
    if kind.task is not None and TASK_SPECS.get(kind.task.name) is not kind.task:
        raise ValueError(f"{where}: task {kind.task.name!r} is not a registered task spec (model_adapters/tasks.py)")
    if kind.task is not None and "provenance" not in kind.output.model_fields:
        raise ValueError(f"{where}: a routed kind's manifest needs provenance (the roll-up reads its cost and latency)")
    names = [check.name for check in kind.checks]
    if len(set(names)) != len(names):
        raise ValueError(f"{where}: check names repeat: {names}")


def stage_kinds() -> dict[str, StageKind]:
    """name -> kind, for every module of this package (imported once)."""
    if not _KINDS:
        found: dict[str, StageKind] = {}
        for module_info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
            module = importlib.import_module(f"{__name__}.{module_info.name}")
            kinds = getattr(module, "KINDS", None)
            if not isinstance(kinds, tuple) or not all(isinstance(k, StageKind) for k in kinds):
                raise TypeError(f"{module.__name__} must define KINDS, a tuple of StageKind")
            for kind in kinds:
                validate_stage_kind(kind, module.__name__)
                if kind.name in found:
                    raise ValueError(f"stage kind {kind.name!r} is defined twice ({module.__name__})")
                found[kind.name] = kind
        _KINDS.update(found)
    return dict(_KINDS)


def stage_kind(name: str) -> StageKind:
    kinds = stage_kinds()
    try:
        return kinds[name]
    except KeyError:
        raise KeyError(f"unknown stage kind {name!r}; known kinds: {', '.join(sorted(kinds))}") from None
