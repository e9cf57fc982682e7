"""One lock for every transformers / diffusers model load in the process.

`from_pretrained` builds a model on the meta device through context managers that patch
torch globally (accelerate's `init_empty_weights`), and transformers' lazy module resolves
names on first touch: two threads loading models at once (the concept writer and the MiniLM
embedder, say) can get each other's meta tensors ("Cannot copy out of meta tensor") or a
half-initialized module. Loads are rare and short next to inference, so they take turns.
Plain Python: no torch import here.
"""

from __future__ import annotations

import threading

MODEL_LOAD_LOCK = threading.RLock()
