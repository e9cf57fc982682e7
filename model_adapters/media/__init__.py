"""Media helpers that need neither torch nor a model: what checks, resources and adapters share.
Importing this package must stay cheap (the Dagster definitions load it)."""
