"""The trace-replay benchmark client: an HTTP client of any OpenAI-compatible endpoint (no engine imports)."""
