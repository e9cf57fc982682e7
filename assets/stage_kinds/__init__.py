"""The stage kinds a pipeline file may name, found by looking in this package.

Each module here defines one or more `StageKind`s in a module-level `KINDS`
tuple; this package imports them all the first time a kind is asked for. A new
stage kind is one new module in this folder: nothing else lists kinds.
"""

from __future__ import annotations

import importlib
import pkgutil

from assets.stages import StageKind

_KINDS: dict[str, StageKind] = {}


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
