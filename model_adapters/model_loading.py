"""One lock for every transformers / diffusers model load in the process, and the offline switch
every local load runs under.

`from_pretrained` builds a model on the meta device through context managers that patch
torch globally (accelerate's `init_empty_weights`), and transformers' lazy module resolves
names on first touch: two threads loading models at once (the concept writer and the MiniLM
embedder, say) can get each other's meta tensors ("Cannot copy out of meta tensor") or a
half-initialized module. Loads are rare and short next to inference, so they take turns.
Plain Python: no torch import here.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from types import ModuleType
from typing import Any

MODEL_LOAD_LOCK = threading.RLock()


_offline_lock = threading.Lock()
_offline_depth = 0
_offline_saved: tuple[str | None, Any, Any, bool] | None = None


@contextlib.contextmanager
def hub_offline() -> Iterator[None]:
    """``HF_HUB_OFFLINE=1`` and huggingface_hub's offline flag for the duration of a load, and
    transformers' weight-loading progress bars off (a local load is quick; the bars were the
    demo's only noise on stderr).

    huggingface_hub reads the variable once at import, so its constant is set too
    (and diffusers' copy). Nested and concurrent uses are counted: the first one in
    sets, the last one out restores what was there before.
    """
    global _offline_depth, _offline_saved
    import huggingface_hub.constants as hub_constants
    import transformers.utils.logging as transformers_logging

    diffusers_hub: ModuleType | None
    try:
        import diffusers.utils.hub_utils as diffusers_hub
    except ImportError:  # pragma: no cover - diffusers is a dependency of this module's users
        diffusers_hub = None
    with _offline_lock:
        if _offline_depth == 0:
            _offline_saved = (
                os.environ.get("HF_HUB_OFFLINE"),
                hub_constants.HF_HUB_OFFLINE,
                getattr(diffusers_hub, "HF_HUB_OFFLINE", None),
                transformers_logging.is_progress_bar_enabled(),
            )
            transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]  # transformers leaves it unannotated
            os.environ["HF_HUB_OFFLINE"] = "1"
            hub_constants.HF_HUB_OFFLINE = True
            if diffusers_hub is not None and hasattr(diffusers_hub, "HF_HUB_OFFLINE"):
                setattr(diffusers_hub, "HF_HUB_OFFLINE", True)  # noqa: B010 - a module typed as any module
        _offline_depth += 1
    try:
        yield
    finally:
        with _offline_lock:
            _offline_depth -= 1
            if _offline_depth == 0 and _offline_saved is not None:
                env, constant, diffusers_constant, progress_bars = _offline_saved
                if progress_bars:
                    transformers_logging.enable_progress_bar()  # type: ignore[no-untyped-call]  # as above
                if env is None:
                    os.environ.pop("HF_HUB_OFFLINE", None)
                else:
                    os.environ["HF_HUB_OFFLINE"] = env
                hub_constants.HF_HUB_OFFLINE = constant
                if diffusers_hub is not None and hasattr(diffusers_hub, "HF_HUB_OFFLINE"):
                    setattr(diffusers_hub, "HF_HUB_OFFLINE", diffusers_constant)  # noqa: B010 - as above
                _offline_saved = None
