"""`gpumix serve`: replicas behind an OpenAI-compatible HTTP API."""
