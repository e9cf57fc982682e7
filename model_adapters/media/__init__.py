"""Media helpers that need neither torch nor a model: what checks, resources and adapters share.
Importing this package must stay cheap (the Dagster definitions load it).

One home for each helper, never a copy elsewhere: `wav` (the RIFF/WAVE reader, the
16-bit encoder), `aspect` (the aspect-ratio table, frame sizes), `mp4` (boxes),
`probe` (stream durations), `text_layout` (word wrap), `files` (`atomic_write`),
`errors` (`MediaError`), `png` (what a full image decode found, by the bytes' sha256).
tests/test_media_package.py keeps torch and Dagster out."""
