"""The inference engine: one process, paged KV cache, continuous batching (`LLM`, `SamplingParams`)."""
