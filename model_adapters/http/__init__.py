"""HTTP model adapters: providers reached over the network.

One module per API shape:

- `openai_compat`: OpenAI-compatible chat (concept), images and audio/speech
  (covers OpenAI, vLLM, Ollama, GMI Cloud's serving API and others);
- `queue`: submit-then-poll image queues (Replicate, fal, GMI request queue);
- `comfyui`: a ComfyUI server (`/prompt`, `/history`, `/view`, `/upload/image`);
- `elevenlabs`: ElevenLabs text-to-speech with character timestamps;
- `video`: fal's FFmpeg compose (still + voice -> MP4) over fal's queue.

What they share, one concern per module: `base` (the adapter base class and
its lazily created `httpx.AsyncClient`), `options` (provider options),
`errors` (HTTP status -> typed `AdapterError`, Retry-After), `origins` (the
media URL allow-list) and `decoding` (received media: PNG, WAV, data URIs).
Adapters never retry (the router does); polling a queue is not a retry.

Importing this package imports httpx, numpy and Pillow, never torch (PyAV only
when the video adapter is built).
"""

from model_adapters.http.base import HttpAdapter, MediaURLRefused

__all__ = ["HttpAdapter", "MediaURLRefused"]
