"""Router policies, each a small piece with its own tests: retry, cooldown, budget, cache."""
