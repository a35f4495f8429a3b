"""The OpenAI-compatible HTTP server: FastAPI routes over one engine stepped by a background thread."""
